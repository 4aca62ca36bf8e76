"""The core tables on both stores: the SQLite `Store` (through `AsyncStore`) and `PgStore` give
the same answers in the same shapes; what must happen once (the first inbox row, one reply per
message, one approval decision, one migration run) is decided by the database, also when
several PostgreSQL connections race; and a turn runs end to end on PostgreSQL."""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timezone

import pytest

from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope, PendingAction
from bot.store import AsyncStore, Store
from bot.store.migrations import MIGRATIONS

INBOX_KEYS = ["id", "tenant_id", "channel", "session_id", "user_id", "envelope", "status", "attempts",
              "received_at", "updated_at", "correlation_id", "outcome", "error", "flags", "raw_path"]


@pytest.fixture
def store(any_store):  # tests/conftest.py: SQLite, then PostgreSQL
    return any_store


def envelope(text: str = "where is A-1042?", session: str = "cli:s1", user: str = "U1",
             channel: Channel = Channel.cli, **fields) -> MessageEnvelope:
    return MessageEnvelope(tenant_id="T1", channel=channel, user_id=user, session_id=session, text=text, **fields)


def refund(key: str = "k1") -> PendingAction:
    return PendingAction(tenant_id="T1", session_id="cli:s1", tool="process_refund", args={"order_id": "A-1"},
                         requested_by="U1", idempotency_key=key)


async def test_an_inbox_message_is_stored_once_in_the_sqlite_shape(store):
    env = envelope()
    assert await store.inbox_add(env, flags=["f1"])
    assert not await store.inbox_add(env)  # a redelivery
    row = await store.inbox_get(env.id)
    assert list(row) == INBOX_KEYS
    assert (row["status"], row["attempts"], row["flags"], row["outcome"]) == ("received", 0, '["f1"]', None)
    assert await store.inbox_count() == 1 and await store.inbox_count("received") == 1
    assert [s["span"] for s in await store.traces_for(env.correlation_id)] == ["INTAKE"]

    await store.inbox_start(env.id, "c2")
    await store.inbox_update(env.id, status="answered", outcome='{"state": "DONE"}', error=None)
    row = await store.inbox_get(env.id)
    assert (row["status"], row["attempts"], row["correlation_id"]) == ("answered", 1, "c2")
    assert (await store.inbox_envelope(env.id)).text == env.text
    assert [r["id"] for r in await store.inbox_unfinished()] == [env.id]
    assert await store.inbox_get("nope") is None and await store.inbox_envelope("nope") is None


async def test_a_skipped_message_is_stored_skipped_with_its_outcome(store):
    env = envelope()
    assert await store.inbox_add(env, status="skipped", outcome={"reason": "bounce"})
    assert (await store.inbox_get(env.id))["outcome"] == '{"reason": "bounce"}'
    assert await store.inbox_unfinished() == []


