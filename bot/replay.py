"""Replay: re-plan stored envelopes with today's planner and diff against what was planned.

Used after changing the classifier, the policy or the model, to see which conversations
would now be routed differently. Nothing is executed and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.brain.base import PlanContext
from bot.contracts import BrainPlan, MessageEnvelope
from bot.hands.gate import allowed_tools
from bot.store.rows import loads

if TYPE_CHECKING:
    from bot.store import AsyncStore
    from bot.store.postgres import PgStore


@dataclass
class ReplayDiff:
    inbox_id: str
    text: str
    before: tuple[str, list[str]]
    after: tuple[str, list[str]]

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _summary(plan: BrainPlan | dict | None) -> tuple[str, list[str]]:
    if plan is None:
        return ("-", [])
    if isinstance(plan, dict):
        return (plan.get("intent", "-"), [s["tool"] for s in plan.get("steps", [])])
    return (plan.intent, [s.tool for s in plan.steps])


async def replay(store: AsyncStore | PgStore, planner, settings, registry, limit: int = 200,
                 tenant_id: str | None = None, downvoted: bool = False) -> list[ReplayDiff]:
    diffs = []
    for row in await store.replayable_turns(limit, tenant_id, downvoted):
        stored = loads(row["outcome"], {}).get("plan")
        if stored is None:
            continue  # a silent turn (handed off): nothing was planned
        envelope = MessageEnvelope.model_validate_json(row["envelope"])
        policy = settings.policy(envelope.tenant_id)
        # The case state is not versioned per turn, so replay plans each message as it would
        # be planned with no pending question: differences on follow-ups are expected.
        context = PlanContext(envelope=envelope, policy=policy,
                              tools=allowed_tools(policy, registry.specs()),
                              verified_email=envelope.metadata.get("verified_email"))
        plan = await planner.plan(context)
        diffs.append(ReplayDiff(row["id"], envelope.text[:80], _summary(stored), _summary(plan)))
    return diffs
