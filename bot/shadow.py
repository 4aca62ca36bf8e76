"""Shadow mode: Deskhand plans and drafts as it would live, and nothing leaves it.

A tenant is in shadow on every surface (`shadow_mode: true`) or on some
(`shadow_channels: [email]`); `is_shadow` is the one answer to "is this turn shadow?".

In a shadow turn:
- reads run (order status, KB search), so the would-be reply is the real one;
- every write step is decided in one place, the Hands' executor: it returns a "would have"
  `ToolResult` (`data["shadow"] is True`) built by `would_be_result`, and the tool never runs:
  no ticket, refund, pending action, handoff or audit entry. A needs-approval call still runs
  its `prepare` (a read), so the would-be refund has its real amount;
- the reply is not delivered (no Slack post, placeholder or card; no email), the conversation
  is left as the turn found it (no case state, no assistant message), and the turn is recorded
  in `shadow_runs` instead (`record_shadow_turn`), which `deskhand report --shadow` lists.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bot.config import TenantPolicy
from bot.contracts import MessageEnvelope, ToolResult
from bot.logs import get_logger
from bot.store import SKIPPED

if TYPE_CHECKING:
    from bot.hands.registry import ToolSpec
    from bot.orchestrator import Orchestrator
    from bot.turn import TurnOutcome

log = get_logger("deskhand.shadow")

# What a would-be write shows where the real one would show an id it created (a ticket id).
SHADOW_ID = "SHADOW"


def surface_of(channel: str) -> str:
    """The surface of an envelope's channel: slack_dm, slack_thread … are all "slack"."""
    return "slack" if channel.startswith("slack") else channel


def is_shadow(policy: TenantPolicy, channel: str) -> bool:
    """Whether a turn of this tenant on this channel (or surface) runs in shadow."""
    return policy.shadow_mode or surface_of(channel) in policy.shadow_channels


def shadow_surfaces(policy: TenantPolicy) -> str:
    """Where a tenant is in shadow, for people: "" (live everywhere), "every channel", or
    the surfaces ("email")."""
    if policy.shadow_mode:
        return "every channel"
    return ", ".join(policy.shadow_channels)


def would_be_result(spec: ToolSpec, args: BaseModel, ctx: Any) -> ToolResult:
    """The result a write would have had, without running it: the args, the fields of the
    tool's output that the args do not give (an id reads SHADOW, a flag True), and
    `shadow: true`, so drafters word the reply as they would the real one."""
    given = args.model_dump(mode="json")
    data: dict[str, Any] = {}
    for name, field in spec.output_model.model_fields.items():
        if name in given:
            data[name] = given[name]
        elif name == "session_id":
            data[name] = ctx.session_id
        elif field.annotation is bool:
            data[name] = True
        elif field.annotation is str:
            data[name] = SHADOW_ID if name.endswith("_id") else "shadow"
    data.update(given)
    would = "propose" if spec.needs_approval and not ctx.approved else "run"
    if would == "propose":
        data["status"] = "pending_approval"  # what a real proposal says (executor `_propose`)
    data.update(shadow=True, would=would, args=given)
    return ToolResult(tool=spec.name, ok=True, data=data)


def would_be_state(outcome: TurnOutcome) -> str:
    """The state the turn would have ended in live (a shadow refund leaves no pending id)."""
    for result in outcome.results:
        data = result.data or {}
        if result.ok and data.get("shadow") and result.tool == "escalate_to_human":
            return "HANDED_OFF"
    if any((r.data or {}).get("shadow") and (r.data or {}).get("would") == "propose" for r in outcome.results):
        return "AWAITING_APPROVAL"
    return outcome.state


async def record_shadow_turn(orchestrator: Orchestrator, env: MessageEnvelope, outcome: TurnOutcome,
                             error: str | None = None) -> TurnOutcome:
    """End a shadow turn: record it in `shadow_runs`, deliver nothing. Idempotent per message
    (a turn re-run after a crash keeps the first record's reply)."""
    plan = outcome.plan
    stored = await orchestrator.store.shadow_record(
        inbox_id=env.id, tenant_id=env.tenant_id, session_id=env.session_id, channel=env.channel.value,
        correlation_id=outcome.correlation_id, text=env.text, intent=plan.intent if plan else None,
        plan=plan.model_dump(mode="json") if plan else None, reply=outcome.reply,
        state=would_be_state(outcome), error=error)
    outcome.reply = stored["reply"]
    await orchestrator.store.inbox_update(env.id, status=SKIPPED, outcome=outcome.to_json(),
                                          error=error)
    log.info("shadow_turn_recorded", state=stored["state"], intent=stored["intent"],
             actions=[a["tool"] for a in json.loads(stored["actions"] or "[]")])
    return outcome


__all__ = ["SHADOW_ID", "is_shadow", "record_shadow_turn", "shadow_surfaces", "surface_of", "would_be_result"]