async def test_the_latest_message_of_a_session_wins_a_tie_by_arrival(store):
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)
    first, second = envelope("one", received_at=at), envelope("two", received_at=at)
    await store.inbox_add(first)
    await store.inbox_add(second)
    await store.inbox_add(envelope("mail", channel=Channel.email, received_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    assert (await store.inbox_latest("cli:s1")).text == "two"
    assert (await store.inbox_latest("cli:s1", "email")).text == "mail"
    assert await store.inbox_latest("cli:other") is None
    assert [r["id"] for r in await store.inbox_unfinished()][-2:] == [first.id, second.id]


async def test_the_case_before_a_dm_message_is_found_by_id_order(store):
    prefix = "slack:T1:D1:"
    for ts in ("1700000000.000100", "1700000050.000200", "1700000100.000300"):
        await store.inbox_add(envelope(id=prefix + ts, session=f"slack:T1:D1:{ts}"))
    await store.set_case_state("slack:T1:D1:1700000050.000200", "T1", {"order_id": "A-1"})
    case = await store.latest_case_before(prefix, prefix + "1700000100.000300")
    assert case["session_id"] == "slack:T1:D1:1700000050.000200"
    assert (case["status"], case["case_state"]) == ("active", {"order_id": "A-1"})
    assert await store.latest_case_before(prefix, prefix + "1700000000.000100") is None


async def test_an_event_key_is_fresh_once(store):
    assert await store.mark_processed("Ev1", "slack")
    assert not await store.mark_processed("Ev1", "slack")
    assert not await store.mark_processed_all(["Ev1", "msg1"], "slack")  # one seen: not fresh
    assert not await store.mark_processed("msg1", "slack")  # but every key was recorded
    assert await store.mark_processed_all(["Ev2", "msg2"], "slack")


async def test_a_session_is_created_once_and_its_metadata_merged(store):
    env = envelope()
    session = await store.session_get_or_create(env)
    assert (session["status"], session["metadata"]) == ("active", {})
    await store.session_update(env.session_id, status="handed_off", teammate="U9", case={"a": 1, "b": 2})
    await store.session_update(env.session_id, teammate=None, case={"b": None, "c": 3})
    again = await store.session_get_or_create(env)
    assert (again["status"], again["metadata"]) == ("handed_off", {"case": {"a": 1, "c": 3}})
    assert again["created_at"] == session["created_at"]
    assert [s["id"] for s in await store.sessions_with_status("T1", "handed_off")] == [env.session_id]
    assert await store.sessions_with_status("T1", "active") == []
    assert await store.session_get("nope") is None


async def test_one_reply_per_inbox_message(store):
    env = envelope()
    turn = await store.open_turn(env)
    assert turn["session"]["id"] == env.session_id and turn["history"] == [] and turn["case_state"] == {}
    first = await store.add_message(env.session_id, "T1", "assistant", "first reply", env.id, {"k": 1})
    second = await store.add_message(env.session_id, "T1", "assistant", "second reply", env.id)
    assert second == first and (first["text"], first["metadata"]) == ("first reply", {"k": 1})
    assert [m["role"] for m in await store.history(env.session_id)] == ["user", "assistant"]
    later = envelope("and now?")
    turn = await store.open_turn(later)
    assert [(m["role"], m["text"]) for m in turn["history"]] == [("user", env.text), ("assistant", "first reply")]
    assert list(turn["history"][0]) == ["role", "text", "ts"]
    assert await store.message_for("nope") is None


async def test_someone_else_writing_is_seen(store):
    since = "2000-01-01T00:00:00+00:00"
    await store.inbox_add(envelope(user="U_CUSTOMER"))
    assert not await store.someone_else_wrote_since("cli:s1", "U_CUSTOMER", since)
    await store.add_message("cli:s1", "T1", "assistant", "bot", None, {"teammate": None})
    assert not await store.someone_else_wrote_since("cli:s1", "U_CUSTOMER", since)
    await store.add_message("cli:s1", "T1", "assistant", "from Slack", None, {"teammate": "U9"})
    assert await store.someone_else_wrote_since("cli:s1", "U_CUSTOMER", since)
    assert not await store.someone_else_wrote_since("cli:s1", "U_CUSTOMER", "2999-01-01T00:00:00+00:00")


async def test_case_state_tool_calls_and_idempotent_results(store):
    assert await store.case_state("cli:s1") == {}
    await store.set_case_state("cli:s1", "T1", {"order_id": "A-1"})
    await store.set_case_state("cli:s1", "T1", {"order_id": "A-2"})
    assert await store.case_state("cli:s1") == {"order_id": "A-2"}
    await store.record_tool_call(correlation_id="c1", tenant_id="T1", session_id="cli:s1", tool="get_order_status",
                                 args={"order_id": "A-1"}, ok=True, result={"status": "shipped"}, error=None,
                                 error_kind=None, cost_ms=1.5, cached=False, attempts=1, idempotency_key=None)
    assert await store.idempotent_result("k") is None
    assert await store.save_idempotent_result("k", "T1", "process_refund", {"refund_id": "R1"}) == {"refund_id": "R1"}
    assert await store.save_idempotent_result("k", "T1", "process_refund", {"refund_id": "R2"}) == {"refund_id": "R1"}


async def test_a_pending_action_is_created_once_and_decided_once(store):
    action = await store.pending_create(refund(), {"card": "1.0"})
    assert (await store.pending_create(refund())).id == action.id  # same idempotency key
    assert await store.pending_metadata(action.id) == {"card": "1.0"}
    await store.pending_update_metadata(action.id, channel="C1")
    assert await store.pending_metadata(action.id) == {"card": "1.0", "channel": "C1"}
    assert [a.id for a in await store.pending_list("T1")] == [action.id]
    assert await store.pending_decide(action.id, "approved", "U2")
    assert not await store.pending_decide(action.id, "rejected", "U3")
    got = await store.pending_get(action.id)
    assert (got.status, got.decided_by, got.args) == ("approved", "U2", {"order_id": "A-1"})
    assert await store.pending_list("T1") == [] and len(await store.pending_list(None, None)) == 1
    assert await store.pending_reopen(action.id) and not await store.pending_reopen(action.id)
    await store.pending_set_result(action.id, {"ok": True})
    assert (await store.pending_get(action.id)).result == {"ok": True}
    assert await store.pending_get("nope") is None and await store.pending_metadata("nope") == {}


async def test_two_decisions_at_once_have_one_winner(store):
    action = await store.pending_create(refund())
    for round_ in range(5):
        decisions = await asyncio.gather(*(store.pending_decide(action.id, "approved", f"U{n}") for n in range(4)))
        assert decisions.count(True) == 1, decisions
        assert await store.pending_reopen(action.id)


async def test_two_workers_deciding_at_once_on_postgres_have_one_winner(pg_url):
    from bot.store.postgres import PgStore

    async with PgStore(pg_url) as first, PgStore(pg_url) as second:
        for n in range(10):
            action = await first.pending_create(refund(f"k{n}"))
            decisions = await asyncio.gather(first.pending_decide(action.id, "approved", "U2"),
                                             second.pending_decide(action.id, "rejected", "U3"))
            assert sorted(decisions) == [False, True]
            winner = "U2" if decisions[0] else "U3"
            assert (await second.pending_get(action.id)).decided_by == winner


async def test_audit_traces_feedback_and_activity(store):
    await store.audit("T1", "U2", "approved", "pa_1", {"why": "ok"})
    await store.audit("T1", "bot", "handoff", "cli:s1")
    entries = await store.audit_entries("pa_1")
    assert [(e["actor"], e["data"]) for e in entries] == [("U2", '{"why": "ok"}')]
    assert list(entries[0]) == ["id", "ts", "tenant_id", "actor", "action", "target", "data"]
    assert [e["action"] for e in await store.audit_entries()] == ["approved", "handoff"]
    await store.trace_many([("c1", "T1", "PLAN", 2.0, {"n": 1}, "2001-01-01T00:00:01+00:00"),
                            ("c1", "T1", "ROUTE", 1.0, None, "2001-01-01T00:00:00+00:00")])
    await store.trace("c1", "T1", "RESPOND", 3.5)
    spans = await store.traces_for("c1")
    assert [(s["span"], s["duration_ms"], s["data"]) for s in spans][:2] == [("ROUTE", 1.0, {}), ("PLAN", 2.0, {"n": 1})]
    assert spans[2]["span"] == "RESPOND"

    env = envelope()
    await store.inbox_add(env)
    await store.inbox_update(env.id, status="answered")
    down = await store.add_feedback("T1", "cli:s1", env.id, "U5", "down")
    up = await store.add_feedback("T1", "cli:s1", env.id, "U6", "up")
    assert isinstance(down, int) and up == down + 1
    assert await store.feedback_add_reasons(down, "T1", "U5", ["wrong"], "my card is 4242 4242 4242 4242")
    assert not await store.feedback_add_reasons(up, "T1", "U6", ["wrong"], "")  # a 👍 has no reasons
    assert not await store.feedback_add_reasons(down, "T2", "U5", ["wrong"], "")
    row = await store.feedback_get(down)
    assert row["reasons"] == ["wrong"] and "4242" not in row["comment"]
    assert await store.feedback_get(999) is None
    assert await store.activity_since("T1", "2000-01-01T00:00:00+00:00") == {
        "answered": 1, "handoffs": 1, "approvals": 1}


async def test_a_user_group_keeps_the_members_slack_returned_last(store):
    assert await store.usergroup_members("T1", "S1") is None
    await store.usergroup_members_save("T1", "S1", ["U2", "U1"])
    await store.usergroup_members_save("T1", "S1", ["U3"])
    await store.usergroup_members_save("T2", "S1", [])
    assert await store.usergroup_members("T1", "S1") == {"U3"} and await store.usergroup_members("T2", "S1") == set()


async def test_workers_starting_together_migrate_once(pg_url):
    from bot.store.pg_migrations import PG_MIGRATIONS
    from bot.store.postgres import PgStore

    assert [name for name, _ in PG_MIGRATIONS] == [name for name, _ in MIGRATIONS]
    stores = [PgStore(pg_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        rows = await stores[0]._rows("SELECT name FROM _migrations ORDER BY name")
        assert [r["name"] for r in rows] == [name for name, _ in MIGRATIONS]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    async with PgStore(pg_url) as again:  # a restart applies nothing twice
        assert len(await again._rows("SELECT name FROM _migrations")) == len(MIGRATIONS)


def test_pg_store_has_the_async_stores_methods():
    from bot.store.postgres import PgStore

    declared = {name for name in vars(AsyncStore) if not name.startswith("_")} - {"close"}
    public = {name for name, fn in inspect.getmembers(PgStore, inspect.isfunction)
              if not name.startswith("_") and inspect.iscoroutinefunction(fn)} - {"open", "close"}
    assert public == declared


def _methods(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_pg_store_methods_take_the_sqlite_stores_parameters():
    from bot.store.postgres import PgStore

    sqlite, pg = _methods(Store), _methods(PgStore)
    differ = {name: (str(sqlite[name]), str(pg[name])) for name in sqlite
              if name in pg and list(sqlite[name].parameters) != list(pg[name].parameters)}
    assert differ == {}


async def test_a_turn_runs_end_to_end_on_postgres(tmp_path, pg_url):
    from bot.readiness import store_check
    from bot.runtime import open_runtime
    from bot.store.postgres import PgStore

    settings = load_settings(home=tmp_path / "home", database_url=pg_url)
    async with open_runtime(settings) as rt:
        assert isinstance(rt.store, PgStore)
        env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U_ADA", session_id="cli:pg",
                              text="where is order A-1042?")
        outcome = await rt.orchestrator.handle(env)
        again = await rt.orchestrator.handle(env)  # the same message again: the same one reply
        assert "A-1042" in outcome.reply and again.reply == outcome.reply
        spans = [s["span"] for s in await rt.store.traces_for(outcome.correlation_id)]
        assert spans == ["INTAKE", "ROUTE", "PLAN", "TOOL_LOOP", "DRAFT", "GUARD", "RESPOND"]
        assert (await rt.store.inbox_get(env.id))["status"] in ("answered", "delivered")
        assert (await rt.store.message_for(env.id))["text"] == outcome.reply
        assert b"deskhand_turns" in await rt.metrics.render()  # the gauges read PostgreSQL
        assert (await store_check(rt))["ok"]  # /readyz's store check
    assert not (tmp_path / "home" / "deskhand.db").exists()  # nothing went to SQLite
    async with PgStore(pg_url) as store:  # and it is all still there for the next worker
        assert await store.inbox_count() == 1


async def test_the_probes_reach_postgresql_on_their_own_connection(tmp_path, pg_url):
    from bot.check import store_probe
    from bot.store.postgres import PgStore
    from bot.store.probes import store_gauges, take_write_lock

    async with PgStore(pg_url) as store:
        await store.pending_create(refund())
        assert await asyncio.to_thread(store_gauges, pg_url) == {"outbox": [], "pending": [("T1", 1)], "dead": []}
        await asyncio.to_thread(take_write_lock, pg_url)
    ok = store_probe(load_settings(home=tmp_path / "home", database_url=pg_url))
    assert ok.ok and ok.detail == f"{pg_url} writable"
    absent = pg_url.replace("postgres@", "postgres:hunter2@").rsplit("/", 1)[0] + "/no_such_database"
    failed = store_probe(load_settings(home=tmp_path / "home", database_url=absent))
    assert not failed.ok and "no_such_database" in failed.detail and "hunter2" not in failed.detail
    assert "DESKHAND_DATABASE_URL" in failed.hint
