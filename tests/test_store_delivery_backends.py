"""The delivery tables, dead letters, shadow turns and replay query on both stores: the SQLite
`Store` (through `AsyncStore`) and `PgStore` give the same answers, and on PostgreSQL two
workers claiming the outbox at once are never handed the same row."""

from __future__ import annotations

import asyncio

import pytest

from bot.contracts import Channel, MessageEnvelope
from bot.slack_ids import placeholder_key
from bot.store.dead_letters import DEAD, DROPPED, RETRIED


@pytest.fixture
def store(any_store):  # tests/conftest.py: SQLite, then PostgreSQL
    return any_store


def envelope(text: str = "where is A-1042?", session: str = "cli:s1", **fields) -> MessageEnvelope:
    return MessageEnvelope(tenant_id="T1", channel=Channel.cli, user_id="U1", session_id=session, text=text,
                           **fields)


async def test_email_threads_keep_a_message_id_and_move_a_subject_key(store):
    await store.email_thread_record(["<a@x>", "subject:hi", ""], "s1", "T1")
    await store.email_thread_record(["<a@x>", "subject:hi", "<b@x>"], "s2", "T1")
    assert await store.email_thread_lookup(["<a@x>", "subject:hi", "<b@x>", "<none@x>"], "T1") == {
        "<a@x>": "s1", "subject:hi": "s2", "<b@x>": "s2"}
    assert await store.email_thread_lookup(["<a@x>"], "T2") == {}
    assert await store.email_thread_lookup([], "T1") == {}
    assert await store.email_threads_for("s1") == ["<a@x>"]
    assert sorted(await store.email_threads_for("s2")) == ["<b@x>", "subject:hi"]


async def test_the_mirror_keeps_the_first_thread_and_finds_its_session(store):
    await store.session_get_or_create(envelope(session="slack:T1:C1:1.0"))
    await store.mirror_record("email:s1", "T1", "C9", "5.0")
    await store.mirror_record("email:s1", "T1", "C9", "6.0")  # a second thread: the first stays
    await store.mirror_record("email:s2", "T1", "C9", "5.0")  # the same thread again: ignored
    assert (await store.mirror_thread("email:s1"))["thread_ts"] == "5.0"
    assert await store.mirror_thread("email:s2") is None
    assert await store.mirror_session("T1", "C9", "5.0") == "email:s1"
    assert await store.mirror_session("T1", "C9", "6.0") is None
    assert await store.thread_owner("slack:T1:C1:1.0", "T1", "C9", "5.0") == (True, "email:s1")
    assert await store.thread_owner("slack:T1:C1:2.0", "T1", "C9", "7.0") == (False, None)


async def test_the_outbox_queues_once_per_key_and_tracks_each_attempt(store):
    first = await store.outbox_add("T1", "slack", "s1", "i1", {"text": "hi"}, key="reply:i1")
    again = await store.outbox_add("T1", "slack", "s1", "i1", {"text": "hi"}, key="reply:i1")
    later = await store.outbox_add("T1", "slack", "s1", "i2", {"text": "later"}, due_at="2999-01-01T00:00:00+00:00")
    email = await store.outbox_add("T1", "email", "s1", "i3", {"raw": "eA=="})
    assert again == first
    due = await store.outbox_due("slack")
    assert [r["id"] for r in due] == [first] and due[0]["payload"] == {"text": "hi", "key": "reply:i1"}

    await store.outbox_mark_failed(first, "slack:ratelimited", "2000-01-01T00:00:00+00:00")
    row = (await store.outbox_rows(channel="slack"))[0]
    assert (row["attempts"], row["last_error"], row["lease_until"], row["leased_by"]) == (
        1, "slack:ratelimited", None, None)
    assert [r["id"] for r in await store.outbox_due("slack")] == [first]  # failed, due again: claimable
    await store.outbox_mark_sent(first, "2024-05-01T00:00:00+00:00")
    assert [r["id"] for r in await store.outbox_rows(status="sent")] == [first]
    assert await store.outbox_due("slack") == []

    assert await store.outbox_due_now("slack") == 1  # `later`, made due now
    assert [r["id"] for r in await store.outbox_due("slack")] == [later]
    assert not await store.outbox_requeue(first)  # sent: stays sent
    assert await store.outbox_requeue(email)
    assert [r["channel"] for r in await store.outbox_rows()] == ["slack", "slack", "email"]


