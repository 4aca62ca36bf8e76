"""`PgStore`: the PostgreSQL implementation of the store, for several workers sharing one database.

Used when `DESKHAND_DATABASE_URL=postgresql://…` is set (bot/store/factory.py); the SQLite file
stays the embedded default. Its methods are `AsyncStore`'s: the same names, parameters and
return shapes (tests/test_store_backends.py runs the same checks on both). What only one caller
may do is decided by the database, as on SQLite: a primary key or unique index with
`ON CONFLICT DO NOTHING` (the first inbox row, the one reply per inbound message, the first
idempotent result), and a conditional `UPDATE … WHERE status = 'pending'` for an approval.

The core tables live here; what leaves Deskhand (outbox, email threads, the mail mirror), dead
letters, shadow turns and replay are `PgDeliveryTables` (pg_delivery.py); `deskhand report`'s
reads are `PgReportTables` (pg_reports.py).

This module is over 400 lines for the same reason as sqlite.py: it is the one class the core
tables' SQL goes through.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bot.contracts import MessageEnvelope, PendingAction
from bot.redact import mask_sensitive
from bot.store.pg_base import INBOX_COLUMNS, PgBase
from bot.store.pg_delivery import PgDeliveryTables
from bot.store.pg_reports import PgReportTables
from bot.store.rows import dumps, loads, now_iso
from bot.store.sqlite import INTAKE, PROCESSING, RECEIVED, UNFINISHED


def _column(name: str) -> str:
    """A column name from a caller's keyword argument, quoted (never a value)."""
    if not name.isidentifier():
        raise ValueError(f"not a column name: {name!r}")
    return f'"{name}"'


def _merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7396), as SQLite's json_patch: objects merge key by key, a null
    removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged


