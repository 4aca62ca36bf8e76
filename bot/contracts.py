"""Deskhand's data contracts: the shapes that cross every boundary.

Handlers build a `MessageEnvelope`; the Brain returns a `BrainPlan`; the Hands return
`ToolResult`s; approvals are `PendingAction`s; answers cite `Citation`s; every step of a
turn leaves a `TraceEvent`. Everything else in the codebase is built around these.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bot.redact import mask_sensitive
from bot.utf8 import repair_text

# Longest message text we accept. Slack caps a message at 40,000 characters; email bodies
# are cut to this too so one huge message cannot stall the planner.
MAX_TEXT_CHARS = 40_000


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def new_correlation_id(intake_key: str | None = None) -> str:
    """The id that follows one inbound message through its log lines, trace spans and reply.
    Minted at intake; from `intake_key` (a Slack event id, a tenant and Message-ID) when the
    surface has one, so a redelivery of the same event gets the same id."""
    if intake_key is None:
        return uuid.uuid4().hex[:16]
    return hashlib.sha256(intake_key.encode()).hexdigest()[:16]


def _clean_text(text: str) -> str:
    # Masking happens here, in the type, so no code path can build an envelope that holds a
    # card number or a secret: everything downstream (store, logs, planner) sees masked text.
    text = text.replace("\x00", "")
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS]
    return mask_sensitive(text)


MaskedText = Annotated[str, AfterValidator(_clean_text)]


class Channel(StrEnum):
    slack_dm = "slack_dm"
    slack_channel = "slack_channel"
    slack_thread = "slack_thread"
    email = "email"
    cli = "cli"


class Attachment(BaseModel):
    name: str
    content_type: str = "application/octet-stream"
    size: int = 0


class MessageEnvelope(BaseModel):
    """One inbound message, from any surface, already masked."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: new_id("msg"))
    tenant_id: str
    channel: Channel
    user_id: str
    session_id: str
    text: MaskedText
    locale: str = "en"
    attachments: list[Attachment] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    received_at: datetime = Field(default_factory=utcnow)
    # Minted by the surface that received the message; an envelope stored before this field
    # existed gets one when loaded, and the inbox row's `correlation_id` then keeps it.
    correlation_id: str = Field(default_factory=new_correlation_id)

    def intake(self) -> dict[str, Any]:
        """What the message's intake span records: the surface, the surface's own id for the
        message (Slack's event id and retry, the email's Message-ID) and when it arrived."""
        surface = "slack" if self.channel.value.startswith("slack") else self.channel.value
        data: dict[str, Any] = {"surface": surface, "inbox_id": self.id, "received_at": self.received_at.isoformat()}
        for key in ("event_id", "retry_attempt", "message_id"):
            if self.metadata.get(key) is not None:
                data[key] = self.metadata[key]
        return data

    @model_validator(mode="before")
    @classmethod
    def _repair_utf8(cls, data: Any) -> Any:
        # Every door (argv, stdin, files, email, Slack) builds an envelope, so bytes that were
        # not UTF-8 are replaced with U+FFFD here, once, and flagged (bot/utf8.py).
        if isinstance(data, dict) and isinstance(data.get("text"), str):
            text, repaired = repair_text(data["text"])
            if repaired:
                data = {**data, "text": text, "metadata": {**(data.get("metadata") or {}), "invalid_utf8": True}}
        return data


class OnError(StrEnum):
    continue_ = "continue"
    escalate_to_human = "escalate_to_human"
    ask_user = "ask_user"


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    on_error: OnError = OnError.continue_


class Citation(BaseModel):
    doc_id: str
    title: str
    url: str = ""
    section: str = ""
    snippet: str = ""


class BrainPlan(BaseModel):
    """What the Brain decided. It is only a plan: the Hands validate and act."""

    model_config = ConfigDict(extra="forbid")

    intent: str
    confidence: float = Field(ge=0.0, le=1.0)
    steps: list[PlanStep] = Field(default_factory=list)
    final_answer: str | None = None
    citations: list[Citation] = Field(default_factory=list)
    needs_clarification: bool = False
    clarification_question: str | None = None
    # What a clarification asks for ("order_id"), so the next message can fill it.
    awaiting: str | None = None
    # The planner offers a human instead of acting (low confidence after one clarification).
    offer_human: bool = False
    # Unsure of the intent: the plan's search_kb step is answered from only if its best passage
    # is a confident answer (bot/brain/passages.py); otherwise the clarification or offer stands.
    kb_answer_if_confident: bool = False
    planner: str = "rules"


class ToolResult(BaseModel):
    tool: str
    ok: bool
    data: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    # Which system a failure came from ("orders", "tickets", "refunds", "kb"), so its reply
    # names that one (bot/error_replies.py).
    error_system: str | None = None
    cost_ms: float = 0.0
    cached: bool = False
    pending_action_id: str | None = None


class TraceEvent(BaseModel):
    correlation_id: str
    span: str
    data: dict[str, Any] = Field(default_factory=dict)
    ts: datetime = Field(default_factory=utcnow)  # when the span started
    duration_ms: float = 0.0


PendingStatus = Literal["pending", "approved", "rejected", "expired"]


class PendingAction(BaseModel):
    id: str = Field(default_factory=lambda: new_id("pa"))
    tenant_id: str
    session_id: str
    tool: str
    args: dict[str, Any]
    requested_by: str
    status: PendingStatus = "pending"
    decided_by: str | None = None
    decided_at: datetime | None = None
    idempotency_key: str
    created_at: datetime = Field(default_factory=utcnow)
    result: dict[str, Any] | None = None
