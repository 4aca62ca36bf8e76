"""The store's dead ends, which `deskhand dlq` lists, retries and drops:

- the dead-letter table: messages whose turn was started too often without finishing
  (bot/dead_letters.py decides when). A row is `dead` when parked, `retried` once put back in
  the inbox, `dropped` when an operator gave up on it;
- outbox rows given up (every channel's deliveries, after the last attempt the outbox's
  policy allows, bot/outbox_policy.py): the row itself is parked, status `failed`, and is
  named `outbox:<id>` to the DLQ. A retry puts it back `pending`, attempts reset; a drop
  makes it `dropped`.

A mixin of `Store` (bot/store/sqlite.py): it uses the store's connection (`self.db`) and `_row`.
Rows are never deleted, and each decision is in the audit log, so the trail stays whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bot.slack_ids import placeholder_key
from bot.store.rows import dumps, loads, now_iso

DEAD, RETRIED, DROPPED = "dead", "retried", "dropped"
SYSTEM_ACTOR = "deskhand"
OUTBOX_PREFIX = "outbox:"  # how the DLQ names an outbox row: outbox:<row id>
# An outbox row's status as a dead letter: `failed` is parked, `dropped` given up for good.
OUTBOX_DEAD_STATUS = {"failed": DEAD, "dropped": DROPPED}


def outbox_ref(outbox_id: int) -> str:
    return f"{OUTBOX_PREFIX}{outbox_id}"


def outbox_id_of(ref: str) -> int | None:
    """The outbox row id in a DLQ name `outbox:<id>`; None for anything else (an inbox id)."""
    number = ref.removeprefix(OUTBOX_PREFIX)
    return int(number) if ref.startswith(OUTBOX_PREFIX) and number.isdigit() else None


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

    # -- outbox rows given up ---------------------------------------------------------------
    def outbox_give_up(self, outbox_id: int, error: str) -> None:
        """Count the last failed attempt of an outbox row and park it (`failed`), audited."""
        with self._dead_letter_transaction():
            self.db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = NULL,"
                            " status = 'failed', lease_until = NULL, leased_by = NULL WHERE id = ?", [error, outbox_id])
            row = self._row("SELECT tenant_id, channel, attempts FROM outbox WHERE id = ?", [outbox_id])
            if row is not None:
                self._dead_letter_audit(row["tenant_id"] or "", SYSTEM_ACTOR, "outbox_dead_letter",
                                        outbox_ref(outbox_id),
                                        {"channel": row["channel"], "attempts": row["attempts"], "error": error})

    def outbox_dead_letters(self, status: str | None = DEAD, tenant_id: str | None = None) -> list[dict]:
        """Outbox rows given up (`dead`) or dropped, as dead letters: `status` is the DLQ's."""
        wanted = [s for s, dead in OUTBOX_DEAD_STATUS.items() if status is None or dead == status]
        if not wanted:
            return []
        where, params = [f"status IN ({','.join('?' * len(wanted))})"], list(wanted)
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        rows = self.db["outbox"].rows_where(" AND ".join(where), params, order_by="id")
        return [_outbox_dead_letter(r) for r in rows]

    def outbox_dead_letter_get(self, outbox_id: int) -> dict | None:
        row = self._row("SELECT * FROM outbox WHERE id = ?", [outbox_id])
        return _outbox_dead_letter(row) if row is not None else None

    def outbox_dead_letter_retry(self, outbox_id: int, actor: str) -> str | None:
        """Put a given-up outbox row back in the queue, due now, its attempts reset: the
        running sender tries it at its next look. Returns the status it had as a dead letter
        (None: no such row; `pending` or `sent` for a row that is not one); only `dead` is retried."""
        return self._outbox_decide(outbox_id, actor, "dlq_retry", {},
                                   "status = 'pending', attempts = 0, next_attempt_at = ?", [now_iso()])

    def outbox_dead_letter_drop(self, outbox_id: int, actor: str, reason: str = "") -> str | None:
        """Give up an outbox row for good (`dropped`, kept for the audit trail). Returns the
        status it had, as `outbox_dead_letter_retry` does; only `dead` is dropped."""
        return self._outbox_decide(outbox_id, actor, "dlq_drop", {"reason": reason} if reason else {},
                                   "status = 'dropped'", [])

    def _outbox_decide(self, outbox_id: int, actor: str, action: str, data: dict, assignments: str,
                       params: list) -> str | None:
        with self._dead_letter_transaction():
            row = self._row("SELECT status, tenant_id FROM outbox WHERE id = ?", [outbox_id])
            if row is None or row["status"] != "failed":
                return OUTBOX_DEAD_STATUS.get(row["status"], row["status"]) if row else None
            self.db.execute(f"UPDATE outbox SET {assignments} WHERE id = ?", [*params, outbox_id])
            self._dead_letter_audit(row["tenant_id"] or "", actor, action, outbox_ref(outbox_id), data)
        return DEAD


def _outbox_dead_letter(row: dict) -> dict:
    return {**row, "ref": outbox_ref(row["id"]), "payload": loads(row["payload"], {}),
            "dead_status": OUTBOX_DEAD_STATUS.get(row["status"], row["status"])}


__all__ = ["DeadLetterTables", "DEAD", "RETRIED", "DROPPED", "outbox_ref", "outbox_id_of"]
