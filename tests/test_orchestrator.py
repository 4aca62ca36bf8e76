"""The turn state machine: spans, endings, safety nets, concurrency and dedup."""

from __future__ import annotations

import asyncio

from bot.brain.base import PlanContext
from bot.contracts import BrainPlan, Channel, MessageEnvelope, PlanStep
from bot.hands.registry import hand
from bot.runtime import open_runtime
from bot.surfaces import Surfaces
from pydantic import BaseModel


def envelope(text, session="s1", user="U_ADA", **kw):
    return MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id=user, session_id=session, text=text, **kw)


class SlowArgs(BaseModel):
    n: int


class SlowOut(BaseModel):
    n: int


class ScriptedPlanner:
    """Returns the plans it is given, in order (a deterministic test model)."""

    name = "scripted"

    def __init__(self, *plans):
        self.plans = list(plans)

    async def plan(self, context: PlanContext) -> BrainPlan:
        plan = self.plans.pop(0)
        if isinstance(plan, Exception):
            raise plan
        return plan


async def test_every_state_writes_a_span(runtime):
    outcome = await runtime.orchestrator.handle(envelope("where is order A-1042?"))
    spans = await runtime.store.traces_for(outcome.correlation_id)
    assert [s["span"] for s in spans] == ["INTAKE", "ROUTE", "PLAN", "TOOL_LOOP", "DRAFT", "GUARD", "RESPOND"]
    assert all(s["duration_ms"] >= 0 for s in spans)
    assert spans[2]["data"]["intent"] == "track_order"
    assert spans[3]["data"]["tools"][0]["tool"] == "get_order_status"


async def test_a_crashing_planner_gives_a_safe_reply_and_a_ticket(settings):
    async with open_runtime(settings, planner=ScriptedPlanner(RuntimeError("boom"))) as rt:
        outcome = await rt.orchestrator.handle(envelope("hello?"))
        assert outcome.state == "FAILED"
        assert "went wrong" in outcome.reply and "Traceback" not in outcome.reply and "boom" not in outcome.reply
        assert rt.shop.count("tickets") == 1
        assert (await rt.store.inbox_get(outcome.inbox_id))["status"] == "answered"


async def test_same_message_twice_gets_one_reply(runtime):
    env = envelope("where is order A-1042?")
    first = await runtime.orchestrator.handle(env)
    second = await runtime.orchestrator.handle(env)
    assert first.reply == second.reply
    history = await runtime.store.history("s1")
    assert [m["role"] for m in history] == ["user", "assistant"]


async def test_at_most_three_tool_calls_and_identical_calls_skipped(settings):
    step = PlanStep(tool="get_order_status", args={"order_id": "A-1042"})
    plan = BrainPlan(intent="track_order", confidence=0.9, steps=[
        step, step, PlanStep(tool="get_order_status", args={"order_id": "A-1001"}),
        PlanStep(tool="get_order_status", args={"order_id": "A-1017"}),
        PlanStep(tool="get_order_status", args={"order_id": "A-1055"})])
    async with open_runtime(settings, planner=ScriptedPlanner(plan)) as rt:
        outcome = await rt.orchestrator.handle(envelope("orders"))
    assert [r.data["order_id"] for r in outcome.results] == ["A-1042", "A-1001", "A-1017"]


async def test_independent_steps_run_concurrently(settings):
    started, release = [], asyncio.Event()

    @hand(side_effect="read", name="slow_lookup", timeout_s=5)
    async def slow_lookup(ctx, args: SlowArgs) -> SlowOut:
        """A lookup that waits until every call of the turn has started."""
        started.append(args.n)
        if len(started) == 2:
            release.set()
        await release.wait()
        return SlowOut(n=args.n)

    plan = BrainPlan(intent="track_order", confidence=0.9, steps=[
        PlanStep(tool="slow_lookup", args={"n": 1}), PlanStep(tool="slow_lookup", args={"n": 2})])
    async with open_runtime(settings, planner=ScriptedPlanner(plan)) as rt:
        rt.registry.register(slow_lookup)
        outcome = await asyncio.wait_for(rt.orchestrator.handle(envelope("x")), 10)
    assert sorted(started) == [1, 2] and all(r.ok for r in outcome.results)


async def test_ungrounded_facts_are_replaced_by_an_offer_of_a_human(settings):
    plan = BrainPlan(intent="track_order", confidence=0.9, final_answer="Order A-9999 arrives 2026-12-01 for 10.00.")
    async with open_runtime(settings, planner=ScriptedPlanner(plan)) as rt:
        outcome = await rt.orchestrator.handle(envelope("where is it"))
    assert "not certain" in outcome.reply and "A-9999" not in outcome.reply
    assert outcome.offer_human


async def test_handoff_then_silence(runtime):
    handoff = await runtime.orchestrator.handle(envelope("I want to talk to a human", session="s-h"))
    assert handoff.state == "HANDED_OFF"
    silent = await runtime.orchestrator.handle(envelope("hello? anyone?", session="s-h"))
    assert silent.state == "SILENT" and silent.reply is None
    history = await runtime.store.history("s-h")
    assert [m["role"] for m in history] == ["user", "assistant", "user"]  # kept, not answered


async def test_queue_workers_answer_every_accepted_message(runtime):
    delivered = []

    class Collect:
        async def deliver(self, env, outcome):
            delivered.append(env.id)

        async def notify(self, session, text, **info):
            pass

    async with runtime.orchestrator.delivering_to(Surfaces(cli=Collect())):
        envs = [envelope(f"where is order A-10{42 + i % 3}?", session=f"s{i}") for i in range(30)]
        async with runtime.orchestrator.running(workers=4):
            for env in envs:
                assert await runtime.orchestrator.accept(env)
            assert not await runtime.orchestrator.accept(envs[0])  # a duplicate is not queued
        assert sorted(delivered) == sorted(e.id for e in envs)
        assert runtime.orchestrator._session_locks == {}  # no per-session state outlives its turns


async def test_shadow_mode_plans_and_records_but_does_not_deliver(tmp_path):
    from bot.config import load_settings

    tenants = tmp_path / "t.yml"
    tenants.write_text('{"tenants": {"T_DEMO": {"shadow_mode": true}}}')
    delivered = []

    class Collect:
        async def deliver(self, env, outcome):
            delivered.append(outcome)

        async def notify(self, session, text, **info):
            pass

    async with open_runtime(load_settings(home=tmp_path / "h", tenants_file=tenants)) as rt:
        async with rt.orchestrator.delivering_to(Surfaces(cli=Collect())):
            outcome = await rt.orchestrator.handle(envelope("where is order A-1042?"))
            assert outcome.shadow and outcome.plan.intent == "track_order"
            assert (await rt.store.inbox_get(outcome.inbox_id))["status"] == "skipped"
    assert delivered == []


async def test_huge_and_binary_messages_are_handled(runtime):
    huge = "where is my order " * 10_000
    outcome = await runtime.orchestrator.handle(envelope(huge))
    assert outcome.reply and len((await runtime.store.inbox_envelope(outcome.inbox_id)).text) <= 40_000
    binary = bytes(range(256)).decode("latin-1")
    outcome = await runtime.orchestrator.handle(envelope(binary, session="s-bin"))
    assert outcome.reply and outcome.state != "FAILED"
