"""create_ticket: open a helpdesk ticket, once per session and subject."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, Field

from bot.hands.context import HandContext
from bot.hands.registry import hand


class CreateTicketArgs(BaseModel):
    email: str = Field(default="", max_length=254, description="Customer email, if known")
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=10_000)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class Ticket(BaseModel):
    ticket_id: str
    status: str
    subject: str


def _key(ctx: HandContext, args: CreateTicketArgs) -> str:
    raw = f"{ctx.tenant_id}|{ctx.session_id}|create_ticket|{args.subject.strip().lower()}"
    return hashlib.sha256(raw.encode()).hexdigest()


@hand(side_effect="write", scopes=("tickets:write",), idempotency_key=_key, system="tickets")
async def create_ticket(ctx: HandContext, args: CreateTicketArgs) -> Ticket:
    """Open a support ticket for a teammate to follow up (idempotent per conversation and subject)."""
    row = await ctx.backends.tickets.create_ticket(
        email=args.email or ctx.verified_email or ctx.user_id, subject=args.subject,
        body=args.body, priority=args.priority, idempotency_key=_key(ctx, args))
    return Ticket(ticket_id=row["ticket_id"], status=row.get("status", "open"), subject=args.subject)


SPEC = create_ticket
