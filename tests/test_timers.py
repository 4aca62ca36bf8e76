"""Timers that survive restarts (bot/timers.py): refund requests expire after the tenant's
TTL, and a handoff nobody answered pings the support channel once.

The end-to-end tests run the real `deskhand run` process against the Slack emulator and
wait on what it does (Slack calls, the store, its `timers_run` log lines); the in-process
tests drive one timer run at a time to pin down the races and the crash windows.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from bot.config import TenantPolicy
from bot.slack import blocks as bk
from bot.slack_ids import session_id
from bot.store import Store
from bot.timers import Timers
from deskhand_process import run_env, start_run, stop_run
from test_slack_app import (  # noqa: F401  (emu and settings are fixtures)
    ACME, ALICE, BOB, GENERAL, SUPPORT, TENANTS, answered, approve_click, deskhand, emu, ephemeral_to, posts,
    refund_card, section_texts, settings,
)

def tenants_with(**policy) -> str:
    """The test tenants, with extra policy keys for Acme."""
    extra = "".join(f"    {key}: {value}\n" for key, value in policy.items())
    return TENANTS.replace("    admins: [U0CAROL01]\n", "    admins: [U0CAROL01]\n" + extra)


class DeskhandRun:
    """A `deskhand run` subprocess on its own home, and what its log says."""

    def __init__(self, emu, tmp_path: Path, tenants: Path, **env: str):
        self.home = tmp_path / "run-home"
        self.log = self.home / "deskhand.log"
        self.err = tmp_path / "run.err"
        self.env = run_env(emu, self.home, DESKHAND_TENANTS_FILE=str(tenants), **env)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await start_run(self.env, self.err)

    async def stop(self) -> None:
        assert await stop_run(self.proc) == 0, self.err.read_text()

    def events(self, name: str) -> list[dict]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == name]

    async def wait_for_log(self, name: str, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(events := self.events(name)) < count:
            assert time.monotonic() < deadline, f"{name} logged {len(events)} times, not {count}"
            await asyncio.sleep(0.05)  # polling the log file, not waiting for time to pass
        return events

    def store(self) -> Store:
        return Store(self.home / "deskhand.db")

    def refunds(self) -> int:
        with sqlite3.connect(self.home / "shop.db") as shop:
            return shop.execute("SELECT count(*) FROM refunds").fetchone()[0]


def expired_update(card):
    return lambda c: c.params["ts"] == card.response["ts"] and "expired" in c.params["text"].lower()


async def test_a_refund_past_its_ttl_expires_on_a_restarted_process(emu, settings, tmp_path):
    tenants = tmp_path / "run-tenants.yml"
    tenants.write_text(TENANTS)  # the default TTL: 72 hours
    run = DeskhandRun(emu, tmp_path, tenants, DESKHAND_TIMERS_INTERVAL_S="0.2")
    await run.start()
    try:
        dm, card = await refund_card(emu)
        await emu.wait_for_call("chat.update", answered(dm["channel"], "approve a refund of 64.00"), timeout=60)
        await run.wait_for_log("timers_run", len(run.events("timers_run")) + 1)  # a 72 h TTL expires nothing
    finally:
        await run.stop()
    action_id = approve_click(emu, BOB, card)["actions"][0]["value"]
    store = run.store()
    before, card_meta = store.pending_get(action_id), store.pending_metadata(action_id)
    store.close()
    refunds_before = run.refunds()

    tenants.write_text(tenants_with(pending_ttl_hours=0.0001))  # a third of a second
    await run.start()
    try:
        update = await emu.wait_for_call("chat.update", expired_update(card), timeout=60)
        told = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == dm["channel"]
                                       and "expired" in c.params["text"], timeout=60)
        runs = len(run.events("timers_run"))
        await run.wait_for_log("timers_run", runs + 2)  # two more runs: nothing is sent again
        await emu.push_interactive(ACME, approve_click(emu, BOB, card))
        refused = await ephemeral_to(emu, BOB, "expired before anyone decided")
    finally:
        await run.stop()
    store = run.store()
    after, audit = store.pending_get(action_id), [e["action"] for e in store.audit_entries(action_id)]
    store.close()

    assert before.status == "pending" and card_meta["card_ts"] == card.response["ts"]
    assert after.status == "expired" and after.result is None
    assert bk.APPROVE not in str(update.params["blocks"]) and "Expired on" in section_texts(update.params["blocks"])[-1]
    assert (told.params["thread_ts"], refused["channel"]) == (dm["ts"], SUPPORT)
    assert len([p for p in posts(emu, dm["channel"]) if "expired" in p.params["text"]]) == 1
    assert len([c for c in emu.calls_to("chat.update") if expired_update(card)(c)]) == 1
    assert audit.count("expired") == 1 and "approve_after_expiry" in audit and "executed" not in audit
    assert run.refunds() == refunds_before


async def test_an_unanswered_handoff_pings_the_support_channel_once(emu, settings, tmp_path):
    tenants = tmp_path / "run-tenants.yml"
    tenants.write_text(tenants_with(handoff_sla_minutes=0.01))  # 0.6 s
    run = DeskhandRun(emu, tmp_path, tenants, DESKHAND_TIMERS_INTERVAL_S="0.2")
    await run.start()
    try:
        mention = emu.mention(ACME, ALICE, GENERAL, "I want to talk to a human")
        await emu.push_event(ACME, mention)
        card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT, timeout=60)
        ping = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT
                                       and "Nobody has answered" in str(c.params["blocks"]), timeout=60)
        runs = len(run.events("timers_run"))
        await run.wait_for_log("timers_run", runs + 2)  # two more runs after the ping
    finally:
        await run.stop()
    store = run.store()
    thread = session_id(ACME, GENERAL, mention["ts"])
    session, audit = store.session_get(thread), [e["action"] for e in store.audit_entries(thread)]
    store.close()

    assert ping.params["thread_ts"] == card.response["ts"]  # in the handoff card's thread
    assert "<!subteam^S0APPROVE1>" in ping.params["text"] and GENERAL in section_texts(ping.params["blocks"])[0]
    assert len([p for p in posts(emu, SUPPORT) if "Nobody has answered" in str(p.params["blocks"])]) == 1
    assert audit == ["handoff", "handoff_sla_ping"] and session["metadata"]["handoff_sla_pinged"]


# ------------------------------------------------------------------ one run at a time, in process


async def until(read, check, timeout: float = 10):
    """Poll the store until `check(await read())` holds."""
    deadline = time.monotonic() + timeout
    while not check(value := await read()):
        assert time.monotonic() < deadline, value
        await asyncio.sleep(0.02)
    return value


def policy_for(settings, **changes) -> None:
    settings.tenants[ACME] = settings.tenants[ACME].model_copy(update=changes)


async def test_an_approval_that_wins_the_race_is_not_expired(emu, settings):
    async with deskhand(settings) as (rt, slack):
        dm, card = await refund_card(emu)
        await emu.push_interactive(ACME, approve_click(emu, BOB, card))
        await emu.wait_for_call("chat.postMessage", lambda c: "Good news" in c.params["text"])
        policy_for(settings, pending_ttl_hours=1e-9)
        done = await Timers(rt, slack).run()
        action = await rt.store.pending_get(approve_click(emu, BOB, card)["actions"][0]["value"])

    assert (done.expired, action.status) == (0, "approved")
    assert not [p for p in posts(emu, dm["channel"]) if "expired" in p.params["text"]]


async def test_a_crash_between_expiry_and_notice_tells_the_customer_once_on_the_next_run(emu, settings):
    async with deskhand(settings) as (rt, slack):
        dm, card = await refund_card(emu)
        action_id = approve_click(emu, BOB, card)["actions"][0]["value"]
        await until(lambda: rt.store.pending_metadata(action_id), lambda meta: meta.get("card_ts"))
        # What a crash right after the conditional update leaves: expired, nothing else done.
        assert await rt.store.pending_decide(action_id, "expired", "deskhand")
        first = await Timers(rt, slack).run()
        # And a crash after the notice went out but before it was noted: it is sent again.
        await rt.store.pending_update_metadata(action_id, expiry_notice=False)
        await Timers(rt, slack).run()
        told = await emu.wait_for_call("chat.postMessage", lambda c: "expired" in c.params["text"])

    store = Store(settings.db_path)
    queued = store.db.execute("SELECT count(*) FROM outbox WHERE payload LIKE '%has expired%'").fetchone()[0]
    store.close()
    assert (first.expired, first.settled) == (0, 1)
    assert told.params["thread_ts"] == dm["ts"] and queued == 1
    assert len([p for p in posts(emu, dm["channel"]) if "expired" in p.params["text"]]) == 1


async def test_a_handoff_a_teammate_answered_or_that_was_handed_back_is_not_chased(emu, settings):
    policy_for(settings, handoff_sla_minutes=1e-9)
    async with deskhand(settings) as (rt, slack):
        answered_in_thread = emu.mention(ACME, ALICE, GENERAL, "I want to talk to a human")
        await emu.push_event(ACME, answered_in_thread)
        await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT)
        reply = emu.thread_reply(ACME, BOB, GENERAL, answered_in_thread["ts"], "Hi Alice, Bob here, on it")
        await emu.wait_for_ack(await emu.push_event(ACME, reply))
        waiting = emu.mention(ACME, ALICE, GENERAL, "talk to a human please")
        await emu.push_event(ACME, waiting)
        await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT, count=2)
        handed_back = emu.mention(ACME, ALICE, GENERAL, "I need a human")
        await emu.push_event(ACME, handed_back)
        await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT, count=3)
        await rt.hand_back(session_id(ACME, GENERAL, handed_back["ts"]), BOB)
        done = await Timers(rt, slack).run()
        await emu.wait_for_call("chat.postMessage", lambda c: "Nobody has answered" in c.params["text"]
                                or "Nobody has answered" in str(c.params["blocks"]))
        await Timers(rt, slack).run()  # a second run pings nothing more
    pinged = [p for p in posts(emu, SUPPORT) if "Nobody has answered" in str(p.params["blocks"])]

    assert done.pinged == 1 and len(pinged) == 1
    assert pinged[0].params["thread_ts"] == posts(emu, SUPPORT)[1].response["ts"]  # the one nobody answered


def test_the_timer_settings_are_typed():
    assert TenantPolicy().pending_ttl_hours == 72 and TenantPolicy().handoff_sla_minutes == 30
    assert TenantPolicy(pending_ttl_hours="0.5").pending_ttl_hours == 0.5
