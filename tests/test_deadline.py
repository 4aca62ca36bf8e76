"""The turn deadline and degrade mode (bot/deadline.py), in process: the real runtime, a real
HTTP shop whose order route hangs until the test releases it, and a 0.3 s SLA. Nothing sleeps
to synchronise: tests wait on what the customer was sent and on the shop's requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.deadline import DEGRADED, FOLLOW_UP, HOLDING, LATE_ROLE
from bot.runtime import open_runtime
from bot.surfaces import Surfaces

TENANT = "T_HTTP"
WAIT_S = 30.0


class RecordingResponder:
    """The CLI surface, recording what reaches the customer: replies and follow-ups."""

    def __init__(self):
        self.replies: list[str] = []
        self.follow_ups: list[str] = []
        self.notices: list[str] = []
        self._changed = asyncio.Condition()

    async def _add(self, bucket: list[str], text: str) -> None:
        async with self._changed:
            bucket.append(text)
            self._changed.notify_all()

    async def deliver(self, envelope, outcome) -> None:
        await self._add(self.replies, outcome.reply)

    async def follow_up(self, envelope, outcome) -> None:
        await self._add(self.follow_ups, outcome.reply)

    async def notify(self, session, text, **info) -> None:
        await self._add(self.notices, text)

    async def wait_for(self, done: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(done), WAIT_S)


def tenants(tmp_path, shop_url: str, **policy) -> str:
    path = tmp_path / "tenants.yml"
    path.write_text(json.dumps({"tenants": {TENANT: {
        "name": "Shop over HTTP", "turn_sla_s": 0.3,
        "backend": {"base_url": shop_url, "token": "shop-token", "timeout_s": 60}, **policy}}}))
    return str(path)


async def runtime_for(tmp_path, shop, *, tool_timeout_s: float = 60, **policy):
    settings = load_settings(home=tmp_path / "home", tenants_file=tenants(tmp_path, shop.url, **policy),
                             tool_timeout_s=tool_timeout_s, rate_per_second=1000)
    return open_runtime(settings)


def envelope(text: str, n: int = 1) -> MessageEnvelope:
    return MessageEnvelope(id=f"m{n}", tenant_id=TENANT, channel=Channel("cli"), session_id="cli:deadline",
                           user_id="U1", text=text)


def tickets(shop) -> list[dict]:
    return [r["body"] for r in shop.requests if r["route"] == "ticket"]


async def test_past_the_sla_the_kb_answer_goes_first_then_the_order_once_it_answers(tmp_path, shop):
    # search_kb answers at once; get_order_status hangs: the degrade reply quotes the help centre.
    async with await runtime_for(tmp_path, shop, intent_plans={"delivery_period": ["search_kb", "get_order_status"]}) as rt:
        await asyncio.to_thread(rt.kb.reload, TENANT)
        customer = RecordingResponder()
        async with rt.orchestrator.delivering_to(Surfaces(cli=customer)):
            shop.script("order", "hang")
            env = envelope("where is my order A-2001? how long does delivery take?")
            turn = asyncio.create_task(rt.orchestrator.handle(env))

            await customer.wait_for(lambda: customer.replies)
            degrade = customer.replies[0]
            assert degrade.endswith(FOLLOW_UP) and not degrade.startswith(HOLDING)  # what is known: the KB
            stored = await rt.store.message_for(env.id, "assistant")
            assert stored["metadata"]["state"] == DEGRADED and stored["metadata"]["citations"]
            await shop.wait_for_requests(1, "ticket")
            assert not turn.done() and customer.follow_ups == []  # the order lookup is still waiting

            shop.release_hung()
            outcome = await asyncio.wait_for(turn, WAIT_S)
            assert customer.follow_ups == [outcome.reply]
            assert "A-2001 has shipped" in outcome.reply
            assert (await rt.store.message_for(env.id, LATE_ROLE))["text"] == outcome.reply
            assert (await rt.store.inbox_get(env.id))["status"] == "delivered"
            degraded = [t for t in await rt.store.traces_for(outcome.correlation_id) if t["span"] == "DEGRADE"]
            assert len(degraded) == 1 and degraded[0]["data"]["known"] is True  # `deskhand trace` shows it

            again = await rt.orchestrator.process(env.id)  # asked again: nothing is sent twice
            assert again.reply == outcome.reply
            assert customer.replies == [degrade] and len(customer.follow_ups) == 1
            assert len(tickets(shop)) == 1 and tickets(shop)[0]["priority"] == "high"


async def test_when_the_backend_fails_after_the_degrade_reply_the_customer_is_not_told_twice(tmp_path, shop):
    # Each order try times out after 0.6 s, twice: the 0.3 s SLA passes first, then the turn fails.
    async with await runtime_for(tmp_path, shop, tool_timeout_s=0.6) as rt:
        rt.executor.backoff_s = 0.01
        customer = RecordingResponder()
        async with rt.orchestrator.delivering_to(Surfaces(cli=customer)):
            shop.script("order", "hang")
            env = envelope("where is my order A-2001?")
            outcome = await asyncio.wait_for(rt.orchestrator.handle(env), WAIT_S)

            assert customer.replies == [f"{HOLDING} {FOLLOW_UP}"]  # nothing known yet: the holding line
            assert customer.follow_ups == [] and customer.notices == []
            assert outcome.reply is None
            assert await rt.store.message_for(env.id, LATE_ROLE) is None
            assert [r.error_kind for r in outcome.results] == ["timeout"]  # no escalation: the ticket has it
            assert len(tickets(shop)) == 1
            session = await rt.store.session_get(env.session_id)
            assert session["status"] != HANDED_OFF


async def test_a_turn_re_run_after_a_crash_sends_the_late_answer_once_and_no_second_degrade(tmp_path, shop):
    async with await runtime_for(tmp_path, shop) as rt:
        customer = RecordingResponder()
        async with rt.orchestrator.delivering_to(Surfaces(cli=customer)):
            shop.script("order", "hang")
            env = envelope("where is my order A-2001?")
            turn = asyncio.create_task(rt.orchestrator.handle(env))
            await customer.wait_for(lambda: customer.replies)
            await shop.wait_for_requests(1, "ticket")
            turn.cancel()  # the process dies with the order lookup in flight
            with pytest.raises(asyncio.CancelledError):
                await turn
            assert (await rt.store.inbox_get(env.id))["status"] == "processing"  # resumed at the next start

            shop.script("order", "ok")
            outcome = await asyncio.wait_for(rt.orchestrator.process(env.id), WAIT_S)
            assert customer.replies == [f"{HOLDING} {FOLLOW_UP}"]  # the degrade reply is not sent again
            assert customer.follow_ups == [outcome.reply] and "A-2001 has shipped" in outcome.reply
            assert len(shop.tickets) == 1  # the re-run's ticket is the same ticket (one key per message)


class StuckResponder(RecordingResponder):
    """A surface the process dies on while handing it the degrade reply."""

    def __init__(self):
        super().__init__()
        self.stuck = asyncio.Event()

    async def deliver(self, envelope, outcome) -> None:
        self.stuck.set()
        await asyncio.Event().wait()


async def test_a_degrade_reply_stored_but_never_sent_is_sent_by_the_re_run_then_the_late_answer(tmp_path, shop):
    async with await runtime_for(tmp_path, shop) as rt:
        stuck = StuckResponder()
        async with rt.orchestrator.delivering_to(Surfaces(cli=stuck)):
            shop.script("order", "hang")
            env = envelope("where is my order A-2001?")
            turn = asyncio.create_task(rt.orchestrator.handle(env))
            await asyncio.wait_for(stuck.stuck.wait(), WAIT_S)
            turn.cancel()  # the process dies while sending it
            with pytest.raises(asyncio.CancelledError):
                await turn
            assert (await rt.store.message_for(env.id, "assistant"))["metadata"]["state"] == DEGRADED

        customer = RecordingResponder()
        async with rt.orchestrator.delivering_to(Surfaces(cli=customer)):
            shop.script("order", "ok")
            outcome = await asyncio.wait_for(rt.orchestrator.process(env.id), WAIT_S)
            assert customer.replies == [f"{HOLDING} {FOLLOW_UP}"]  # sent now, once
            assert customer.follow_ups == [outcome.reply] and "A-2001 has shipped" in outcome.reply
            assert len(shop.tickets) == 1


async def test_a_turn_within_its_sla_is_answered_as_always(tmp_path, shop):
    async with await runtime_for(tmp_path, shop, turn_sla_s=30) as rt:
        customer = RecordingResponder()
        async with rt.orchestrator.delivering_to(Surfaces(cli=customer)):
            outcome = await rt.orchestrator.handle(envelope("where is my order A-2001?"))
            assert customer.replies == [outcome.reply] and "A-2001 has shipped" in outcome.reply
            assert customer.follow_ups == [] and tickets(shop) == []
            assert (await rt.store.message_for("m1", "assistant"))["metadata"]["state"] == "DONE"


async def test_a_caller_without_a_surface_waits_for_the_whole_turn(tmp_path, shop):
    # `deskhand ask` and the eval read the outcome themselves: no degrade reply, no ticket for it.
    async with await runtime_for(tmp_path, shop, tool_timeout_s=0.6) as rt:
        rt.executor.backoff_s = 0.01
        shop.script("order", "hang")
        outcome = await asyncio.wait_for(rt.orchestrator.handle(envelope("where is my order A-2001?")), WAIT_S)
        assert outcome.reply and FOLLOW_UP not in outcome.reply
        assert (await rt.store.message_for("m1", "assistant"))["metadata"]["state"] != DEGRADED
        assert not [t for t in tickets(shop) if t["subject"].startswith("Follow up")]


async def test_by_email_the_degrade_reply_is_the_reply_and_the_late_answer_one_follow_up_email(tmp_path, shop):
    from tests.test_mail_bridge import Relay, email, mail_settings, outbox_rows, send, serving

    relay = await Relay().start()
    try:
        settings = mail_settings(tmp_path, relay.port, tenants_file=tenants(tmp_path, shop.url),
                                 mail_tenant=TENANT, tool_timeout_s=60)
        shop.script("order", "hang")
        async with serving(settings) as (rt, bridge):
            await send(bridge, email("Where is order A-2001?", sender="Pat <pat@example.com>"), "pat@example.com")
            await relay.wait_for(1)
            degrade = relay.parsed(0)
            assert FOLLOW_UP in degrade.get_body(("plain",)).get_content()
            assert degrade["In-Reply-To"] == "<q1@example.com>"
            await shop.wait_for_requests(1, "ticket")

            shop.release_hung()
            await relay.wait_for(2)
            late = relay.parsed(1)
            assert "A-2001 has shipped" in late.get_body(("plain",)).get_content()
            assert late["In-Reply-To"] == "<q1@example.com>" and late["Message-ID"] != degrade["Message-ID"]
        assert len(relay.messages) == 2 and [r["status"] for r in outbox_rows(settings)] == ["sent", "sent"]
        assert len(shop.tickets) == 1
    finally:
        await relay.stop()


# ------------------------------------------------------------------ the real `deskhand run`


async def test_deskhand_run_replaces_the_placeholder_with_the_degrade_reply_then_follows_up_once(tmp_path, shop):
    from bot.slack import blocks as bk
    from deskhand_process import deskhand_run, run_env
    from slack_emulator import SlackEmulator, Workspace

    acme, alice = "T0ACME0001", "U0ALICE01"
    workspace = Workspace(acme, name="Acme")
    workspace.add_user(alice, "alice", email="ada@example.com")
    tenants_file = tmp_path / "run-tenants.yml"
    tenants_file.write_text(json.dumps({"tenants": {acme: {
        "name": "Acme", "turn_sla_s": 1.0,  # long enough for the placeholder to be posted first
        "backend": {"base_url": shop.url, "token": "shop-token", "timeout_s": 60}}}}))
    shop.script("order", "hang")
    async with SlackEmulator([workspace]) as emu:
        env = run_env(emu, tmp_path / "run-home", DESKHAND_TENANTS_FILE=str(tenants_file),
                      DESKHAND_TOOL_TIMEOUT_S="60")
        async with deskhand_run(env, tmp_path / "run.err"):
            dm = emu.dm(acme, alice, "where is order A-2001?")
            await emu.push_event(acme, dm)
            placeholder = await emu.wait_for_call("chat.postMessage", lambda c: c.params.get("text") == bk.PLACEHOLDER,
                                                   timeout=60)
            degrade = await emu.wait_for_call("chat.update", lambda c: FOLLOW_UP in c.params.get("text", ""),
                                              timeout=60)
            assert degrade.params["ts"] == placeholder.response["ts"]  # the placeholder became the degrade reply
            assert degrade.params["text"].startswith(HOLDING)
            await shop.wait_for_requests(1, "ticket")

            shop.release_hung()
            late = await emu.wait_for_call("chat.postMessage", lambda c: "A-2001 has shipped" in c.params.get("text", ""),
                                           timeout=60)
            assert late.params["thread_ts"] == placeholder.params["thread_ts"]  # in the thread, under it
        # Stopped (the outbox drained): the late answer was posted once and nothing overwrote it.
        assert len([c for c in emu.calls_to("chat.postMessage") if "A-2001 has shipped" in c.params.get("text", "")]) == 1
        assert [c.params["text"] for c in emu.calls_to("chat.update")] == [degrade.params["text"]]
        assert len(shop.tickets) == 1
