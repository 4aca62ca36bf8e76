"""Schema migrations: named functions, applied in order, recorded in `_migrations`.

Never edit a migration that has shipped; add a new one. `tests/test_store.py` pins the
exact resulting schema.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_core_tables(db: sqlite_utils.Database) -> None:
    db["sessions"].create(
        {
            "id": str, "tenant_id": str, "channel": str, "user_id": str, "status": str,
            "created_at": str, "updated_at": str, "metadata": str,
        },
        pk="id",
    )
    db["inbox"].create(
        {
            "id": str, "tenant_id": str, "channel": str, "session_id": str, "user_id": str,
            "envelope": str, "status": str, "attempts": int, "received_at": str,
            "updated_at": str, "correlation_id": str, "outcome": str, "error": str,
            "flags": str, "raw_path": str,
        },
        pk="id",
    )
    db["inbox"].create_index(["status"])
    db["messages"].create(
        {
            "id": int, "session_id": str, "tenant_id": str, "role": str, "text": str,
            "inbox_id": str, "ts": str, "metadata": str,
        },
        pk="id",
    )
    db["messages"].create_index(["session_id", "id"])
    # Exactly one reply per inbound message, enforced by the database itself.
    db["messages"].create_index(["inbox_id", "role"], unique=True)
    db["case_state"].create(
        {"session_id": str, "tenant_id": str, "state": str, "updated_at": str}, pk="session_id"
    )
    db["tool_calls"].create(
        {
            "id": int, "correlation_id": str, "tenant_id": str, "session_id": str, "tool": str,
            "args": str, "ok": int, "result": str, "error": str, "error_kind": str,
            "cost_ms": float, "cached": int, "attempts": int, "idempotency_key": str, "ts": str,
        },
        pk="id",
    )
    db["tool_calls"].create_index(["correlation_id"])
    db["pending_actions"].create(
        {
            "id": str, "tenant_id": str, "session_id": str, "tool": str, "args": str,
            "requested_by": str, "status": str, "decided_by": str, "decided_at": str,
            "idempotency_key": str, "created_at": str, "result": str, "metadata": str,
        },
        pk="id",
    )
    db["pending_actions"].create_index(["idempotency_key"], unique=True)
    db["audit_log"].create(
        {
            "id": int, "ts": str, "tenant_id": str, "actor": str, "action": str,
            "target": str, "data": str,
        },
        pk="id",
    )
    db["traces"].create(
        {
            "id": int, "correlation_id": str, "tenant_id": str, "span": str, "data": str,
            "ts": str, "duration_ms": float,
        },
        pk="id",
    )
    db["traces"].create_index(["correlation_id"])
    db["processed_events"].create({"key": str, "source": str, "ts": str}, pk="key")
    # Idempotent writes: the first result for a key is the result for every repeat.
    db["idempotency"].create(
        {"key": str, "tenant_id": str, "tool": str, "result": str, "ts": str}, pk="key"
    )


@migration
def m002_outbox_and_feedback(db: sqlite_utils.Database) -> None:
    # Replies waiting to be delivered on a channel (email now; any surface that can fail).
    db["outbox"].create(
        {
            "id": int, "tenant_id": str, "channel": str, "session_id": str, "inbox_id": str,
            "payload": str, "status": str, "attempts": int, "next_attempt_at": str,
            "last_error": str, "created_at": str, "sent_at": str,
        },
        pk="id",
    )
    db["outbox"].create_index(["status", "next_attempt_at"])
    db["feedback"].create(
        {"id": int, "tenant_id": str, "session_id": str, "inbox_id": str, "user_id": str,
         "value": str, "ts": str},
        pk="id",
    )


@migration
def m003_email_threads(db: sqlite_utils.Database) -> None:
    # Email threading: every Message-ID (and normalised-subject key) of a conversation's
    # messages, inbound and outbound, mapped to its session (see mailbridge/threading.py).
    db["email_threads"].create(
        {"key": str, "session_id": str, "tenant_id": str, "ts": str}, pk="key"
    )
    db["email_threads"].create_index(["session_id"])


@migration
def m004_mail_mirror(db: sqlite_utils.Database) -> None:
    # The Slack thread that mirrors each email conversation (bot/slack/mail_mirror.py): one
    # per session, found again from the thread when a teammate replies in it.
    db["mail_mirror"].create(
        {"session_id": str, "tenant_id": str, "channel": str, "thread_ts": str, "ts": str}, pk="session_id"
    )
    db["mail_mirror"].create_index(["tenant_id", "channel", "thread_ts"], unique=True)


@migration
def m005_dead_letters(db: sqlite_utils.Database) -> None:
    # Poison messages (bot/dead_letters.py): a turn started too often without finishing is
    # parked here, one row per inbox message; `status` is dead, retried or dropped.
    db["dead_letters"].create(
        {
            "inbox_id": str, "tenant_id": str, "session_id": str, "channel": str, "status": str,
            "attempts": int, "error": str, "dead_at": str, "updated_at": str, "decided_by": str,
            "retries": int,
        },
        pk="inbox_id",
    )
    db["dead_letters"].create_index(["status", "tenant_id"])


@migration
def m006_shadow_runs(db: sqlite_utils.Database) -> None:
    # Shadow turns (bot/shadow.py): what Deskhand would have done and said, one row per inbox
    # message: the plan, the would-be writes (`actions`: tool, args), the reads it ran, and
    # the reply it would have sent. `deskhand report --shadow` lists them.
    db["shadow_runs"].create(
        {
            "inbox_id": str, "tenant_id": str, "session_id": str, "channel": str,
            "correlation_id": str, "ts": str, "text": str, "intent": str, "plan": str,
            "actions": str, "reads": str, "reply": str, "state": str, "error": str,
        },
        pk="inbox_id",
    )
    db["shadow_runs"].create_index(["tenant_id", "ts"])


@migration
def m007_feedback_reasons(db: sqlite_utils.Database) -> None:
    # What went wrong with an answer marked 👎 (bot/feedback.py): the reasons ticked in the
    # Slack modal (a JSON list) and an optional comment, both masked like every stored text.
    db["feedback"].add_column("reasons", str)
    db["feedback"].add_column("comment", str)
    db["feedback"].create_index(["tenant_id", "ts"])


@migration
def m008_usergroup_members(db: sqlite_utils.Database) -> None:
    # The members Slack last returned for each tenant's approver user group (bot/hands/gate.py),
    # so `deskhand approve`, which has no Slack connection, knows them too. `members` is a
    # JSON list of user IDs; `fetched_at` is when Slack said so.
    db["usergroup_members"].create(
        {"tenant_id": str, "usergroup": str, "members": str, "fetched_at": str}, pk=("tenant_id", "usergroup")
    )


@migration
def m009_outbox_leases(db: sqlite_utils.Database) -> None:
    # A claim on an outbox row while one sender delivers it: `leased_by` names the sender and
    # `lease_until` is when the claim lapses (a sender that died lets go by itself). Several
    # processes share one PostgreSQL database and claim rows there (bot/store/pg_delivery.py);
    # SQLite has a single writer and never sets a lease, but keeps the same columns so both
    # schemas match and `deskhand store copy` moves the table as it is.
    db["outbox"].add_column("lease_until", str)
    db["outbox"].add_column("leased_by", str)


def apply_migrations(db: sqlite_utils.Database) -> list[str]:
    """Apply every migration not yet recorded. Returns the names applied now."""
    table = db["_migrations"]
    if not table.exists():
        table.create({"name": str, "applied_at": str}, pk="name")
    done = {row["name"] for row in table.rows}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with db.conn:
            fn(db)
            table.insert({"name": name, "applied_at": datetime.now(timezone.utc).isoformat()})
        applied.append(name)
    return applied
