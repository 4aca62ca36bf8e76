"""The store's dead-letter table: messages whose turn was started too often without finishing
(bot/dead_letters.py decides when; `deskhand dlq` lets an operator retry or drop them).

A mixin of `Store` (bot/store.py): it uses the store's connection (`self.db`) and `_row`. A row is `dead` when parked, `retried` once put back in the inbox, `dropped` when an
operator gave up on it; rows are never deleted, so the audit trail stays whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bot.slack.ids import placeholder_key
from bot.store.rows import dumps, now_iso

DEAD, RETRIED, DROPPED = "dead", "retried", "dropped"
SYSTEM_ACTOR = "deskhand"


class DeadLetterTables:
    db: Any  # Store's connection; `_row` is Store's too

    @contextmanager
    def _dead_letter_transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _dead_letter_audit(self, tenant_id: str, actor: str, action: str, target: str, data: dict) -> None:
        # Plain SQL: sqlite-utils' insert commits on its own, which would end the transaction.
        self.db.execute("INSERT INTO audit_log (ts, tenant_id, actor, action, target, data) VALUES (?, ?, ?, ?, ?, ?)",
                        [now_iso(), tenant_id, actor, action, target, dumps(data)])

    def dead_letter_add(self, inbox: dict, error: str) -> bool:
        """Park an inbox message. True when it became dead now; False when it already was
        (a restart while it was being dead-lettered) or an operator dropped it. A message
        that was retried and is poison again is parked again."""
        now = now_iso()
        with self._dead_letter_transaction():
            cur = self.db.execute(
                "INSERT INTO dead_letters (inbox_id, tenant_id, session_id, channel, status, attempts,"
                " error, dead_at, updated_at, decided_by, retries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', 0)"
                " ON CONFLICT (inbox_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,"
                " error = excluded.error, dead_at = excluded.dead_at, updated_at = excluded.updated_at"
                " WHERE dead_letters.status = ?",
                [inbox["id"], inbox["tenant_id"], inbox["session_id"], inbox["channel"], DEAD,
                 inbox["attempts"], error, now, now, RETRIED],
            )
            fresh = cur.rowcount == 1
            if fresh:
                self._dead_letter_audit(inbox["tenant_id"], SYSTEM_ACTOR, "dead_letter", inbox["id"],
                           {"attempts": inbox["attempts"], "error": error})
        return fresh

    def dead_letter_get(self, inbox_id: str) -> dict | None:
        """One dead letter with its message's envelope and inbox status, or None."""
        return self._row(
            "SELECT d.*, i.envelope, i.status AS inbox_status, i.received_at FROM dead_letters d"
            " JOIN inbox i ON i.id = d.inbox_id WHERE d.inbox_id = ?", [inbox_id])

    def dead_letters(self, status: str | None = DEAD, tenant_id: str | None = None) -> list[dict]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        sql = "SELECT * FROM dead_letters" + (f" WHERE {' AND '.join(where)}" if where else "")
        cur = self.db.execute(sql + " ORDER BY dead_at, inbox_id", params)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def dead_letter_count(self, tenant_id: str | None = None) -> int:
        """Messages parked now (status dead), for one tenant or all (the metrics gauge)."""
        if tenant_id is None:
            return self.db.execute("SELECT count(*) FROM dead_letters WHERE status = ?", [DEAD]).fetchone()[0]
        return self.db.execute("SELECT count(*) FROM dead_letters WHERE status = ? AND tenant_id = ?",
                               [DEAD, tenant_id]).fetchone()[0]

    def dead_letter_retry(self, inbox_id: str, actor: str) -> str | None:
        """Put a dead letter back in the inbox as if just received (attempts reset). Its
        safe reply stays in the transcript but no longer counts as the message's reply, and
        the Slack placeholder it replaced is forgotten, so the retried turn answers anew.
        Returns the status it had (None: no such dead letter); only `dead` is retried."""
        with self._dead_letter_transaction():
            row = self._row("SELECT status, tenant_id, session_id FROM dead_letters WHERE inbox_id = ?", [inbox_id])
            if row is None or row["status"] != DEAD:
                return row["status"] if row else None
            now = now_iso()
            self.db.execute("UPDATE dead_letters SET status = ?, retries = retries + 1, decided_by = ?,"
                            " updated_at = ? WHERE inbox_id = ?", [RETRIED, actor, now, inbox_id])
            self.db.execute("UPDATE inbox SET status = 'received', attempts = 0, error = NULL, outcome = NULL,"
                            " updated_at = ? WHERE id = ?", [now, inbox_id])
            self.db.execute("UPDATE messages SET inbox_id = NULL WHERE inbox_id = ? AND role = 'assistant'",
                            [inbox_id])
            self.db.execute("UPDATE sessions SET metadata = json_remove(metadata, ?) WHERE id = ?",
                            [f'$."{placeholder_key(inbox_id)}"', row["session_id"]])
            self._dead_letter_audit(row["tenant_id"], actor, "dlq_retry", inbox_id, {})
        return DEAD

    def dead_letter_drop(self, inbox_id: str, actor: str, reason: str = "") -> str | None:
        """Mark a dead letter dropped: it is never retried, and kept for the audit trail.
        Returns the status it had (None: no such dead letter); only `dead` is dropped."""
        with self._dead_letter_transaction():
            row = self._row("SELECT status, tenant_id FROM dead_letters WHERE inbox_id = ?", [inbox_id])
            if row is None or row["status"] != DEAD:
                return row["status"] if row else None
            self.db.execute("UPDATE dead_letters SET status = ?, decided_by = ?, updated_at = ? WHERE inbox_id = ?",
                            [DROPPED, actor, now_iso(), inbox_id])
            self._dead_letter_audit(row["tenant_id"], actor, "dlq_drop", inbox_id, {"reason": reason} if reason else {})
        return DEAD


__all__ = ["DeadLetterTables", "DEAD", "RETRIED", "DROPPED"]
