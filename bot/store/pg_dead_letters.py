"""`PgDeadLetterTables`: the PostgreSQL side of the dead ends `deskhand dlq` handles
(dead_letters.py): poison messages parked in `dead_letters`, and outbox rows given up.

The names, statuses and return values are the SQLite `Store`'s (see dead_letters.py for what
each status means). Every decision takes its row `FOR UPDATE` inside one transaction, so two
operators (or two workers) deciding the same dead letter at once see one winner, and the audit
entry is written in that same transaction.
"""

from __future__ import annotations

import psycopg

from bot.slack_ids import placeholder_key
from bot.store.dead_letters import DEAD, DROPPED, OUTBOX_DEAD_STATUS, RETRIED, SYSTEM_ACTOR, outbox_ref
from bot.store.pg_base import PgBase
from bot.store.rows import dumps, loads, now_iso


async def _pg_audit(conn: psycopg.AsyncConnection, tenant_id: str, actor: str, action: str, target: str,
                    data: dict) -> None:
    await conn.execute("INSERT INTO audit_log (ts, tenant_id, actor, action, target, data)"
                       " VALUES (%s, %s, %s, %s, %s, %s)", [now_iso(), tenant_id, actor, action, target, dumps(data)])


async def _one(conn: psycopg.AsyncConnection, sql: str, params: list) -> dict | None:
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


