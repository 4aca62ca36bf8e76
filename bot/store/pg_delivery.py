"""`PgDeliveryTables`: the PostgreSQL side of what leaves Deskhand (delivery.py's tables): the
outbox, email threading keys and the Slack threads mirroring email conversations.

Each method has the name, parameters and return shape of the SQLite `Store`'s; `PgStore`
(postgres.py) inherits this class, which brings in the dead ends (pg_dead_letters.py) and the
shadow and replay reads (pg_shadow.py) too.

Several processes share one PostgreSQL database, so `outbox_due` *claims* what it returns: each
row gets a lease (`lease_until`, `leased_by`, migration m009) taken with `FOR UPDATE SKIP
LOCKED`, and no other worker is handed that row until the lease lapses or the row is marked
sent or failed. Lease times come from the database's clock, the one clock every worker shares.
A store that closes lets go of the rows it still holds; a sender that dies holding a lease
lets go when it lapses (`outbox_lease_s`). A claim takes at most `outbox_claim_max` rows, so one
sender never holds more than it can send within a lease.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

import psycopg

from bot.store.pg_base import PgBase
from bot.store.pg_dead_letters import PgDeadLetterTables
from bot.store.pg_shadow import PgShadowTables
from bot.store.rows import loads, now_iso

# The database's time as ISO-8601 UTC text, the form `now_iso()` writes: `lease_until` is only
# ever compared with times made by this same expression, so every worker reads one clock.
_DB_NOW = """to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
_DB_LEASE_END = ("""to_char((statement_timestamp() + make_interval(secs => %s)) AT TIME ZONE 'UTC',"""
                 """ 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')""")
_CLEAR_LEASE = "lease_until = NULL, leased_by = NULL"


def _with_payload(row: dict) -> dict:
    return {**row, "payload": loads(row["payload"], {})}


