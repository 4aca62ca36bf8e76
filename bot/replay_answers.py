"""`deskhand replay --answers`: re-answer past questions with today's KB and show what changed.

After a KB edit (and `deskhand kb reload`), an operator sees which past answers would now be
different. Each stored turn is planned again, its read-only tools run (search_kb, order
lookups), and the offline drafter and the grounding guard word the reply, as a live turn
would; the old reply and the new one are compared.

Nothing is written, by construction:
- no write tool runs: a write step (ticket, refund, handoff) reuses what the original turn
  recorded for that tool, or else the shadow description (bot/shadow.py) the executor gives
  in a shadow turn, so the reply is worded as before without a ticket, pending action or
  idempotency record being made;
- the hands get `ReadOnlyStore`, which drops the executor's `tool_calls` record and refuses
  anything else, so a tool that tried to write would fail the replay instead of writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.brain.base import PlanContext
from bot.brain.drafting import compose
from bot.contracts import BrainPlan, MessageEnvelope, ToolResult
from bot.guards import guard_reply
from bot.store import AsyncStore, Store
from bot.store.rows import loads


class ReplayWriteRefused(RuntimeError):
    """A tool tried to use the store during a replay (nothing may be written)."""


class ReadOnlyStore(AsyncStore):
    """The store as the hands see it in a replay: the store's own interface, where the
    executor's call log goes nowhere and every other call is refused before it reaches SQLite."""

    def __init__(self, store: AsyncStore):  # not AsyncStore's: nothing ever runs, so no thread
        # Only looked up, never called (`_run` refuses first); a PgStore has no sync side.
        self.sync = getattr(store, "sync", Store)
        self._closed = False

    async def _run(self, call: Any) -> Any:
        name = getattr(getattr(call, "func", call), "__name__", "?")
        raise ReplayWriteRefused(f"replay never writes: a tool asked for store.{name}")

    async def record_tool_call(self, **_: Any) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass
class AnswerDiff:
    inbox_id: str
    tenant_id: str
    received_at: str
    correlation_id: str
    question: str
    intent: str
    before: str
    after: str
    sources_before: list[str] = field(default_factory=list)
    sources_after: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return " ".join(self.before.split()) != " ".join(self.after.split()) or \
            self.sources_before != self.sources_after




async def _results(rt, plan: BrainPlan, envelope: MessageEnvelope, recorded: list[ToolResult]) -> list[ToolResult]:
    ctx = rt.hand_context(envelope.tenant_id, envelope.session_id, envelope.user_id, envelope.channel.value,
                          f"replay-{envelope.id}"[:64], verified_email=envelope.metadata.get("verified_email"),
                          inbox_id=envelope.id, shadow=True, store=ReadOnlyStore(rt.store))
    earlier = list(recorded)
    results = []
    for step in plan.steps[: rt.settings.max_tool_calls]:
        spec = rt.registry.get(step.tool)
        if spec is not None and (spec.side_effect == "write" or spec.needs_approval):
            same = next((r for r in earlier if r.tool == step.tool), None)
            if same is not None:  # what the original turn's write gave, so the wording matches
                earlier.remove(same)
                results.append(same)
                continue
        results.append(await rt.executor.run(step, ctx))  # shadow: a write is only described
    return results


async def replay_answers(rt, *, limit: int = 200, tenant_id: str | None = None,
                         downvoted: bool = False) -> list[AnswerDiff]:
    """Re-answer stored turns that had a reply; one `AnswerDiff` each, oldest first."""
    planner = rt.orchestrator.planner
    diffs = []
    for row in await rt.store.replayable_turns(limit, tenant_id, downvoted):
        stored = loads(row["outcome"], {})
        if stored.get("reply") is None or stored.get("plan") is None:
            continue  # a silent turn (handed off) or a failed one: no answer to compare
        envelope = MessageEnvelope.model_validate_json(row["envelope"])
        policy = rt.settings.policy(envelope.tenant_id)
        # As in `deskhand replay`: no history or case state (they are not versioned per turn),
        # so a follow-up may be planned differently; its old reply is still shown.
        context = PlanContext(envelope=envelope, policy=policy,
                              tools=rt.gate.tools(envelope.tenant_id),
                              verified_email=envelope.metadata.get("verified_email"))
        plan = await planner.plan(context)
        recorded = [ToolResult.model_validate(r) for r in stored.get("results", [])]
        results = await _results(rt, plan, envelope, recorded)
        draft, _ = guard_reply(compose(plan, results, kb_floor=rt.settings.kb_relevance_floor), results)
        diffs.append(AnswerDiff(
            inbox_id=row["id"], tenant_id=row["tenant_id"], received_at=row["received_at"] or "",
            correlation_id=row.get("correlation_id") or stored.get("correlation_id") or "",
            question=envelope.text, intent=plan.intent, before=stored["reply"], after=draft.text,
            sources_before=[c.get("doc_id", "") for c in stored.get("citations", [])],
            sources_after=[c.doc_id for c in draft.citations]))
    return diffs


def render_answer_diff(diff: AnswerDiff) -> list[str]:
    lines = [f"CHANGED {diff.received_at[:19]}  {diff.tenant_id}  {diff.inbox_id}  [{diff.intent}]  "
             f"trace {diff.correlation_id}",
             f"  asked: {' '.join(diff.question.split())[:200]}",
             f"  - {' '.join(diff.before.split())}",
             f"  + {' '.join(diff.after.split())}"]
    if diff.sources_before != diff.sources_after:
        lines.append(f"  sources: {', '.join(diff.sources_before) or '-'} -> {', '.join(diff.sources_after) or '-'}")
    return lines


async def print_answer_replay(settings, *, limit: int, tenant_id: str | None, downvoted: bool,
                              show_all: bool, echo) -> list[AnswerDiff]:
    from bot.runtime import open_runtime

    async with open_runtime(settings) as rt:
        diffs = await replay_answers(rt, limit=limit, tenant_id=tenant_id, downvoted=downvoted)
    for d in diffs:
        if d.changed:
            for line in render_answer_diff(d):
                echo(line)
        elif show_all:
            echo(f"same    {d.received_at[:19]}  {d.tenant_id}  {d.inbox_id}  [{d.intent}]  | "
                 f"{' '.join(d.question.split())[:80]}")
    echo(f"answers replayed: {len(diffs)}, changed: {sum(d.changed for d in diffs)}")
    return diffs
