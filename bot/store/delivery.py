"""The store's tables for what leaves Deskhand: the outbox (every surface's deliveries that
can fail), email threading keys, and the Slack threads mirroring email conversations.

A mixin of `Store` (bot/store/sqlite.py): it uses the store's connection (`self.db`) and `_row`.
"""

from __future__ import annotations

import json
from typing import Any

from bot.store.rows import loads, now_iso


class DeliveryTables:
    db: Any  # Store's connection; `_row` and `outbox_give_up` (bot/store/dead_letters.py) are Store's too

    # -- email threads -------------------------------------------------------------------
    def email_thread_lookup(self, keys: list[str], tenant_id: str) -> dict[str, str]:
        """The sessions that these thread keys (Message-IDs, `subject:` keys) belong to."""
        keys = [k for k in dict.fromkeys(keys) if k]
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self.db.execute(
            f"SELECT key, session_id FROM email_threads WHERE tenant_id = ? AND key IN ({marks})",
            [tenant_id, *keys],
        ).fetchall()
        return dict(rows)

    def email_thread_record(self, keys: list[str], session_id: str, tenant_id: str) -> None:
        """Map a message's thread keys to its session. A Message-ID keeps its first session;
        a `subject:` key follows the newest conversation with that subject and address."""
        ts = now_iso()
        keys = [k for k in dict.fromkeys(keys) if k]
        sql = "INTO email_threads (key, session_id, tenant_id, ts) VALUES (?, ?, ?, ?)"
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for key in keys:
                verb = "INSERT OR REPLACE" if key.startswith("subject:") else "INSERT OR IGNORE"
                self.db.execute(f"{verb} {sql}", [key, session_id, tenant_id, ts])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def email_threads_for(self, session_id: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT key FROM email_threads WHERE session_id = ? ORDER BY ts, key", [session_id]).fetchall()]

    # -- the Slack mirror of email conversations -------------------------------------------
    def mirror_record(self, session_id: str, tenant_id: str, channel: str, thread_ts: str) -> None:
        """Remember the Slack thread mirroring an email session (the first one stays)."""
        self.db.execute(
            "INSERT OR IGNORE INTO mail_mirror (session_id, tenant_id, channel, thread_ts, ts) VALUES (?, ?, ?, ?, ?)",
            [session_id, tenant_id, channel, thread_ts, now_iso()])

    def mirror_thread(self, session_id: str) -> dict | None:
        return self._row("SELECT * FROM mail_mirror WHERE session_id = ?", [session_id])

    def thread_owner(self, session_id: str, tenant_id: str, channel: str, thread_ts: str) -> tuple[bool, str | None]:
        """For a Slack thread, in one query: whether it is a Deskhand conversation (session
        `session_id` exists), and the email session it mirrors, if any."""
        known, mirrored = self.db.execute(
            "SELECT EXISTS(SELECT 1 FROM sessions WHERE id = ?), (SELECT session_id FROM mail_mirror"
            " WHERE tenant_id = ? AND channel = ? AND thread_ts = ?)",
            [session_id, tenant_id, channel, thread_ts]).fetchone()
        return bool(known), mirrored

    def mirror_session(self, tenant_id: str, channel: str, thread_ts: str) -> str | None:
        """The email session a Slack thread mirrors, if it mirrors one."""
        row = self.db.execute(
            "SELECT session_id FROM mail_mirror WHERE tenant_id = ? AND channel = ? AND thread_ts = ?",
            [tenant_id, channel, thread_ts]).fetchone()
        return row[0] if row else None

    # -- outbox ------------------------------------------------------------------------
    # Statuses: `pending` (due at next_attempt_at), `sent`, `failed` (given up after the last
    # attempt bot/outbox_policy.py allows: a dead letter, in `deskhand dlq list`, until a retry
    # puts it back) and `dropped` (an operator gave up on it; bot/store/dead_letters.py).
    def outbox_add(
        self, tenant_id: str, channel: str, session_id: str, inbox_id: str, payload: dict,
        *, key: str | None = None, due_at: str | None = None,
    ) -> int:
        """Queue a delivery, due at `due_at` (now by default). With `key`, a second add with
        the same channel and key queues nothing and returns the first row's id (a reply
        delivered again is sent once)."""
        ts = now_iso()
        body = json.dumps({**payload, "key": key} if key else payload, default=str)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            fresh = True
            if key:
                fresh = self.db.execute(
                    "INSERT OR IGNORE INTO processed_events (key, source, ts) VALUES (?, 'outbox', ?)",
                    [f"outbox:{channel}:{key}", ts],
                ).rowcount == 1
            if fresh:
                row_id = self.db.execute(
                    "INSERT INTO outbox (tenant_id, channel, session_id, inbox_id, payload, status,"
                    " attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                    [tenant_id, channel, session_id, inbox_id, body, due_at or ts, ts],
                ).lastrowid
            else:
                row_id = self.db.execute(
                    "SELECT id FROM outbox WHERE channel = ? AND json_extract(payload, '$.key') = ?"
                    " ORDER BY id LIMIT 1", [channel, key],
                ).fetchone()[0]
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return row_id

    def outbox_due(self, channel: str | None = None, now: str | None = None, limit: int | None = None) -> list[dict]:
        sql = "status = 'pending' AND next_attempt_at <= ?"
        params: list[Any] = [now or now_iso()]
        if channel:
            sql += " AND channel = ?"
            params.append(channel)
        return [{**r, "payload": loads(r["payload"], {})}
                for r in self.db["outbox"].rows_where(sql, params, order_by="id", limit=limit)]

    def outbox_mark_sent(self, outbox_id: int, sent_at: str | None = None) -> None:
        self.db.execute("UPDATE outbox SET status = 'sent', sent_at = ?, lease_until = NULL, leased_by = NULL"
                        " WHERE id = ?", [sent_at or now_iso(), outbox_id])

    def outbox_mark_failed(self, outbox_id: int, error: str, next_attempt_at: str | None) -> None:
        """Count a failed attempt. `next_attempt_at=None` gives up: status `failed`, a dead
        letter (`Store.outbox_give_up`, which audits it)."""
        if next_attempt_at is None:
            self.outbox_give_up(outbox_id, error)
            return
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, lease_until = NULL,"
            " leased_by = NULL WHERE id = ?",
            [error, next_attempt_at, outbox_id],
        )

    def outbox_due_now(self, channel: str) -> int:
        """Make every pending item of a channel due at once (a restart retries right away)."""
        return self.db.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE channel = ? AND status = 'pending'",
            [now_iso(), channel]).rowcount

    def outbox_requeue(self, outbox_id: int) -> bool:
        """Put a failed (or pending) item back in the queue, due now, with every attempt the
        policy allows ahead of it again. False if it was sent or dropped."""
        return self.db.execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE id = ?"
            " AND status IN ('pending', 'failed')", [now_iso(), outbox_id]).rowcount == 1

    def outbox_rows(self, status: str | None = None, channel: str | None = None) -> list[dict]:
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if channel:
            where.append("channel = ?")
            params.append(channel)
        rows = self.db["outbox"].rows_where(" AND ".join(where) or None, params, order_by="id")
        return [{**r, "payload": loads(r["payload"], {})} for r in rows]