async def test_an_outbox_row_given_up_is_a_dead_letter_until_retried_or_dropped(store):
    row_id = await store.outbox_add("T1", "email", "s1", "i1", {"raw": "eA=="})
    await store.outbox_due("email")
    await store.outbox_mark_failed(row_id, "550 no such user", None)
    [dead] = await store.outbox_dead_letters()
    assert (dead["ref"], dead["dead_status"], dead["attempts"], dead["lease_until"]) == (
        f"outbox:{row_id}", DEAD, 1, None)
    assert (await store.outbox_dead_letter_get(row_id))["payload"] == {"raw": "eA=="}
    assert await store.outbox_dead_letter_retry(row_id, "ops") == DEAD
    assert await store.outbox_dead_letter_retry(row_id, "ops") == "pending"
    assert [r["id"] for r in await store.outbox_due("email")] == [row_id]
    await store.outbox_mark_failed(row_id, "550 no such user", None)
    assert await store.outbox_dead_letter_drop(row_id, "ops", "bad address") == DEAD
    assert await store.outbox_dead_letters() == []
    assert [r["dead_status"] for r in await store.outbox_dead_letters(DROPPED)] == [DROPPED]
    assert await store.outbox_dead_letter_get(999) is None and await store.outbox_dead_letter_drop(999, "ops") is None
    actions = [e["action"] for e in await store.audit_entries(f"outbox:{row_id}")]
    assert actions == ["outbox_dead_letter", "dlq_retry", "outbox_dead_letter", "dlq_drop"]


async def test_a_dead_letter_round_trip(store):
    env = envelope()
    assert await store.inbox_add(env)
    await store.session_get_or_create(env)
    await store.inbox_start(env.id, env.correlation_id)
    await store.add_message(env.session_id, "T1", "assistant", "Sorry, something went wrong.", env.id)
    await store.session_update(env.session_id, **{placeholder_key(env.id): "9.9", "other": "kept"})
    inbox = await store.inbox_get(env.id)

    assert await store.dead_letter_add(inbox, "killed the worker")
    assert not await store.dead_letter_add(inbox, "killed the worker")  # already parked
    letter = await store.dead_letter_get(env.id)
    assert (letter["status"], letter["attempts"], letter["inbox_status"]) == (DEAD, 1, "processing")
    assert [d["inbox_id"] for d in await store.dead_letters()] == [env.id]
    assert await store.dead_letter_count() == 1 and await store.dead_letter_count("T2") == 0

    assert await store.dead_letter_retry(env.id, "ops") == DEAD
    assert await store.dead_letter_retry(env.id, "ops") == RETRIED
    assert (await store.inbox_get(env.id))["status"] == "received"
    assert await store.message_for(env.id) is None  # the safe reply no longer counts as the answer
    assert (await store.session_get(env.session_id))["metadata"] == {"other": "kept"}
    assert await store.dead_letter_count() == 0 and await store.dead_letters() == []

    assert await store.dead_letter_add(inbox, "poison again")  # retried, then poison again: parked again
    assert await store.dead_letter_drop(env.id, "ops", "spam") == DEAD
    assert await store.dead_letter_drop(env.id, "ops") == DROPPED
    assert not await store.dead_letter_add(inbox, "once more")  # dropped stays dropped
    assert await store.dead_letter_get("nope") is None and await store.dead_letter_retry("nope", "ops") is None
    assert [d["retries"] for d in await store.dead_letters(None, "T1")] == [1]
    actions = [e["action"] for e in await store.audit_entries(env.id)]
    assert actions == ["dead_letter", "dlq_retry", "dead_letter", "dlq_drop"]


async def test_a_shadow_turn_is_recorded_once_with_its_would_be_actions(store):
    await store.record_tool_call(correlation_id="c1", tenant_id="T1", session_id="s1", tool="get_order_status",
                                 args={"order_id": "A-1"}, ok=True, result={"status": "shipped"})
    await store.record_tool_call(correlation_id="c1", tenant_id="T1", session_id="s1", tool="process_refund",
                                 args={"order_id": "A-1"}, ok=True,
                                 result={"shadow": True, "would": "ask_approval", "args": {"order_id": "A-1"}})
    fields = dict(tenant_id="T1", session_id="s1", channel="slack", correlation_id="c1", text="refund A-1",
                  intent="refund", plan={"steps": 2}, reply="Done.", state="answered")
    row = await store.shadow_record(inbox_id="i1", **fields)
    again = await store.shadow_record(inbox_id="i1", **{**fields, "reply": "changed"})
    assert again == row and row["reply"] == "Done."
    await store.shadow_record(inbox_id="i2", **{**fields, "tenant_id": "T2", "correlation_id": "none"})
    [run] = await store.shadow_runs(tenant_id="T1")
    assert run["actions"] == [{"tool": "process_refund", "would": "ask_approval", "args": {"order_id": "A-1"}}]
    assert run["reads"] == [{"tool": "get_order_status", "ok": True, "error_kind": None}]
    assert run["plan"] == {"steps": 2}
    assert [r["inbox_id"] for r in await store.shadow_runs()] == ["i1", "i2"]
    assert await store.shadow_runs(since="2999-01-01") == []


