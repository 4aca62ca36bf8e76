"""The demo shop: orders, customers, refunds and tickets in a SQLite file, seeded from
`fixtures/shop.json`. It is the embedded default backend, so Deskhand runs with no server."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from bot.hands.errors import NotFound, NotRefundable


class DemoShop:
    def __init__(self, path: Path, seed_file: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.Lock()
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            if not self.db["orders"].exists():
                self._seed(json.loads(seed_file.read_text()))
        except BaseException:  # not a database, or the seed failed: nobody else will close it
            conn.close()
            raise

    def _seed(self, data: dict) -> None:
        with self.db.conn:
            self.db["customers"].insert_all(data["customers"], pk="email")
            self.db["orders"].insert_all(
                [{**o, "items": json.dumps(o["items"])} for o in data["orders"]], pk="order_id"
            )
            self.db["orders"].create_index(["email"])
            self.db["refunds"].create(
                {"refund_id": str, "order_id": str, "amount": float, "reason": str,
                 "status": str, "created_at": str, "idempotency_key": str}, pk="refund_id")
            self.db["refunds"].create_index(["idempotency_key"], unique=True)
            if data.get("refunds"):
                self.db["refunds"].insert_all(data["refunds"])
            self.db["tickets"].create(
                {"ticket_id": str, "email": str, "subject": str, "body": str, "priority": str,
                 "status": str, "created_at": str, "idempotency_key": str}, pk="ticket_id")
            self.db["tickets"].create_index(["idempotency_key"], unique=True)

    async def _run(self, fn, *args):
        def locked():
            with self._lock:
                return fn(*args)
        return await asyncio.to_thread(locked)

    def _order(self, order_id: str) -> dict:
        rows = list(self.db["orders"].rows_where("upper(order_id) = upper(?)", [order_id]))
        if not rows:
            raise NotFound(f"no order {order_id}")
        order = rows[0]
        order["items"] = json.loads(order["items"])
        refunds = list(self.db["refunds"].rows_where("order_id = ?", [order["order_id"]]))
        order["refunds"] = [{k: r[k] for k in ("refund_id", "amount", "status", "created_at")} for r in refunds]
        return order

    async def get_order(self, order_id: str) -> dict:
        return await self._run(self._order, order_id)

    async def orders_for_email(self, email: str) -> list[dict]:
        def find():
            ids = [r["order_id"] for r in self.db["orders"].rows_where(
                "lower(email) = lower(?)", [email], order_by="placed_at desc")]
            return [self._order(i) for i in ids]
        return await self._run(find)

    async def create_ticket(self, *, email: str, subject: str, body: str, priority: str,
                            idempotency_key: str) -> dict:
        def create():
            existing = list(self.db["tickets"].rows_where("idempotency_key = ?", [idempotency_key]))
            if existing:
                return existing[0]
            ticket_id = f"TCK-{self.db['tickets'].count + 1001}"
            row = {"ticket_id": ticket_id, "email": email, "subject": subject, "body": body,
                   "priority": priority, "status": "open",
                   "created_at": datetime.now(timezone.utc).isoformat(), "idempotency_key": idempotency_key}
            self.db["tickets"].insert(row)
            return row
        return await self._run(create)

    async def refund(self, *, order_id: str, amount: float, reason: str, idempotency_key: str) -> dict:
        def refund():
            existing = list(self.db["refunds"].rows_where("idempotency_key = ?", [idempotency_key]))
            if existing:
                return existing[0]
            order = self._order(order_id)
            already = sum(r["amount"] for r in order["refunds"] if r["status"] != "rejected")
            if amount <= 0 or amount + already > order["total"] + 1e-9:
                raise NotRefundable(f"refund of {amount:.2f} exceeds what is refundable on {order_id}")
            refund_id = f"RF-{self.db['refunds'].count + 5001}"
            row = {"refund_id": refund_id, "order_id": order["order_id"], "amount": round(amount, 2),
                   "reason": reason, "status": "issued",
                   "created_at": datetime.now(timezone.utc).isoformat(), "idempotency_key": idempotency_key}
            self.db["refunds"].insert(row)
            return row
        return await self._run(refund)

    def count(self, table: str) -> int:
        return self.db[table].count

    async def close(self) -> None:
        self.db.close()
