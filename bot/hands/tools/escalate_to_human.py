"""escalate_to_human: hand the conversation to a teammate; the bot then stays quiet there."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from bot.hands.context import HandContext
from bot.hands.registry import hand

HANDED_OFF = "handed_off"


class EscalateArgs(BaseModel):
    reason: str = Field(default="customer asked for a human", max_length=500)
    transcript_excerpt: str = Field(default="", max_length=4000)


class Escalation(BaseModel):
    handed_off: bool
    session_id: str
    reason: str


def _key(ctx: HandContext, args: EscalateArgs) -> str:
    # One handoff per triggering message or click: re-running that turn is the same handoff,
    # but a conversation that was handed back can be handed off again later.
    trigger = ctx.inbox_id or ctx.correlation_id
    return hashlib.sha256(f"{ctx.tenant_id}|{ctx.session_id}|escalate|{trigger}".encode()).hexdigest()


@hand(side_effect="write", scopes=("handoff:write",), idempotency_key=_key)
async def escalate_to_human(ctx: HandContext, args: EscalateArgs) -> Escalation:
    """Hand this conversation to a human teammate; the bot stays silent until it is handed back."""
    await ctx.store.session_update(ctx.session_id, status=HANDED_OFF, handoff_reason=args.reason,
                                   handoff_excerpt=args.transcript_excerpt)
    await ctx.store.audit(ctx.tenant_id, ctx.user_id, "handoff", ctx.session_id, {"reason": args.reason})
    return Escalation(handed_off=True, session_id=ctx.session_id, reason=args.reason)


SPEC = escalate_to_human
