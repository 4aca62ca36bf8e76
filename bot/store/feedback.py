"""The store's feedback table: 👍/👎 on answers, and what went wrong with a 👎 (bot/feedback.py).

A mixin of `Store` (bot/store/sqlite.py), using its connection (`self.db`). `Store.add_feedback`
records the click; the reasons and comment from the 👎 modal are added to that row here,
masked like every stored text (bot/redact.py).
"""

from __future__ import annotations

from typing import Any

from bot.redact import mask_sensitive
from bot.store.rows import dumps, loads

# Inbox ids of answers someone marked 👎 and did not change to 👍 since (latest vote per person).
DOWNVOTED_INBOX_IDS = (
    "SELECT f.inbox_id FROM feedback f WHERE f.value = 'down' AND f.id ="
    " (SELECT max(g.id) FROM feedback g WHERE g.inbox_id = f.inbox_id AND g.user_id = f.user_id)")


class FeedbackTables:
    db: Any  # Store's connection

    def feedback_add_reasons(self, feedback_id: int, tenant_id: str, user_id: str, reasons: list[str],
                             comment: str) -> bool:
        """Attach the modal's answers to a 👎 of this tenant by this user. False if there is no
        such 👎 (another workspace's id, someone else's click, or a 👍)."""
        cur = self.db.execute(
            "UPDATE feedback SET reasons = ?, comment = ? WHERE id = ? AND tenant_id = ? AND user_id = ?"
            " AND value = 'down'",
            [dumps(reasons), mask_sensitive(comment), feedback_id, tenant_id, user_id])  # dumps masks too
        return cur.rowcount == 1

    def feedback_get(self, feedback_id: int) -> dict | None:
        for row in self.db["feedback"].rows_where("id = ?", [feedback_id]):
            return {**row, "reasons": loads(row.get("reasons"), [])}
        return None

    def replayable_turns(self, limit: int, tenant_id: str | None = None, downvoted: bool = False) -> list[dict]:
        """The latest `limit` answered inbox rows, oldest first: what `deskhand replay` re-plans
        or re-answers; with `downvoted`, only answers someone still marks 👎."""
        where, params = "outcome IS NOT NULL", []
        if tenant_id:
            where += " AND tenant_id = ?"
            params.append(tenant_id)
        if downvoted:
            where += f" AND id IN ({DOWNVOTED_INBOX_IDS})"
        rows = list(self.db["inbox"].rows_where(where, params, order_by="received_at desc", limit=limit))
        return list(reversed(rows))
