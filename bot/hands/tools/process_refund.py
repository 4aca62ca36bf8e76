"""process_refund: refund an order. Proposed by the bot, executed only after a teammate
approves it (see bot/hands/approvals.py)."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from bot.hands.context import HandContext
from bot.hands.errors import NotFound, NotRefundable
from bot.hands.registry import hand


class ProcessRefundArgs(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)
    amount: float | None = Field(default=None, gt=0, le=100_000,
                                 description="Amount to refund; omitted means the refundable balance")
    reason: str = Field(default="", max_length=500)


class Refund(BaseModel):
    refund_id: str
    order_id: str
    amount: float
    status: str


def _key(ctx: HandContext, args: ProcessRefundArgs) -> str:
    # One refund per conversation and order: a second request in the same thread is the
    # same request, however it is phrased.
    raw = f"{ctx.tenant_id}|{ctx.session_id}|process_refund|{args.order_id.upper()}"
    return hashlib.sha256(raw.encode()).hexdigest()


async def _prepare(ctx: HandContext, args: ProcessRefundArgs) -> ProcessRefundArgs:
    """Check the order exists and fix the amount before anyone is asked to approve it."""
    try:
        order = await ctx.backends.orders.get_order(args.order_id)
    except NotFound as exc:
        raise NotFound(f"no order {args.order_id}") from exc
    refunded = sum(r.get("amount", 0) for r in order.get("refunds", []) if r.get("status") != "rejected")
    refundable = round(order["total"] - refunded, 2)
    if refundable <= 0:
        raise NotRefundable(f"order {order['order_id']} has already been fully refunded")
    amount = args.amount if args.amount is not None else refundable
    if amount > refundable + 1e-9:
        raise NotRefundable(f"at most {refundable:.2f} can be refunded on {order['order_id']}")
    return args.model_copy(update={"order_id": order["order_id"], "amount": round(amount, 2)})


@hand(side_effect="write", needs_approval=True, scopes=("refunds:write",), idempotency_key=_key,
      prepare=_prepare, retries=1, system="refunds", prepare_system="orders")
async def process_refund(ctx: HandContext, args: ProcessRefundArgs) -> Refund:
    """Refund an order to the original payment method. Needs a teammate's approval."""
    row = await ctx.backends.refunds.refund(
        order_id=args.order_id, amount=float(args.amount or 0), reason=args.reason,
        idempotency_key=_key(ctx, args))
    return Refund(refund_id=row["refund_id"], order_id=row["order_id"], amount=row["amount"],
                  status=row.get("status", "issued"))


SPEC = process_refund
