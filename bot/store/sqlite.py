"""`Store`: the SQLite implementation (sqlite-utils, WAL), every table Deskhand persists.

What leaves Deskhand (the outbox, email threads, the Slack mirror of email) is written by
`DeliveryTables` (delivery.py), poison messages by `DeadLetterTables` (dead_letters.py),
shadow turns by `ShadowTables` (shadow.py), a 👎's reasons by `FeedbackTables`
(feedback.py), the approver groups Slack last returned by `MembershipTables`
(memberships.py) and `deskhand report`'s reads by `ReportTables` (reports.py); `Store` inherits
them all. `Store` is synchronous and owns one connection;
async code reaches it through `AsyncStore` (async_store.py), on one thread.

This module is over 400 lines because it is the one class the core tables' SQL goes through
(inbox, sessions, messages, case state, tool calls, approvals, audit, traces); the tables
that leave Deskhand or serve one feature live in the mixins beside it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.contracts import MessageEnvelope, PendingAction
from bot.store.migrations import apply_migrations
from bot.store.dead_letters import DeadLetterTables
from bot.store.delivery import DeliveryTables
from bot.store.feedback import FeedbackTables
from bot.store.memberships import MembershipTables
from bot.store.reports import ReportTables
from bot.store.shadow import ShadowTables
from bot.store.rows import dumps, loads, now_iso

# Inbox lifecycle. A message is `received` before anything else happens, `processing` while
# its turn runs, `answered` once the reply is stored, and `delivered` once a surface took it.
RECEIVED, PROCESSING, ANSWERED, DELIVERED, FAILED, SKIPPED = (
    "received", "processing", "answered", "delivered", "failed", "skipped",
)
UNFINISHED = (RECEIVED, PROCESSING, ANSWERED)
INTAKE = "INTAKE"  # the span of a message's arrival, written with its inbox row


class Store(DeliveryTables, DeadLetterTables, ShadowTables, FeedbackTables, MembershipTables, ReportTables):
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode (only an OS crash can lose
            # the last transactions), which is the failure we design for.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute("PRAGMA foreign_keys=ON")
            apply_migrations(self.db)
        except BaseException:  # not a database, or a migration failed: nobody else will close it
            conn.close()
            raise

    def close(self) -> None:
        self.db.close()

    # -- inbox ---------------------------------------------------------------------------
    def inbox_add(
        self, envelope: MessageEnvelope, *, flags: list[str] | None = None, raw_path: str = "",
        status: str = RECEIVED, outcome: dict | None = None,
    ) -> bool:
        """Persist an inbound envelope. False if this message id was already stored.

        `status=SKIPPED` (with an `outcome` saying why) stores a message that must never get
        a turn, such as a bounce, in the same single write: no crash can leave it `received`.
        A fresh message also gets its intake span (`deskhand trace`): from when it was received
        until it was stored.
        """
        stored = now_iso()
        cur = self.db.execute(
            "INSERT OR IGNORE INTO inbox (id, tenant_id, channel, session_id, user_id, envelope,"
            " status, attempts, received_at, updated_at, flags, raw_path, outcome, correlation_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
            [
                envelope.id, envelope.tenant_id, envelope.channel.value, envelope.session_id,
                envelope.user_id, envelope.model_dump_json(), status,
                envelope.received_at.isoformat(), stored, json.dumps(flags or []), raw_path,
                json.dumps(outcome, default=str) if outcome is not None else None, envelope.correlation_id,
            ],
        )
        if cur.rowcount != 1:
            return False
        stored_ms = (datetime.fromisoformat(stored) - envelope.received_at).total_seconds() * 1000
        self.trace_many([(envelope.correlation_id, envelope.tenant_id, INTAKE, max(stored_ms, 0.0),
                          envelope.intake(), envelope.received_at.isoformat())])
        return True

    def _row(self, sql: str, params: list[Any]) -> dict | None:
        # Plain SQL on the per-turn paths: sqlite-utils' table helpers introspect the schema
        # on every call, which cost more than the queries themselves under load.
        cur = self.db.execute(sql, params)
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def inbox_get(self, inbox_id: str) -> dict | None:
        return self._row("SELECT * FROM inbox WHERE id = ?", [inbox_id])

    def inbox_envelope(self, inbox_id: str) -> MessageEnvelope | None:
        row = self.inbox_get(inbox_id)
        return MessageEnvelope.model_validate_json(row["envelope"]) if row else None

    def inbox_update(self, inbox_id: str, **fields: Any) -> None:
        fields["updated_at"] = now_iso()
        assignments = ", ".join(f"[{name}] = ?" for name in fields)
        self.db.execute(f"UPDATE inbox SET {assignments} WHERE id = ?", [*fields.values(), inbox_id])

    def inbox_start(self, inbox_id: str, correlation_id: str, envelope: MessageEnvelope | None = None) -> None:
        """Mark a turn started (and, if given, store the envelope as the turn sees it)."""
        self.db.execute(
            "UPDATE inbox SET status = ?, attempts = attempts + 1, correlation_id = ?,"
            " updated_at = ?, envelope = coalesce(?, envelope) WHERE id = ?",
            [PROCESSING, correlation_id, now_iso(), envelope.model_dump_json() if envelope else None, inbox_id],
        )

    def inbox_unfinished(self) -> list[dict]:
        marks = ",".join("?" * len(UNFINISHED))
        return list(
            self.db["inbox"].rows_where(f"status IN ({marks})", list(UNFINISHED), order_by="received_at")
        )

    def inbox_latest(self, session_id: str, channel: str | None = None) -> MessageEnvelope | None:
        """The newest inbound message of a session (optionally on one channel)."""
        sql = "SELECT envelope FROM inbox WHERE session_id = ?"
        params: list[Any] = [session_id]
        if channel:
            sql += " AND channel = ?"
            params.append(channel)
        row = self.db.execute(sql + " ORDER BY received_at DESC, rowid DESC LIMIT 1", params).fetchone()
        return MessageEnvelope.model_validate_json(row[0]) if row else None

    def latest_case_before(self, id_prefix: str, before_id: str) -> dict | None:
        """The conversation of the newest inbound message whose id starts with `id_prefix`
        (one Slack DM: `slack:<team>:<channel>:`) and sorts before `before_id`: its session
        id, status, case state and the time of its last message. Slack ts are fixed-width,
        so these ids sort by time, and the range is a primary-key seek."""
        row = self._row("SELECT session_id, received_at FROM inbox WHERE id > ? AND id < ?"
                        " ORDER BY id DESC LIMIT 1", [id_prefix, before_id])
        if row is None:
            return None
        session_id = row["session_id"]
        last = self._row("SELECT ts FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT 1", [session_id])
        status = self._row("SELECT status FROM sessions WHERE id = ?", [session_id])
        return {"session_id": session_id, "status": status["status"] if status else "active",
                "case_state": self.case_state(session_id),
                "last_activity": max(row["received_at"], last["ts"] if last else "")}

    def inbox_count(self, status: str | None = None) -> int:
        if status is None:
            return self.db["inbox"].count
        return self.db.execute("SELECT count(*) FROM inbox WHERE status = ?", [status]).fetchone()[0]

    # -- dedup ---------------------------------------------------------------------------
    def mark_processed(self, key: str, source: str) -> bool:
        """Record an external event key. True the first time, False for every repeat."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO processed_events (key, source, ts) VALUES (?, ?, ?)",
            [key, source, now_iso()],
        )
        return cur.rowcount == 1

    def mark_processed_all(self, keys: list[str], source: str) -> bool:
        """Record several keys of one event (its id, its message id). True only if none of
        them had been seen; every key is recorded either way."""
        fresh = [self.mark_processed(key, source) for key in keys]
        return all(fresh)

    # -- sessions and messages -------------------------------------------------------------
    def session_get_or_create(self, envelope: MessageEnvelope) -> dict:
        self.db.execute(
            "INSERT OR IGNORE INTO sessions (id, tenant_id, channel, user_id, status, created_at,"
            " updated_at, metadata) VALUES (?, ?, ?, ?, 'active', ?, ?, '{}')",
            [envelope.session_id, envelope.tenant_id, envelope.channel.value, envelope.user_id,
             now_iso(), now_iso()],
        )
        return self.session_get(envelope.session_id)

    def session_get(self, session_id: str) -> dict | None:
        row = self._row("SELECT * FROM sessions WHERE id = ?", [session_id])
        if row is not None:
            row["metadata"] = loads(row["metadata"], {})
        return row

    def session_update(self, session_id: str, *, status: str | None = None, **metadata: Any) -> None:
        """Set a session's status and merge keys into its metadata, in one statement (a key
        set to None is removed)."""
        self.db.execute(
            "UPDATE sessions SET updated_at = ?, status = coalesce(?, status),"
            " metadata = json_patch(metadata, ?) WHERE id = ?",
            [now_iso(), status or None, dumps(metadata), session_id])

    def sessions_with_status(self, tenant_id: str, status: str) -> list[dict]:
        return list(
            self.db["sessions"].rows_where("tenant_id = ? AND status = ?", [tenant_id, status])
        )

    def someone_else_wrote_since(self, session_id: str, customer: str, since: str) -> bool:
        """Whether anyone but `customer` wrote in a conversation after `since` (ISO time): a
        teammate in its Slack thread, or a teammate's email reply sent from Slack."""
        return bool(self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE session_id = ? AND user_id != ? AND received_at > ?)"
            " OR EXISTS (SELECT 1 FROM messages WHERE session_id = ? AND role = 'assistant' AND ts > ?"
            " AND json_extract(metadata, '$.teammate') IS NOT NULL)",
            [session_id, customer, since, session_id, since]).fetchone()[0])

    def add_message(
        self, session_id: str, tenant_id: str, role: str, text: str, inbox_id: str | None = None,
        metadata: dict | None = None,
    ) -> dict:
        """Append to a session's transcript. An assistant reply to an inbox message is
        unique: a second insert returns the first one unchanged."""
        self.db.execute(
            "INSERT OR IGNORE INTO messages (session_id, tenant_id, role, text, inbox_id, ts, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [session_id, tenant_id, role, text, inbox_id, now_iso(), dumps(metadata or {})],
        )
        if inbox_id:
            return self.message_for(inbox_id, role)
        return {"session_id": session_id, "role": role, "text": text}

    def message_for(self, inbox_id: str, role: str = "assistant") -> dict | None:
        row = self._row("SELECT * FROM messages WHERE inbox_id = ? AND role = ? ORDER BY id LIMIT 1",
                        [inbox_id, role])
        if row is not None:
            row["metadata"] = loads(row["metadata"], {})
        return row

    def history(self, session_id: str, limit: int = 20) -> list[dict]:
        rows = self.db.execute(
            "SELECT role, text, ts FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT ?",
            [session_id, limit],
        ).fetchall()
        return [{"role": r[0], "text": r[1], "ts": r[2]} for r in reversed(rows)]

    def open_turn(self, envelope: MessageEnvelope, history_limit: int = 12) -> dict:
        """Everything ROUTE needs, in one call: the session (created on first message), the
        user's message appended to the transcript, the case state and the history before it."""
        session = self.session_get_or_create(envelope)
        self.add_message(envelope.session_id, envelope.tenant_id, "user", envelope.text, envelope.id)
        return {"session": session, "case_state": self.case_state(envelope.session_id),
                "history": self.history(envelope.session_id, history_limit)[:-1]}

    # -- case state ----------------------------------------------------------------------
    def case_state(self, session_id: str) -> dict:
        row = self.db.execute("SELECT state FROM case_state WHERE session_id = ?", [session_id]).fetchone()
        return loads(row[0], {}) if row else {}

    def set_case_state(self, session_id: str, tenant_id: str, state: dict) -> None:
        self.db.execute(
            "INSERT INTO case_state (session_id, tenant_id, state, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (session_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
            " state = excluded.state, updated_at = excluded.updated_at",
            [session_id, tenant_id, dumps(state), now_iso()])

    # -- tools, idempotency ----------------------------------------------------------------
    def record_tool_call(self, **row: Any) -> None:
        row["args"] = dumps(row.get("args") or {})
        row["result"] = dumps(row.get("result")) if row.get("result") is not None else None
        row["ts"] = now_iso()
        names = ", ".join(f"[{name}]" for name in row)
        self.db.execute(f"INSERT INTO tool_calls ({names}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()))

    def idempotent_result(self, key: str) -> dict | None:
        row = self.db.execute("SELECT result FROM idempotency WHERE key = ?", [key]).fetchone()
        return loads(row[0]) if row else None

    def save_idempotent_result(self, key: str, tenant_id: str, tool: str, result: dict) -> dict:
        """Store the first result for key; return whichever result the key holds."""
        self.db.execute(
            "INSERT OR IGNORE INTO idempotency (key, tenant_id, tool, result, ts) VALUES (?, ?, ?, ?, ?)",
            [key, tenant_id, tool, dumps(result), now_iso()],
        )
        return self.idempotent_result(key)

    # -- pending actions --------------------------------------------------------------------
    def pending_create(self, action: PendingAction, metadata: dict | None = None) -> PendingAction:
        """Create a pending action, or return the existing one with the same idempotency key."""
        self.db.execute(
            "INSERT OR IGNORE INTO pending_actions (id, tenant_id, session_id, tool, args,"
            " requested_by, status, idempotency_key, created_at, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [action.id, action.tenant_id, action.session_id, action.tool, dumps(action.args),
             action.requested_by, action.status, action.idempotency_key,
             action.created_at.isoformat(), dumps(metadata or {})],
        )
        rows = list(self.db["pending_actions"].rows_where("idempotency_key = ?", [action.idempotency_key]))
        return self._pending(rows[0])

    def _pending(self, row: dict) -> PendingAction:
        return PendingAction(
            id=row["id"], tenant_id=row["tenant_id"], session_id=row["session_id"],
            tool=row["tool"], args=loads(row["args"], {}), requested_by=row["requested_by"],
            status=row["status"], decided_by=row["decided_by"], decided_at=row["decided_at"],
            idempotency_key=row["idempotency_key"], created_at=row["created_at"],
            result=loads(row["result"]),
        )

    def pending_get(self, action_id: str) -> PendingAction | None:
        rows = list(self.db["pending_actions"].rows_where("id = ?", [action_id]))
        return self._pending(rows[0]) if rows else None

    def pending_metadata(self, action_id: str) -> dict:
        row = self.db.execute("SELECT metadata FROM pending_actions WHERE id = ?", [action_id]).fetchone()
        return loads(row[0], {}) if row else {}

    def pending_update_metadata(self, action_id: str, **metadata: Any) -> None:
        merged = {**self.pending_metadata(action_id), **metadata}
        self.db.execute("UPDATE pending_actions SET metadata = ? WHERE id = ?", [dumps(merged), action_id])

    def pending_decide(self, action_id: str, status: str, decided_by: str) -> bool:
        """Atomically move a pending action out of `pending`. Only one caller ever wins."""
        cur = self.db.execute(
            "UPDATE pending_actions SET status = ?, decided_by = ?, decided_at = ?"
            " WHERE id = ? AND status = 'pending'",
            [status, decided_by, now_iso(), action_id],
        )
        return cur.rowcount == 1

    def pending_reopen(self, action_id: str) -> bool:
        """An approved action whose execution failed goes back to `pending`, so it can be
        approved again (its idempotency key keeps the write once) or rejected."""
        cur = self.db.execute("UPDATE pending_actions SET status = 'pending', decided_by = NULL, decided_at = NULL"
                              " WHERE id = ? AND status = 'approved'", [action_id])
        return cur.rowcount == 1

    def pending_set_result(self, action_id: str, result: dict) -> None:
        self.db.execute("UPDATE pending_actions SET result = ? WHERE id = ?", [dumps(result), action_id])

    def pending_list(self, tenant_id: str | None = None, status: str | None = "pending") -> list[PendingAction]:
        where, params = [], []
        if tenant_id:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if status:
            where.append("status = ?")
            params.append(status)
        rows = self.db["pending_actions"].rows_where(
            " AND ".join(where) or None, params, order_by="created_at"
        )
        return [self._pending(r) for r in rows]

    # -- audit, traces, feedback -------------------------------------------------------------
    def audit(self, tenant_id: str, actor: str, action: str, target: str, data: dict | None = None) -> None:
        self.db["audit_log"].insert(
            {"ts": now_iso(), "tenant_id": tenant_id, "actor": actor, "action": action,
             "target": target, "data": dumps(data or {})}
        )

    def audit_entries(self, target: str | None = None) -> list[dict]:
        if target is None:
            return list(self.db["audit_log"].rows)
        return list(self.db["audit_log"].rows_where("target = ?", [target], order_by="id"))

    def trace(self, correlation_id: str, tenant_id: str, span: str, duration_ms: float, data: dict | None = None) -> None:
        self.db.execute(
            "INSERT INTO traces (correlation_id, tenant_id, span, data, ts, duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
            [correlation_id, tenant_id, span, dumps(data or {}), now_iso(), duration_ms],
        )

    def trace_many(self, spans: list[tuple]) -> None:
        """Write a turn's spans in one transaction: (correlation_id, tenant, span, ms, data,
        started_at). `ts` is when the span started (ISO, UTC); a span without `started_at`
        gets the time it is written."""
        with self.db.conn:
            self.db.conn.executemany(
                "INSERT INTO traces (correlation_id, tenant_id, span, data, ts, duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                [(c, t, span, dumps(data or {}), started[0] if started else now_iso(), ms)
                 for c, t, span, ms, data, *started in spans])

    def traces_for(self, correlation_id: str) -> list[dict]:
        """Every span of one correlation id (its intake, then its turns), in start order."""
        rows = self.db["traces"].rows_where("correlation_id = ?", [correlation_id], order_by="ts, id")
        return [{**r, "data": loads(r["data"], {})} for r in rows]

    def add_feedback(self, tenant_id: str, session_id: str, inbox_id: str, user_id: str, value: str) -> int:
        """Record a 👍/👎; returns the row id (a 👎's reasons are added to it later)."""
        return self.db["feedback"].insert(
            {"tenant_id": tenant_id, "session_id": session_id, "inbox_id": inbox_id,
             "user_id": user_id, "value": value, "ts": now_iso()}
        ).last_pk

    def activity_since(self, tenant_id: str, since: str) -> dict[str, int]:
        """A tenant's figures since `since` (ISO time): messages answered, handoffs, and
        approval decisions (App Home's "today")."""
        def count(sql: str) -> int:
            return self.db.execute(sql, [tenant_id, since]).fetchone()[0]

        return {
            "answered": count("SELECT count(*) FROM inbox WHERE tenant_id = ? AND updated_at >= ?"
                              " AND status IN ('answered', 'delivered')"),
            "handoffs": count("SELECT count(*) FROM audit_log WHERE tenant_id = ? AND ts >= ?"
                              " AND action = 'handoff'"),
            "approvals": count("SELECT count(*) FROM audit_log WHERE tenant_id = ? AND ts >= ?"
                               " AND action IN ('approved', 'rejected')"),
        }
