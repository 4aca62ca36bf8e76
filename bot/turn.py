"""The data of one turn: its states, what it carries while it runs (`Turn`), and what it
ends with (`TurnOutcome`, stored as JSON on the inbox row so a re-run after a crash delivers
the same reply). The orchestrator (bot/orchestrator.py) runs turns; the deadline and shadow
modules read and write these types too, without reaching into the orchestrator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bot.brain.abuse import AbuseVerdict
from bot.brain.base import PlanContext
from bot.brain.drafting import Draft
from bot.contracts import BrainPlan, Citation, MessageEnvelope, ToolResult
from bot.hands.errors import ClientError, kinds_under
from bot.store.rows import loads

# Tool errors that mean "the customer asked for something that is not there" (no such order,
# too large a refund): explained to the customer, never a reason to hand off or degrade. They
# are the kinds of `ClientError` and its subclasses.
CUSTOMER_FIXABLE = kinds_under(ClientError)


class State(StrEnum):
    ROUTE = "ROUTE"
    PLAN = "PLAN"
    TOOL_LOOP = "TOOL_LOOP"
    DRAFT = "DRAFT"
    GUARD = "GUARD"
    RESPOND = "RESPOND"
    # terminal
    DONE = "DONE"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    HANDED_OFF = "HANDED_OFF"
    SILENT = "SILENT"
    FAILED = "FAILED"


@dataclass
class TurnOutcome:
    inbox_id: str
    session_id: str
    tenant_id: str
    correlation_id: str
    state: str
    reply: str | None
    citations: list[Citation] = field(default_factory=list)
    offer_human: bool = False
    pending_action_id: str | None = None
    plan: BrainPlan | None = None
    results: list[ToolResult] = field(default_factory=list)
    shadow: bool = False

    def as_dict(self) -> dict:
        return {
            "inbox_id": self.inbox_id, "session_id": self.session_id, "state": self.state,
            "reply": self.reply, "citations": [c.model_dump() for c in self.citations],
            "offer_human": self.offer_human, "pending_action_id": self.pending_action_id,
            "correlation_id": self.correlation_id, "shadow": self.shadow,
        }

    def to_json(self) -> str:
        data = self.as_dict()
        data["plan"] = self.plan.model_dump(mode="json") if self.plan else None
        data["results"] = [r.model_dump(mode="json") for r in self.results]
        return json.dumps(data, default=str)

    @classmethod
    def from_row(cls, row: dict) -> "TurnOutcome":
        """The outcome an earlier run stored on its inbox row."""
        data = loads(row["outcome"], {})
        return cls(
            inbox_id=row["id"], session_id=row["session_id"], tenant_id=row["tenant_id"],
            correlation_id=data.get("correlation_id", ""), state=data.get("state", ""),
            reply=data.get("reply"), citations=[Citation(**c) for c in data.get("citations", [])],
            offer_human=data.get("offer_human", False), pending_action_id=data.get("pending_action_id"),
            plan=BrainPlan.model_validate(data["plan"]) if data.get("plan") else None,
            results=[ToolResult.model_validate(r) for r in data.get("results", [])],
            shadow=data.get("shadow", False),
        )


# A surface's way to learn who wrote a message: the verified email address of the
# envelope's user, or None. Slack asks users.info; it runs when the turn starts, not while
# Slack waits for its ack.
IdentityResolver = Callable[[MessageEnvelope], Awaitable[str | None]]


class Responder(Protocol):
    """A surface that delivers replies (Slack, email, the terminal)."""

    async def deliver(self, envelope: MessageEnvelope, outcome: TurnOutcome) -> None: ...

    async def notify(self, session: dict, text: str, **info: Any) -> None: ...


@dataclass
class Turn:
    envelope: MessageEnvelope
    correlation_id: str
    state: State = State.ROUTE
    session: dict = field(default_factory=dict)
    case_state: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    context: PlanContext | None = None
    plan: BrainPlan | None = None
    results: list[ToolResult] = field(default_factory=list)
    draft: Draft | None = None
    error: str | None = None
    # Spans are written together when the turn ends (one transaction instead of six), each
    # (correlation_id, tenant, span, duration_ms, data, started_at ISO).
    spans: list[tuple] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)  # for the turn latency metric and the SLA
    running: list = field(default_factory=list)  # (step, task) of TOOL_LOOP, read by the deadline
    abuse: AbuseVerdict | None = None  # ROUTE's verdict (bot/abuse_turn.py)


def surface(channel: str) -> str:
    return "slack" if channel.startswith("slack") else channel
