"""Conversations in Slack DMs: a top-level DM message continues the person's open case there
(bot/conversations.py). End to end on the real `deskhand run` process against the Slack
emulator, plus the rules themselves and the surfaces that must stay as they are."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope
from bot.conversations import continues_because, place_dm_message
from bot.slack_ids import message_id, session_id
from bot.store import AsyncStore, Store
from deskhand_process import deskhand_run, run_env
from tests.test_slack_app import (ACME, ALICE, BOB, CAROL, DAVE, ERIN, SUPPORT, answered, approve_click,  # noqa: F401
                                  deskhand, emu, posts, settings)

WINDOW, QUESTION = timedelta(minutes=30), timedelta(hours=24)
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


def case(status: str = "active", minutes_ago: float = 1, **state) -> dict:
    return {"session_id": "s", "status": status, "case_state": state,
            "last_activity": (NOW - timedelta(minutes=minutes_ago)).isoformat()}


def test_which_cases_a_top_level_dm_message_continues():
    def why(c):
        return continues_because(c, NOW, case_window=WINDOW, question_window=QUESTION)

    assert why(None) is None
    assert why(case(minutes_ago=29)) == "open"  # a completed answer, still within the window
    assert why(case(minutes_ago=31)) is None
    assert why(case(minutes_ago=23 * 60, awaiting="order_id")) == "awaiting"
    assert why(case(minutes_ago=25 * 60, awaiting="order_id")) is None
    assert why(case("handed_off", minutes_ago=23 * 60)) == "handed_off"  # stays with the human
    assert why(case("handed_off", minutes_ago=25 * 60)) is None
    assert why(case("closed", minutes_ago=1)) is None  # only an active case is open


def age_conversation(db: Path, session: str, days: int) -> None:
    """Time passing, as the store sees it: every message of a conversation `days` older."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA busy_timeout=5000")
        for table, column in (("messages", "ts"), ("inbox", "received_at")):
            rows = conn.execute(f"SELECT rowid, {column} FROM {table} WHERE session_id = ?", [session]).fetchall()
            assert rows
            for rowid, value in rows:
                older = (datetime.fromisoformat(value) - timedelta(days=days)).isoformat()
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", [older, rowid])


async def test_deskhand_run_continues_a_dm_case_answered_at_the_top_level(emu, settings, tmp_path):
    """"I want a refund", then "A-1120" at the top level of the DM: a refund proposal. In
    another DM, or after the case went quiet for days, "A-1120" is a new conversation."""
    home = tmp_path / "run-home"
    env = run_env(emu, home, DESKHAND_TENANTS_FILE=str(settings.tenants_file))
    async with deskhand_run(env, tmp_path / "run.err"):
        async def ask(user: str, text: str, expect: str, count: int = 1):
            dm = emu.dm(ACME, user, text)
            await emu.push_event(ACME, dm)
            return dm, await emu.wait_for_call("chat.update", answered(dm["channel"], expect), timeout=60,
                                               count=count)

        # Alice answers the bot's question at the top level of her DM.
        first, _ = await ask(ALICE, "I want a refund", "Which order number")
        answer_dm, refund = await ask(ALICE, "A-1120", "refund of 64.00")
        card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT, timeout=60)

        # Dave is asked the same question; Erin's "A-1120" in her own DM is not his answer.
        await ask(DAVE, "I want a refund", "Which order number")
        erin, erin_answer = await ask(ERIN, "A-1120", "A-1120")

        # Carol's case goes quiet for two days: her "A-1120" starts a new conversation.
        carol_first, _ = await ask(CAROL, "I want a refund", "Which order number")
        carol_session = session_id(ACME, carol_first["channel"], carol_first["ts"])
        age_conversation(home / "deskhand.db", carol_session, days=2)
        carol, carol_answer = await ask(CAROL, "A-1120", "A-1120")

    store = Store(home / "deskhand.db")
    try:
        alice_session = session_id(ACME, first["channel"], first["ts"])
        [pending] = store.pending_list(ACME)
        placed = {m: store.inbox_get(message_id(ACME, dm["channel"], dm["ts"]))["session_id"]
                  for m, dm in (("alice", answer_dm), ("erin", erin), ("carol", carol))}
        alice_history = [h["text"] for h in store.history(alice_session)]
    finally:
        store.close()

    assert pending.session_id == alice_session and pending.args["order_id"] == "A-1120"
    assert placed["alice"] == alice_session
    assert alice_history[0] == "I want a refund" and "Which order number" in alice_history[1]
    assert alice_history[2] == "A-1120"  # one conversation: the question, then its answer
    # The answer is under the message that asked for it, where Alice is looking.
    assert [p.params["thread_ts"] for p in posts(emu, answer_dm["channel"], answer_dm["ts"])] == [answer_dm["ts"]]
    assert refund.params["channel"] == answer_dm["channel"] and "A-1120" in card.params["text"]
    assert placed["erin"] == session_id(ACME, erin["channel"], erin["ts"])
    assert placed["carol"] == session_id(ACME, carol["channel"], carol["ts"]) != carol_session
    for other in (erin_answer, carol_answer):
        assert "refund" not in other.params["text"].lower()
    assert len(posts(emu, SUPPORT)) == 1  # one approval card: Alice's


