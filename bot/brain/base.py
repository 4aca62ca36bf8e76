"""The Brain's one interface: `async plan(context) -> BrainPlan`.

A planner sees the message, the recent history, the case state, the tenant policy and the
tool specs. It never gets a database handle, an HTTP client or a key: it plans, and the
Hands act.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bot.brain.pii import PiiVault
from bot.config import TenantPolicy
from bot.contracts import BrainPlan, MessageEnvelope
from bot.hands.gate import allowed_tools
from bot.hands.registry import ToolSpec


@dataclass
class PlanContext:
    envelope: MessageEnvelope
    history: list[dict] = field(default_factory=list)  # [{"role", "text"}], oldest first
    case_state: dict = field(default_factory=dict)
    policy: TenantPolicy = field(default_factory=TenantPolicy)
    tools: list[ToolSpec] = field(default_factory=list)
    verified_email: str | None = None
    # Model calls a planner made for this turn: {"model", "tokens_in", "tokens_out",
    # "cost_usd", "latency_ms", "ok", "purpose"}. The orchestrator writes each as a span.
    llm_calls: list[dict] = field(default_factory=list)
    # This turn's PII placeholders (bot/brain/pii.py): the plan, the history and the draft
    # share them, so "[email_1]" means one address all turn. Made on first use.
    pii_vault: PiiVault | None = None

    @property
    def text(self) -> str:
        return self.envelope.text

    def tool_names(self) -> set[str]:
        return {t.name for t in self.tools}

    def allowed_tool_names(self) -> set[str]:
        """The offered tools the tenant's policy allows (bot/hands/gate.py): a planner's own
        check, whoever built the context."""
        return {t.name for t in allowed_tools(self.policy, self.tools)}


class Planner(Protocol):
    name: str

    async def plan(self, context: PlanContext) -> BrainPlan: ...

    # Optional: `async def draft(plan, results, context) -> Draft | None` words the reply from
    # tool results; when absent or returning None, bot.brain.drafting.compose does.


class PlanInvalid(Exception):
    """A plan that names an unknown or forbidden tool, or args that do not validate."""