class PgDeadLetterTables(PgBase):
    async def dead_letter_add(self, inbox: dict, error: str) -> bool:
        """Park an inbox message. True when it became dead now; False when it already was
        (a restart while it was being dead-lettered) or an operator dropped it. A message
        that was retried and is poison again is parked again."""
        now = now_iso()
        async with self._transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO dead_letters (inbox_id, tenant_id, session_id, channel, status, attempts, error,"
                " dead_at, updated_at, decided_by, retries) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '', 0)"
                " ON CONFLICT (inbox_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,"
                " error = excluded.error, dead_at = excluded.dead_at, updated_at = excluded.updated_at"
                " WHERE dead_letters.status = %s",
                [inbox["id"], inbox["tenant_id"], inbox["session_id"], inbox["channel"], DEAD,
                 inbox["attempts"], error, now, now, RETRIED])
            fresh = cur.rowcount == 1
            if fresh:
                await _pg_audit(conn, inbox["tenant_id"], SYSTEM_ACTOR, "dead_letter", inbox["id"],
                                {"attempts": inbox["attempts"], "error": error})
        return fresh

    async def dead_letter_get(self, inbox_id: str) -> dict | None:
        """One dead letter with its message's envelope and inbox status, or None."""
        return await self._row(
            "SELECT d.*, i.envelope, i.status AS inbox_status, i.received_at FROM dead_letters d"
            " JOIN inbox i ON i.id = d.inbox_id WHERE d.inbox_id = %s", [inbox_id])

    async def dead_letters(self, status: str | None = DEAD, tenant_id: str | None = None) -> list[dict]:
        where, params = [], []
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if tenant_id is not None:
            where.append("tenant_id = %s")
            params.append(tenant_id)
        sql = "SELECT * FROM dead_letters" + (f" WHERE {' AND '.join(where)}" if where else "")
        return await self._rows(sql + " ORDER BY dead_at, inbox_id", params)

    async def dead_letter_count(self, tenant_id: str | None = None) -> int:
        """Messages parked now (status dead), for one tenant or all (the metrics gauge)."""
        if tenant_id is None:
            row = await self._row("SELECT count(*) AS n FROM dead_letters WHERE status = %s", [DEAD])
        else:
            row = await self._row("SELECT count(*) AS n FROM dead_letters WHERE status = %s AND tenant_id = %s",
                                  [DEAD, tenant_id])
        return row["n"]

    async def dead_letter_retry(self, inbox_id: str, actor: str) -> str | None:
        """Put a dead letter back in the inbox as if just received (attempts reset). Its
        safe reply stays in the transcript but no longer counts as the message's reply, and
        the Slack placeholder it replaced is forgotten, so the retried turn answers anew.
        Returns the status it had (None: no such dead letter); only `dead` is retried."""
        async with self._transaction() as conn:
            row = await _one(conn, "SELECT status, tenant_id, session_id FROM dead_letters WHERE inbox_id = %s"
                             " FOR UPDATE", [inbox_id])
            if row is None or row["status"] != DEAD:
                return row["status"] if row else None
            now = now_iso()
            await conn.execute("UPDATE dead_letters SET status = %s, retries = retries + 1, decided_by = %s,"
                               " updated_at = %s WHERE inbox_id = %s", [RETRIED, actor, now, inbox_id])
            await conn.execute("UPDATE inbox SET status = 'received', attempts = 0, error = NULL, outcome = NULL,"
                               " updated_at = %s WHERE id = %s", [now, inbox_id])
            await conn.execute("UPDATE messages SET inbox_id = NULL WHERE inbox_id = %s AND role = 'assistant'",
                               [inbox_id])
            await conn.execute("UPDATE sessions SET metadata = (metadata::jsonb - %s::text)::text WHERE id = %s",
                               [placeholder_key(inbox_id), row["session_id"]])
            await _pg_audit(conn, row["tenant_id"], actor, "dlq_retry", inbox_id, {})
        return DEAD

    async def dead_letter_drop(self, inbox_id: str, actor: str, reason: str = "") -> str | None:
        """Mark a dead letter dropped: it is never retried, and kept for the audit trail.
        Returns the status it had (None: no such dead letter); only `dead` is dropped."""
        async with self._transaction() as conn:
            row = await _one(conn, "SELECT status, tenant_id FROM dead_letters WHERE inbox_id = %s FOR UPDATE",
                             [inbox_id])
            if row is None or row["status"] != DEAD:
                return row["status"] if row else None
            await conn.execute("UPDATE dead_letters SET status = %s, decided_by = %s, updated_at = %s"
                               " WHERE inbox_id = %s", [DROPPED, actor, now_iso(), inbox_id])
            await _pg_audit(conn, row["tenant_id"], actor, "dlq_drop", inbox_id, {"reason": reason} if reason else {})
        return DEAD

    # -- outbox rows given up ---------------------------------------------------------------
    async def outbox_give_up(self, outbox_id: int, error: str) -> None:
        """Count the last failed attempt of an outbox row and park it (`failed`), audited."""
        async with self._transaction() as conn:
            row = await _one(
                conn, "UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = NULL,"
                " status = 'failed', lease_until = NULL, leased_by = NULL WHERE id = %s"
                " RETURNING tenant_id, channel, attempts", [error, outbox_id])
            if row is not None:
                await _pg_audit(conn, row["tenant_id"] or "", SYSTEM_ACTOR, "outbox_dead_letter", outbox_ref(outbox_id),
                                {"channel": row["channel"], "attempts": row["attempts"], "error": error})

    async def outbox_dead_letters(self, status: str | None = DEAD, tenant_id: str | None = None) -> list[dict]:
        """Outbox rows given up (`dead`) or dropped, as dead letters: `status` is the DLQ's."""
        wanted = [s for s, dead in OUTBOX_DEAD_STATUS.items() if status is None or dead == status]
        if not wanted:
            return []
        sql, params = "SELECT * FROM outbox WHERE status = ANY(%s)", [wanted]
        if tenant_id is not None:
            sql += " AND tenant_id = %s"
            params.append(tenant_id)
        return [_outbox_dead_letter(r) for r in await self._rows(sql + " ORDER BY id", params)]

    async def outbox_dead_letter_get(self, outbox_id: int) -> dict | None:
        row = await self._row("SELECT * FROM outbox WHERE id = %s", [outbox_id])
        return _outbox_dead_letter(row) if row is not None else None

    async def outbox_dead_letter_retry(self, outbox_id: int, actor: str) -> str | None:
        """Put a given-up outbox row back in the queue, due now, its attempts reset: a running
        sender tries it at its next look. Returns the status it had as a dead letter (None: no
        such row; `pending` or `sent` for a row that is not one); only `dead` is retried."""
        return await self._outbox_decide(outbox_id, actor, "dlq_retry", {},
                                         "status = 'pending', attempts = 0, next_attempt_at = %s", [now_iso()])

    async def outbox_dead_letter_drop(self, outbox_id: int, actor: str, reason: str = "") -> str | None:
        """Give up an outbox row for good (`dropped`, kept for the audit trail). Returns the
        status it had, as `outbox_dead_letter_retry` does; only `dead` is dropped."""
        return await self._outbox_decide(outbox_id, actor, "dlq_drop", {"reason": reason} if reason else {},
                                         "status = 'dropped'", [])

    async def _outbox_decide(self, outbox_id: int, actor: str, action: str, data: dict, assignments: str,
                             params: list) -> str | None:
        async with self._transaction() as conn:
            row = await _one(conn, "SELECT status, tenant_id FROM outbox WHERE id = %s FOR UPDATE", [outbox_id])
            if row is None or row["status"] != "failed":
                return OUTBOX_DEAD_STATUS.get(row["status"], row["status"]) if row else None
            await conn.execute(f"UPDATE outbox SET {assignments} WHERE id = %s", [*params, outbox_id])
            await _pg_audit(conn, row["tenant_id"] or "", actor, action, outbox_ref(outbox_id), data)
        return DEAD


def _outbox_dead_letter(row: dict) -> dict:
    return {**row, "ref": outbox_ref(row["id"]), "payload": loads(row["payload"], {}),
            "dead_status": OUTBOX_DEAD_STATUS.get(row["status"], row["status"])}


__all__ = ["PgDeadLetterTables"]