class PgDeliveryTables(PgDeadLetterTables, PgShadowTables, PgBase):
    # How long a claimed outbox row stays out of other workers' reach, and how many rows one
    # claim takes at most when the caller sets no limit (the Slack sender asks for all).
    outbox_lease_s: float = 300.0
    outbox_claim_max: int = 100
    _worker: str | None = None

    @property
    def outbox_worker(self) -> str:
        """Who this store claims outbox rows as: host, process and this store (`leased_by`)."""
        if self._worker is None:
            self._worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        return self._worker

    async def close(self) -> None:
        """Let go of the outbox rows this store claimed and has not finished (a sender stopped
        mid-batch), so the next worker sends them at once, then close the pool."""
        if self._worker is not None and not self.pool.closed:
            try:
                await self._execute(f"UPDATE outbox SET {_CLEAR_LEASE} WHERE leased_by = %s AND status = 'pending'",
                                    [self._worker])
            except psycopg.Error:  # the database is gone: the leases lapse by themselves
                pass
        await super().close()

    # -- email threads -------------------------------------------------------------------
    async def email_thread_lookup(self, keys: list[str], tenant_id: str) -> dict[str, str]:
        """The sessions that these thread keys (Message-IDs, `subject:` keys) belong to."""
        keys = [k for k in dict.fromkeys(keys) if k]
        if not keys:
            return {}
        rows = await self._rows("SELECT key, session_id FROM email_threads WHERE tenant_id = %s AND key = ANY(%s)",
                                [tenant_id, keys])
        return {r["key"]: r["session_id"] for r in rows}

    async def email_thread_record(self, keys: list[str], session_id: str, tenant_id: str) -> None:
        """Map a message's thread keys to its session. A Message-ID keeps its first session;
        a `subject:` key follows the newest conversation with that subject and address."""
        ts = now_iso()
        insert = "INSERT INTO email_threads (key, session_id, tenant_id, ts) VALUES (%s, %s, %s, %s) ON CONFLICT (key)"
        async with self._transaction() as conn:
            for key in dict.fromkeys(keys):
                if not key:
                    continue
                if key.startswith("subject:"):
                    sql = (f"{insert} DO UPDATE SET session_id = excluded.session_id,"
                           " tenant_id = excluded.tenant_id, ts = excluded.ts")
                else:
                    sql = f"{insert} DO NOTHING"
                await conn.execute(sql, [key, session_id, tenant_id, ts])

    async def email_threads_for(self, session_id: str) -> list[str]:
        rows = await self._rows("SELECT key FROM email_threads WHERE session_id = %s ORDER BY ts, key", [session_id])
        return [r["key"] for r in rows]

    # -- the Slack mirror of email conversations -------------------------------------------
    async def mirror_record(self, session_id: str, tenant_id: str, channel: str, thread_ts: str) -> None:
        """Remember the Slack thread mirroring an email session (the first one stays)."""
        await self._execute(
            "INSERT INTO mail_mirror (session_id, tenant_id, channel, thread_ts, ts) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING", [session_id, tenant_id, channel, thread_ts, now_iso()])

    async def mirror_thread(self, session_id: str) -> dict | None:
        return await self._row("SELECT * FROM mail_mirror WHERE session_id = %s", [session_id])

    async def thread_owner(self, session_id: str, tenant_id: str, channel: str,
                           thread_ts: str) -> tuple[bool, str | None]:
        """For a Slack thread, in one query: whether it is a Deskhand conversation (session
        `session_id` exists), and the email session it mirrors, if any."""
        row = await self._row(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = %s) AS known, (SELECT session_id FROM mail_mirror"
            " WHERE tenant_id = %s AND channel = %s AND thread_ts = %s) AS mirrored",
            [session_id, tenant_id, channel, thread_ts])
        return bool(row["known"]), row["mirrored"]

    async def mirror_session(self, tenant_id: str, channel: str, thread_ts: str) -> str | None:
        """The email session a Slack thread mirrors, if it mirrors one."""
        row = await self._row(
            "SELECT session_id FROM mail_mirror WHERE tenant_id = %s AND channel = %s AND thread_ts = %s",
            [tenant_id, channel, thread_ts])
        return row["session_id"] if row else None

    # -- outbox ------------------------------------------------------------------------
    # Statuses as in delivery.py: `pending`, `sent`, `failed` (a dead letter), `dropped`.
    async def outbox_add(
        self, tenant_id: str, channel: str, session_id: str, inbox_id: str, payload: dict,
        *, key: str | None = None, due_at: str | None = None,
    ) -> int:
        """Queue a delivery, due at `due_at` (now by default). With `key`, a second add with
        the same channel and key queues nothing and returns the first row's id (a reply
        delivered again is sent once, whichever worker delivers it)."""
        ts = now_iso()
        body = json.dumps({**payload, "key": key} if key else payload, default=str)
        async with self._transaction() as conn:
            if key:
                # A second worker adding the same key waits here for the first to commit.
                cur = await conn.execute(
                    "INSERT INTO processed_events (key, source, ts) VALUES (%s, 'outbox', %s)"
                    " ON CONFLICT DO NOTHING RETURNING key", [f"outbox:{channel}:{key}", ts])
                if await cur.fetchone() is None:
                    cur = await conn.execute(
                        "SELECT id FROM outbox WHERE channel = %s AND payload::jsonb ->> 'key' = %s"
                        " ORDER BY id LIMIT 1", [channel, key])
                    return (await cur.fetchone())["id"]
            cur = await conn.execute(
                "INSERT INTO outbox (tenant_id, channel, session_id, inbox_id, payload, status, attempts,"
                " next_attempt_at, created_at) VALUES (%s, %s, %s, %s, %s, 'pending', 0, %s, %s) RETURNING id",
                [tenant_id, channel, session_id, inbox_id, body, due_at or ts, ts])
            return (await cur.fetchone())["id"]

    async def outbox_due(self, channel: str | None = None, now: str | None = None,
                         limit: int | None = None) -> list[dict]:
        """Claim the pending rows due by `now`, oldest first, and return them: each is leased
        to this store for `outbox_lease_s`, so no other worker is handed it meanwhile."""
        where = "status = 'pending' AND next_attempt_at <= %s AND (lease_until IS NULL OR lease_until < " + _DB_NOW + ")"
        params: list[Any] = [self.outbox_lease_s, self.outbox_worker, now or now_iso()]
        if channel:
            where += " AND channel = %s"
            params.append(channel)
        params.append(min(limit, self.outbox_claim_max) if limit is not None else self.outbox_claim_max)
        rows = await self._rows(
            f"UPDATE outbox SET lease_until = {_DB_LEASE_END}, leased_by = %s WHERE id IN"
            f" (SELECT id FROM outbox WHERE {where} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *",
            params)
        return [_with_payload(r) for r in sorted(rows, key=lambda r: r["id"])]

    async def outbox_mark_sent(self, outbox_id: int, sent_at: str | None = None) -> None:
        await self._execute(f"UPDATE outbox SET status = 'sent', sent_at = %s, {_CLEAR_LEASE} WHERE id = %s",
                            [sent_at or now_iso(), outbox_id])

    async def outbox_mark_failed(self, outbox_id: int, error: str, next_attempt_at: str | None) -> None:
        """Count a failed attempt and let go of the row. `next_attempt_at=None` gives up:
        status `failed`, a dead letter (`outbox_give_up`, which audits it)."""
        if next_attempt_at is None:
            await self.outbox_give_up(outbox_id, error)
            return
        await self._execute(
            f"UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s, {_CLEAR_LEASE}"
            " WHERE id = %s", [error, next_attempt_at, outbox_id])

    async def outbox_due_now(self, channel: str) -> int:
        """Make every pending item of a channel due at once (a restart retries right away).
        A row another worker holds stays its own until its lease lapses."""
        return await self._execute("UPDATE outbox SET next_attempt_at = %s WHERE channel = %s AND status = 'pending'",
                                   [now_iso(), channel])

    async def outbox_requeue(self, outbox_id: int) -> bool:
        """Put a failed (or pending) item back in the queue, due now, with every attempt the
        policy allows ahead of it again. False if it was sent or dropped."""
        return await self._execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = %s WHERE id = %s"
            " AND status IN ('pending', 'failed')", [now_iso(), outbox_id]) == 1

    async def outbox_rows(self, status: str | None = None, channel: str | None = None) -> list[dict]:
        where, params = [], []
        if status:
            where.append("status = %s")
            params.append(status)
        if channel:
            where.append("channel = %s")
            params.append(channel)
        sql = "SELECT * FROM outbox" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        return [_with_payload(r) for r in await self._rows(sql, params)]


__all__ = ["PgDeliveryTables"]
