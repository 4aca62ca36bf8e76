"""`StoreOutbox`: the `OutboxStore` protocol over Deskhand's SQLite `outbox` table.

The table is shared by every surface that can fail to deliver (Slack posts too), so email
rows are `channel = 'email'` and their payload holds the serialised message (base64, since
the bytes may be 8-bit), its Message-ID, and the To and Subject for `deskhand mail outbox`.
Item ids are the table's row ids, as strings. Times go in as ISO 8601 UTC strings, the form
every other table uses.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser

from mailbridge.outbox import OutboxItem

CHANNEL = "email"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _headers(raw: bytes) -> dict[str, str]:
    head = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    return {"to": str(head.get("To", "")), "subject": str(head.get("Subject", ""))}


class StoreOutbox:
    """An `OutboxStore` over `bot.store.AsyncStore`."""

    def __init__(self, store) -> None:
        self.store = store

    async def outbox_add(self, item: OutboxItem) -> str:
        payload = {
            "raw": base64.b64encode(item.raw).decode("ascii"),
            "message_id": item.message_id,
            **_headers(item.raw),
        }
        row_id = await self.store.outbox_add(
            item.tenant_id, CHANNEL, item.session_id, item.inbox_id, payload, key=item.key or None,
            due_at=iso(item.next_attempt_at) if item.next_attempt_at else None,
        )
        return str(row_id)

    async def outbox_due(self, now: datetime, limit: int) -> list[OutboxItem]:
        rows = await self.store.outbox_due(CHANNEL, iso(now), limit=limit)
        return [item_from_row(row) for row in rows]

    async def outbox_mark_sent(self, item_id: str, sent_at: datetime) -> None:
        await self.store.outbox_mark_sent(int(item_id), iso(sent_at))

    async def outbox_mark_failed(self, item_id: str, error: str, next_attempt_at: datetime | None) -> None:
        await self.store.outbox_mark_failed(
            int(item_id), error, iso(next_attempt_at) if next_attempt_at is not None else None
        )


def item_from_row(row: dict) -> OutboxItem:
    payload = row["payload"]
    return OutboxItem(
        id=str(row["id"]),
        raw=base64.b64decode(payload["raw"]),
        message_id=payload.get("message_id", ""),
        session_id=row["session_id"] or "",
        tenant_id=row["tenant_id"] or "",
        inbox_id=row["inbox_id"] or "",
        key=payload.get("key") or "",
        attempts=row["attempts"] or 0,
        next_attempt_at=_when(row["next_attempt_at"]),
        created_at=_when(row["created_at"]) or datetime.now(timezone.utc),
    )