class PgStore(PgDeliveryTables, PgReportTables, PgBase):
    """The store on PostgreSQL: `async with PgStore(url) as store: await store.inbox_add(env)`."""

    # -- inbox ---------------------------------------------------------------------------
    async def inbox_add(
        self, envelope: MessageEnvelope, *, flags: list[str] | None = None, raw_path: str = "",
        status: str = RECEIVED, outcome: dict | None = None,
    ) -> bool:
        """Persist an inbound envelope. False if this message id was already stored (see
        `Store.inbox_add`)."""
        stored = now_iso()
        fresh = await self._execute(
            "INSERT INTO inbox (id, tenant_id, channel, session_id, user_id, envelope, status, attempts,"
            " received_at, updated_at, flags, raw_path, outcome, correlation_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [envelope.id, envelope.tenant_id, envelope.channel.value, envelope.session_id, envelope.user_id,
             envelope.model_dump_json(), status, envelope.received_at.isoformat(), stored,
             json.dumps(flags or []), raw_path,
             json.dumps(outcome, default=str) if outcome is not None else None, envelope.correlation_id])
        if fresh != 1:
            return False
        stored_ms = (datetime.fromisoformat(stored) - envelope.received_at).total_seconds() * 1000
        await self.trace_many([(envelope.correlation_id, envelope.tenant_id, INTAKE, max(stored_ms, 0.0),
                                envelope.intake(), envelope.received_at.isoformat())])
        return True

    async def inbox_get(self, inbox_id: str) -> dict | None:
        return await self._row(f"SELECT {INBOX_COLUMNS} FROM inbox WHERE id = %s", [inbox_id])

    async def inbox_envelope(self, inbox_id: str) -> MessageEnvelope | None:
        row = await self._row("SELECT envelope FROM inbox WHERE id = %s", [inbox_id])
        return MessageEnvelope.model_validate_json(row["envelope"]) if row else None

    async def inbox_update(self, inbox_id: str, **fields: Any) -> None:
        fields["updated_at"] = now_iso()
        assignments = ", ".join(f"{_column(name)} = %s" for name in fields)
        await self._execute(f"UPDATE inbox SET {assignments} WHERE id = %s", [*fields.values(), inbox_id])

    async def inbox_start(self, inbox_id: str, correlation_id: str, envelope: MessageEnvelope | None = None) -> None:
        """Mark a turn started (and, if given, store the envelope as the turn sees it)."""
        await self._execute(
            "UPDATE inbox SET status = %s, attempts = attempts + 1, correlation_id = %s, updated_at = %s,"
            " envelope = coalesce(%s, envelope) WHERE id = %s",
            [PROCESSING, correlation_id, now_iso(), envelope.model_dump_json() if envelope else None, inbox_id])

    async def inbox_unfinished(self) -> list[dict]:
        return await self._rows(f"SELECT {INBOX_COLUMNS} FROM inbox WHERE status = ANY(%s)"
                                " ORDER BY received_at, seq", [list(UNFINISHED)])

    async def inbox_latest(self, session_id: str, channel: str | None = None) -> MessageEnvelope | None:
        """The newest inbound message of a session (optionally on one channel)."""
        sql = "SELECT envelope FROM inbox WHERE session_id = %s"
        params: list[Any] = [session_id]
        if channel:
            sql += " AND channel = %s"
            params.append(channel)
        row = await self._row(sql + " ORDER BY received_at DESC, seq DESC LIMIT 1", params)
        return MessageEnvelope.model_validate_json(row["envelope"]) if row else None

    async def latest_case_before(self, id_prefix: str, before_id: str) -> dict | None:
        """The conversation of the newest inbound message whose id starts with `id_prefix` and
        sorts before `before_id` (see `Store.latest_case_before`); ids compare bytewise."""
        row = await self._row("SELECT session_id, received_at FROM inbox WHERE id > %s AND id < %s"
                              " ORDER BY id DESC LIMIT 1", [id_prefix, before_id])
        if row is None:
            return None
        session_id = row["session_id"]
        last = await self._row("SELECT ts FROM messages WHERE session_id = %s ORDER BY id DESC LIMIT 1",
                               [session_id])
        status = await self._row("SELECT status FROM sessions WHERE id = %s", [session_id])
        return {"session_id": session_id, "status": status["status"] if status else "active",
                "case_state": await self.case_state(session_id),
                "last_activity": max(row["received_at"], last["ts"] if last else "")}

    async def inbox_count(self, status: str | None = None) -> int:
        if status is None:
            row = await self._row("SELECT count(*) AS n FROM inbox")
        else:
            row = await self._row("SELECT count(*) AS n FROM inbox WHERE status = %s", [status])
        assert row is not None
        return row["n"]

    # -- dedup ---------------------------------------------------------------------------
    async def mark_processed(self, key: str, source: str) -> bool:
        """Record an external event key. True the first time, False for every repeat."""
        return await self._execute("INSERT INTO processed_events (key, source, ts) VALUES (%s, %s, %s)"
                                   " ON CONFLICT DO NOTHING", [key, source, now_iso()]) == 1

    async def mark_processed_all(self, keys: list[str], source: str) -> bool:
        """Record several keys of one event. True only if none of them had been seen; every
        key is recorded either way."""
        fresh = [await self.mark_processed(key, source) for key in keys]
        return all(fresh)

    # -- sessions and messages -------------------------------------------------------------
    async def session_get_or_create(self, envelope: MessageEnvelope) -> dict:
        await self._execute(
            "INSERT INTO sessions (id, tenant_id, channel, user_id, status, created_at, updated_at, metadata)"
            " VALUES (%s, %s, %s, %s, 'active', %s, %s, '{}') ON CONFLICT DO NOTHING",
            [envelope.session_id, envelope.tenant_id, envelope.channel.value, envelope.user_id,
             now_iso(), now_iso()])
        session = await self.session_get(envelope.session_id)
        assert session is not None
        return session

    async def session_get(self, session_id: str) -> dict | None:
        row = await self._row("SELECT * FROM sessions WHERE id = %s", [session_id])
        if row is not None:
            row["metadata"] = loads(row["metadata"], {})
        return row

    async def session_update(self, session_id: str, *, status: str | None = None, **metadata: Any) -> None:
        """Set a session's status and merge keys into its metadata (a key set to None is
        removed), in one transaction: the row is locked from read to write."""
        patch = loads(dumps(metadata), {})
        async with self._transaction() as conn:
            cur = await conn.execute("SELECT metadata FROM sessions WHERE id = %s FOR UPDATE", [session_id])
            row = await cur.fetchone()
            if row is None:
                return
            merged = _merge_patch(loads(row["metadata"], {}), patch)
            await conn.execute("UPDATE sessions SET updated_at = %s, status = coalesce(%s, status), metadata = %s"
                               " WHERE id = %s",
                               [now_iso(), status or None, json.dumps(merged, sort_keys=True), session_id])

    async def sessions_with_status(self, tenant_id: str, status: str) -> list[dict]:
        return await self._rows("SELECT * FROM sessions WHERE tenant_id = %s AND status = %s ORDER BY created_at, id",
                                [tenant_id, status])

    async def someone_else_wrote_since(self, session_id: str, customer: str, since: str) -> bool:
        """Whether anyone but `customer` wrote in a conversation after `since` (ISO time)."""
        row = await self._row(
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE session_id = %s AND user_id != %s AND received_at > %s)"
            " OR EXISTS (SELECT 1 FROM messages WHERE session_id = %s AND role = 'assistant' AND ts > %s"
            " AND metadata::jsonb ->> 'teammate' IS NOT NULL) AS wrote",
            [session_id, customer, since, session_id, since])
        return bool(row and row["wrote"])

    async def add_message(
        self, session_id: str, tenant_id: str, role: str, text: str, inbox_id: str | None = None,
        metadata: dict | None = None,
    ) -> dict:
        """Append to a session's transcript. An assistant reply to an inbox message is unique
        (a unique index): a second insert returns the first one unchanged."""
        await self._execute(
            "INSERT INTO messages (session_id, tenant_id, role, text, inbox_id, ts, metadata)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [session_id, tenant_id, role, text, inbox_id, now_iso(), dumps(metadata or {})])
        if inbox_id:
            message = await self.message_for(inbox_id, role)
            assert message is not None
            return message
        return {"session_id": session_id, "role": role, "text": text}

    async def message_for(self, inbox_id: str, role: str = "assistant") -> dict | None:
        row = await self._row("SELECT * FROM messages WHERE inbox_id = %s AND role = %s ORDER BY id LIMIT 1",
                              [inbox_id, role])
        if row is not None:
            row["metadata"] = loads(row["metadata"], {})
        return row

    async def history(self, session_id: str, limit: int = 20) -> list[dict]:
        rows = await self._rows("SELECT role, text, ts FROM messages WHERE session_id = %s ORDER BY id DESC LIMIT %s",
                                [session_id, limit])
        return list(reversed(rows))

    async def open_turn(self, envelope: MessageEnvelope, history_limit: int = 12) -> dict:
        """Everything ROUTE needs: the session (created on first message), the user's message
        appended to the transcript, the case state and the history before it."""
        session = await self.session_get_or_create(envelope)
        await self.add_message(envelope.session_id, envelope.tenant_id, "user", envelope.text, envelope.id)
        return {"session": session, "case_state": await self.case_state(envelope.session_id),
                "history": (await self.history(envelope.session_id, history_limit))[:-1]}

    # -- case state ----------------------------------------------------------------------
    async def case_state(self, session_id: str) -> dict:
        row = await self._row("SELECT state FROM case_state WHERE session_id = %s", [session_id])
        return loads(row["state"], {}) if row else {}

    async def set_case_state(self, session_id: str, tenant_id: str, state: dict) -> None:
        await self._execute(
            "INSERT INTO case_state (session_id, tenant_id, state, updated_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (session_id) DO UPDATE SET tenant_id = excluded.tenant_id,"
            " state = excluded.state, updated_at = excluded.updated_at",
            [session_id, tenant_id, dumps(state), now_iso()])

    # -- tools, idempotency ----------------------------------------------------------------
    async def record_tool_call(self, **row: Any) -> None:
        row["args"] = dumps(row.get("args") or {})
        row["result"] = dumps(row.get("result")) if row.get("result") is not None else None
        row["ts"] = now_iso()
        names = ", ".join(_column(name) for name in row)
        await self._execute(f"INSERT INTO tool_calls ({names}) VALUES ({', '.join(['%s'] * len(row))})",
                            list(row.values()))

    async def idempotent_result(self, key: str) -> dict | None:
        row = await self._row("SELECT result FROM idempotency WHERE key = %s", [key])
        return loads(row["result"]) if row else None

    async def save_idempotent_result(self, key: str, tenant_id: str, tool: str, result: dict) -> dict:
        """Store the first result for key; return whichever result the key holds."""
        await self._execute("INSERT INTO idempotency (key, tenant_id, tool, result, ts) VALUES (%s, %s, %s, %s, %s)"
                            " ON CONFLICT DO NOTHING", [key, tenant_id, tool, dumps(result), now_iso()])
        held = await self.idempotent_result(key)
        assert held is not None
        return held

    # -- pending actions --------------------------------------------------------------------
    async def pending_create(self, action: PendingAction, metadata: dict | None = None) -> PendingAction:
        """Create a pending action, or return the existing one with the same idempotency key."""
        await self._execute(
            "INSERT INTO pending_actions (id, tenant_id, session_id, tool, args, requested_by, status,"
            " idempotency_key, created_at, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            [action.id, action.tenant_id, action.session_id, action.tool, dumps(action.args), action.requested_by,
             action.status, action.idempotency_key, action.created_at.isoformat(), dumps(metadata or {})])
        row = await self._row("SELECT * FROM pending_actions WHERE idempotency_key = %s", [action.idempotency_key])
        assert row is not None
        return self._pending(row)

    @staticmethod
    def _pending(row: dict) -> PendingAction:
        return PendingAction(
            id=row["id"], tenant_id=row["tenant_id"], session_id=row["session_id"], tool=row["tool"],
            args=loads(row["args"], {}), requested_by=row["requested_by"], status=row["status"],
            decided_by=row["decided_by"], decided_at=row["decided_at"], idempotency_key=row["idempotency_key"],
            created_at=row["created_at"], result=loads(row["result"]),
        )

    async def pending_get(self, action_id: str) -> PendingAction | None:
        row = await self._row("SELECT * FROM pending_actions WHERE id = %s", [action_id])
        return self._pending(row) if row else None

    async def pending_metadata(self, action_id: str) -> dict:
        row = await self._row("SELECT metadata FROM pending_actions WHERE id = %s", [action_id])
        return loads(row["metadata"], {}) if row else {}

    async def pending_update_metadata(self, action_id: str, **metadata: Any) -> None:
        """Merge keys into an action's metadata (top-level keys replace), in one statement."""
        await self._execute(
            "UPDATE pending_actions SET metadata = (coalesce(nullif(metadata, ''), '{}')::jsonb || %s::jsonb)::text"
            " WHERE id = %s", [dumps(metadata), action_id])

    async def pending_decide(self, action_id: str, status: str, decided_by: str) -> bool:
        """Atomically move a pending action out of `pending`. Only one caller ever wins: the
        row lock makes a second UPDATE re-check `status` after the first commits."""
        return await self._execute(
            "UPDATE pending_actions SET status = %s, decided_by = %s, decided_at = %s"
            " WHERE id = %s AND status = 'pending'", [status, decided_by, now_iso(), action_id]) == 1

    async def pending_reopen(self, action_id: str) -> bool:
        """An approved action whose execution failed goes back to `pending`."""
        return await self._execute(
            "UPDATE pending_actions SET status = 'pending', decided_by = NULL, decided_at = NULL"
            " WHERE id = %s AND status = 'approved'", [action_id]) == 1

    async def pending_set_result(self, action_id: str, result: dict) -> None:
        await self._execute("UPDATE pending_actions SET result = %s WHERE id = %s", [dumps(result), action_id])

    async def pending_list(self, tenant_id: str | None = None, status: str | None = "pending") -> list[PendingAction]:
        where, params = ["TRUE"], []
        if tenant_id:
            where.append("tenant_id = %s")
            params.append(tenant_id)
        if status:
            where.append("status = %s")
            params.append(status)
        rows = await self._rows(f"SELECT * FROM pending_actions WHERE {' AND '.join(where)} ORDER BY created_at",
                                params)
        return [self._pending(r) for r in rows]

    # -- audit, traces, feedback -------------------------------------------------------------
    async def audit(self, tenant_id: str, actor: str, action: str, target: str, data: dict | None = None) -> None:
        await self._execute("INSERT INTO audit_log (ts, tenant_id, actor, action, target, data)"
                            " VALUES (%s, %s, %s, %s, %s, %s)",
                            [now_iso(), tenant_id, actor, action, target, dumps(data or {})])

    async def audit_entries(self, target: str | None = None) -> list[dict]:
        if target is None:
            return await self._rows("SELECT * FROM audit_log ORDER BY id")
        return await self._rows("SELECT * FROM audit_log WHERE target = %s ORDER BY id", [target])

    async def trace(self, correlation_id: str, tenant_id: str, span: str, duration_ms: float,
                    data: dict | None = None) -> None:
        await self._execute("INSERT INTO traces (correlation_id, tenant_id, span, data, ts, duration_ms)"
                            " VALUES (%s, %s, %s, %s, %s, %s)",
                            [correlation_id, tenant_id, span, dumps(data or {}), now_iso(), duration_ms])

    async def trace_many(self, spans: list[tuple]) -> None:
        """Write a turn's spans in one transaction: (correlation_id, tenant, span, ms, data,
        started_at); a span without `started_at` gets the time it is written."""
        rows = [(c, t, span, dumps(data or {}), started[0] if started else now_iso(), ms)
                for c, t, span, ms, data, *started in spans]
        if not rows:
            return
        async with self._transaction() as conn:
            async with conn.cursor() as cur:
                await cur.executemany("INSERT INTO traces (correlation_id, tenant_id, span, data, ts, duration_ms)"
                                      " VALUES (%s, %s, %s, %s, %s, %s)", rows)

    async def traces_for(self, correlation_id: str) -> list[dict]:
        """Every span of one correlation id (its intake, then its turns), in start order."""
        rows = await self._rows("SELECT * FROM traces WHERE correlation_id = %s ORDER BY ts, id", [correlation_id])
        return [{**r, "data": loads(r["data"], {})} for r in rows]

    async def add_feedback(self, tenant_id: str, session_id: str, inbox_id: str, user_id: str, value: str) -> int:
        """Record a 👍/👎; returns the row id (a 👎's reasons are added to it later)."""
        row = await self._row("INSERT INTO feedback (tenant_id, session_id, inbox_id, user_id, value, ts)"
                              " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                              [tenant_id, session_id, inbox_id, user_id, value, now_iso()])
        assert row is not None
        return row["id"]

    async def activity_since(self, tenant_id: str, since: str) -> dict[str, int]:
        """A tenant's figures since `since` (ISO time): messages answered, handoffs, and
        approval decisions (App Home's "today")."""
        row = await self._row(
            "SELECT (SELECT count(*) FROM inbox WHERE tenant_id = %(t)s AND updated_at >= %(s)s"
            "        AND status IN ('answered', 'delivered')) AS answered,"
            " (SELECT count(*) FROM audit_log WHERE tenant_id = %(t)s AND ts >= %(s)s"
            "        AND action = 'handoff') AS handoffs,"
            " (SELECT count(*) FROM audit_log WHERE tenant_id = %(t)s AND ts >= %(s)s"
            "        AND action IN ('approved', 'rejected')) AS approvals",
            {"t": tenant_id, "s": since})
        assert row is not None
        return {"answered": row["answered"], "handoffs": row["handoffs"], "approvals": row["approvals"]}

    async def feedback_add_reasons(self, feedback_id: int, tenant_id: str, user_id: str, reasons: list[str],
                                   comment: str) -> bool:
        """Attach the modal's answers to a 👎 of this tenant by this user. False if there is no
        such 👎."""
        return await self._execute(
            "UPDATE feedback SET reasons = %s, comment = %s WHERE id = %s AND tenant_id = %s AND user_id = %s"
            " AND value = 'down'",
            [dumps(reasons), mask_sensitive(comment), feedback_id, tenant_id, user_id]) == 1  # dumps masks too

    async def feedback_get(self, feedback_id: int) -> dict | None:
        row = await self._row("SELECT * FROM feedback WHERE id = %s", [feedback_id])
        return {**row, "reasons": loads(row.get("reasons"), [])} if row else None

    # -- approver user groups ----------------------------------------------------------------
    async def usergroup_members_save(self, tenant_id: str, usergroup: str, members: list[str]) -> None:
        """Keep what Slack just said the group's members are, replacing the last answer."""
        await self._execute(
            "INSERT INTO usergroup_members (tenant_id, usergroup, members, fetched_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, usergroup) DO UPDATE SET members = excluded.members,"
            " fetched_at = excluded.fetched_at",
            [tenant_id, usergroup, json.dumps(sorted(members)), now_iso()])

    async def usergroup_members(self, tenant_id: str, usergroup: str) -> set[str] | None:
        """The members Slack last returned for this group, or None if it was never asked."""
        row = await self._row("SELECT members FROM usergroup_members WHERE tenant_id = %s AND usergroup = %s",
                              [tenant_id, usergroup])
        return None if row is None else set(json.loads(row["members"]))
