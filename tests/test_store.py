"""The store's schema, pinned exactly, and its one-writer guarantees."""

from __future__ import annotations

from bot.store.migrations import MIGRATIONS
from bot.store import Store

EXPECTED = {
    "sessions": {"id": str, "tenant_id": str, "channel": str, "user_id": str, "status": str,
                 "created_at": str, "updated_at": str, "metadata": str},
    "inbox": {"id": str, "tenant_id": str, "channel": str, "session_id": str, "user_id": str,
              "envelope": str, "status": str, "attempts": int, "received_at": str, "updated_at": str,
              "correlation_id": str, "outcome": str, "error": str, "flags": str, "raw_path": str},
    "messages": {"id": int, "session_id": str, "tenant_id": str, "role": str, "text": str,
                 "inbox_id": str, "ts": str, "metadata": str},
    "case_state": {"session_id": str, "tenant_id": str, "state": str, "updated_at": str},
    "tool_calls": {"id": int, "correlation_id": str, "tenant_id": str, "session_id": str, "tool": str,
                   "args": str, "ok": int, "result": str, "error": str, "error_kind": str,
                   "cost_ms": float, "cached": int, "attempts": int, "idempotency_key": str, "ts": str},
    "pending_actions": {"id": str, "tenant_id": str, "session_id": str, "tool": str, "args": str,
                        "requested_by": str, "status": str, "decided_by": str, "decided_at": str,
                        "idempotency_key": str, "created_at": str, "result": str, "metadata": str},
    "audit_log": {"id": int, "ts": str, "tenant_id": str, "actor": str, "action": str, "target": str, "data": str},
    "traces": {"id": int, "correlation_id": str, "tenant_id": str, "span": str, "data": str, "ts": str,
               "duration_ms": float},
    "processed_events": {"key": str, "source": str, "ts": str},
    "idempotency": {"key": str, "tenant_id": str, "tool": str, "result": str, "ts": str},
    "outbox": {"id": int, "tenant_id": str, "channel": str, "session_id": str, "inbox_id": str,
               "payload": str, "status": str, "attempts": int, "next_attempt_at": str, "last_error": str,
               "created_at": str, "sent_at": str, "lease_until": str, "leased_by": str},
    "feedback": {"id": int, "tenant_id": str, "session_id": str, "inbox_id": str, "user_id": str,
                 "value": str, "ts": str, "reasons": str, "comment": str},
    "email_threads": {"key": str, "session_id": str, "tenant_id": str, "ts": str},
    "mail_mirror": {"session_id": str, "tenant_id": str, "channel": str, "thread_ts": str, "ts": str},
    "dead_letters": {"inbox_id": str, "tenant_id": str, "session_id": str, "channel": str, "status": str,
                     "attempts": int, "error": str, "dead_at": str, "updated_at": str, "decided_by": str,
                     "retries": int},
    "shadow_runs": {"inbox_id": str, "tenant_id": str, "session_id": str, "channel": str,
                    "correlation_id": str, "ts": str, "text": str, "intent": str, "plan": str,
                    "actions": str, "reads": str, "reply": str, "state": str, "error": str},
    "usergroup_members": {"tenant_id": str, "usergroup": str, "members": str, "fetched_at": str},
    "_migrations": {"name": str, "applied_at": str},
}


def test_exact_schema(tmp_path):
    store = Store(tmp_path / "d.db")
    assert set(store.db.table_names()) == set(EXPECTED)
    for table, columns in EXPECTED.items():
        assert store.db[table].columns_dict == columns, table


def test_wal_mode_and_migrations_applied_once(tmp_path):
    store = Store(tmp_path / "d.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    store = Store(tmp_path / "d.db")  # reopening applies nothing twice
    assert [r["name"] for r in store.db["_migrations"].rows] == [name for name, _ in MIGRATIONS]


def test_processed_events_dedup(tmp_path):
    store = Store(tmp_path / "d.db")
    assert store.mark_processed("Ev1", "slack")
    assert not store.mark_processed("Ev1", "slack")


def test_pending_decision_has_one_winner(tmp_path):
    from bot.contracts import PendingAction

    store = Store(tmp_path / "d.db")
    action = store.pending_create(PendingAction(tenant_id="T", session_id="s", tool="process_refund",
                                                args={}, requested_by="U1", idempotency_key="k"))
    assert store.pending_decide(action.id, "approved", "U2")
    assert not store.pending_decide(action.id, "rejected", "U3")
    assert store.pending_get(action.id).decided_by == "U2"


def test_a_user_group_keeps_the_members_slack_returned_last(tmp_path):
    store = Store(tmp_path / "d.db")
    assert store.usergroup_members("T", "S1") is None  # never asked: unknown, not empty
    store.usergroup_members_save("T", "S1", ["U2", "U1"])
    store.usergroup_members_save("T", "S1", ["U3"])
    store.usergroup_members_save("T2", "S1", [])
    assert store.usergroup_members("T", "S1") == {"U3"} and store.usergroup_members("T2", "S1") == set()


def test_async_store_declares_every_store_method():
    # AsyncStore is typed by declaring each Store method; one left out is unreachable from
    # async code, so the two lists must match.
    import inspect

    from bot.store import AsyncStore

    public = {name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")}
    declared = {name for name in vars(AsyncStore) if not name.startswith("_")}
    assert public == declared