async def test_replayable_turns_are_the_latest_answered_oldest_first(store):
    envs = [envelope(f"question {n}", session=f"cli:s{n}") for n in range(4)]
    for env in envs:
        await store.inbox_add(env)
    for env in envs[:3]:
        await store.inbox_update(env.id, outcome='{"state": "answered"}')
    await store.add_feedback("T1", envs[0].session_id, envs[0].id, "U1", "down")
    await store.add_feedback("T1", envs[1].session_id, envs[1].id, "U1", "down")
    await store.add_feedback("T1", envs[1].session_id, envs[1].id, "U1", "up")  # changed their mind
    assert [r["id"] for r in await store.replayable_turns(2)] == [envs[1].id, envs[2].id]
    assert [r["id"] for r in await store.replayable_turns(10, downvoted=True)] == [envs[0].id]
    assert await store.replayable_turns(10, tenant_id="T2") == []
    assert set((await store.replayable_turns(1))[0]) == set(await store.inbox_get(envs[2].id))


# -- PostgreSQL: several workers share the outbox ---------------------------------------------
@pytest.fixture
async def two_workers(pg_url):
    from bot.store.postgres import PgStore

    async with PgStore(pg_url) as first, PgStore(pg_url) as second:
        yield first, second


async def test_two_workers_claiming_at_once_never_get_the_same_row(two_workers):
    first, second = two_workers
    ids = [await first.outbox_add("T1", "slack", "s1", f"i{n}", {"n": n}) for n in range(60)]
    claimed: list[list[int]] = []
    for _ in range(len(ids)):  # rows left unclaimed would be handed out again and again: stop
        rounds = await asyncio.gather(*(worker.outbox_due("slack", limit=7) for worker in (first, second, first,
                                                                                            second)))
        if not any(rounds):
            break
        claimed += [[r["id"] for r in rows] for rows in rounds]
    every = [row_id for rows in claimed for row_id in rows]
    assert sorted(every) == ids  # each row handed out exactly once
    leased_by = {r["leased_by"] for r in await first.outbox_rows()}
    assert leased_by == {first.outbox_worker, second.outbox_worker}


async def test_a_lapsed_lease_is_claimable_again_and_a_live_one_is_not(two_workers):
    first, second = two_workers
    row_id = await first.outbox_add("T1", "email", "s1", "i1", {"raw": "eA=="})
    assert [r["id"] for r in await first.outbox_due("email")] == [row_id]
    assert await second.outbox_due("email") == []  # held by the first worker
    first.outbox_lease_s = 0  # the first worker's next claim lapses as soon as it is taken
    await first.outbox_mark_failed(row_id, "timeout", "2000-01-01T00:00:00+00:00")
    assert [r["id"] for r in await first.outbox_due("email")] == [row_id]
    [taken] = await second.outbox_due("email")  # the first worker died holding it: the lease lapsed
    assert (taken["id"], taken["leased_by"]) == (row_id, second.outbox_worker)
    assert await first.outbox_due("email") == []


async def test_a_worker_that_stops_lets_go_of_what_it_claimed(pg_url):
    from bot.store.postgres import PgStore

    async with PgStore(pg_url) as first, PgStore(pg_url) as second:
        held = await first.outbox_add("T1", "slack", "s1", "i1", {"text": "held"})
        sent = await first.outbox_add("T1", "slack", "s1", "i2", {"text": "sent"})
        assert [r["id"] for r in await first.outbox_due("slack")] == [held, sent]
        await first.outbox_mark_sent(sent)
        await first.close()  # shutting down mid-batch: `held` was never tried
        [row] = await second.outbox_due("slack")  # the restarted worker need not wait for the lease
        assert (row["id"], row["attempts"], row["leased_by"]) == (held, 0, second.outbox_worker)
