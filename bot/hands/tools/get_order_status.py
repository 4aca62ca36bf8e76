"""get_order_status: an order by ID, or the verified customer's orders by email."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from bot.hands.context import HandContext
from bot.hands.errors import InvalidArgs, NotFound, NotVerified
from bot.hands.registry import hand


class GetOrderStatusArgs(BaseModel):
    order_id: str | None = Field(default=None, max_length=64, description="Order ID, e.g. A-1042")
    email: str | None = Field(default=None, max_length=254, description="The customer's email")

    @model_validator(mode="after")
    def one_key(self):
        if not (self.order_id or self.email):
            raise ValueError("give order_id or email")
        return self


class OrderInfo(BaseModel):
    order_id: str
    status: str
    total: float
    currency: str = "USD"
    placed_at: str | None = None
    shipped_at: str | None = None
    eta: str | None = None
    delivered_at: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    items: list[dict] = []
    refunds: list[dict] = []


class OrderStatus(BaseModel):
    found: bool
    order_id: str | None = None
    orders: list[OrderInfo] = []


def _info(order: dict) -> OrderInfo:
    return OrderInfo(**{k: v for k, v in order.items() if k in OrderInfo.model_fields})


@hand(side_effect="read", scopes=("orders:read",), cache_ttl_s=60.0, system="orders")
async def get_order_status(ctx: HandContext, args: GetOrderStatusArgs) -> OrderStatus:
    """Look up an order's status, shipping and refunds by order ID, or the verified customer's orders by email."""
    if args.order_id:
        try:
            order = await ctx.backends.orders.get_order(args.order_id)
        except NotFound:
            return OrderStatus(found=False, order_id=args.order_id)
        # Over email, an order answers only to the address that placed it.
        if ctx.channel == "email" and ctx.verified_email and (
            order.get("email", "").lower() != ctx.verified_email.lower()
        ):
            raise NotVerified(f"order {args.order_id} belongs to another customer")
        return OrderStatus(found=True, order_id=order["order_id"], orders=[_info(order)])
    if not ctx.verified_email or ctx.verified_email.lower() != (args.email or "").lower():
        raise NotVerified("email lookups answer only for the verified sender")
    if not args.email:
        raise InvalidArgs("no email")
    orders = await ctx.backends.orders.orders_for_email(args.email)
    return OrderStatus(found=bool(orders), orders=[_info(o) for o in orders[:5]])


SPEC = get_order_status