async def test_a_dm_message_into_a_handed_off_case_stays_with_the_human(emu, settings):
    async with deskhand(settings) as (rt, slack):
        asked = emu.dm(ACME, ALICE, "I want to talk to a human")
        await emu.push_event(ACME, asked)
        await emu.wait_for_call("chat.update", answered(asked["channel"], "passed this conversation"))
        nudge = emu.dm(ACME, ALICE, "hello? anyone there?")
        await emu.wait_for_ack(await emu.push_event(ACME, nudge))
        silent = await rt.orchestrator.process(message_id(ACME, nudge["channel"], nudge["ts"]))
        await slack.jobs.idle()
        row = await rt.store.inbox_get(message_id(ACME, nudge["channel"], nudge["ts"]))

    assert silent.state == "SILENT" and silent.reply is None
    assert row["session_id"] == session_id(ACME, asked["channel"], asked["ts"])
    assert posts(emu, nudge["channel"], nudge["ts"]) == []  # not even a placeholder


async def test_a_reply_in_the_thread_of_a_continuing_message_joins_the_case(emu, settings):
    async with deskhand(settings) as (rt, _):
        first = emu.dm(ACME, ALICE, "I want a refund")
        await emu.push_event(ACME, first)
        await emu.wait_for_call("chat.update", answered(first["channel"], "Which order number"))
        answer = emu.dm(ACME, ALICE, "A-1120")
        await emu.push_event(ACME, answer)
        await emu.wait_for_call("chat.update", answered(first["channel"], "refund of 64.00"))
        reply = emu.dm(ACME, ALICE, "and where is it now?", thread_ts=answer["ts"])
        await emu.push_event(ACME, reply)
        where = await emu.wait_for_call("chat.update", answered(first["channel"], "A-1120"), count=2)
        row = await rt.store.inbox_get(message_id(ACME, reply["channel"], reply["ts"]))

    assert row["session_id"] == session_id(ACME, first["channel"], first["ts"])
    assert "refund of" not in where.params["text"]  # the order the case is about, looked up


async def test_an_approval_outcome_is_told_under_the_newest_message_of_the_dm_case(emu, settings):
    async with deskhand(settings) as (rt, _):
        first = emu.dm(ACME, ALICE, "I want a refund")
        await emu.push_event(ACME, first)
        await emu.wait_for_call("chat.update", answered(first["channel"], "Which order number"))
        answer = emu.dm(ACME, ALICE, "A-1120")
        await emu.push_event(ACME, answer)
        card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT)
        await emu.push_interactive(ACME, approve_click(emu, BOB, card))
        told = await emu.wait_for_call("chat.postMessage", lambda c: "Good news" in c.params["text"])

    # Alice last looked under "A-1120", not under the message that opened the case.
    assert (told.params["channel"], told.params["thread_ts"]) == (answer["channel"], answer["ts"])


async def test_email_cli_and_channel_messages_keep_their_own_conversations(tmp_path):
    astore = AsyncStore(Store(tmp_path / "d.db"))
    try:
        config = load_settings(home=tmp_path)
        first = MessageEnvelope(id=message_id(ACME, "C0GENERAL1", "1.000001"), tenant_id=ACME,
                                channel=Channel.slack_channel, user_id=ALICE, text="I want a refund",
                                session_id=session_id(ACME, "C0GENERAL1", "1.000001"),
                                metadata={"slack_channel": "C0GENERAL1", "thread_ts": "1.000001",
                                          "message_ts": "1.000001"})
        await astore.inbox_add(first)
        channel = first.model_copy(update={"id": message_id(ACME, "C0GENERAL1", "1.000002"),
                                           "session_id": session_id(ACME, "C0GENERAL1", "1.000002")})
        mail = MessageEnvelope(tenant_id=ACME, channel=Channel.email, user_id="ada@example.com",
                               session_id="email:abc", text="A-1120")
        cli = MessageEnvelope(tenant_id=ACME, channel=Channel.cli, user_id="cli", session_id="cli:1", text="A-1120")
        for envelope in (channel, mail, cli):
            assert await place_dm_message(astore, config, envelope) is envelope
    finally:
        astore.close()
