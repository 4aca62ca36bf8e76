"""Backend protocols: where orders, tickets and refunds really live.

Two implementations ship: the SQLite demo shop (`sqlite_demo.py`, the embedded default) and
an HTTP backend (`http.py`) that a team points at its own shop or helpdesk API. Both raise
`bot.hands.errors` types: `TransientError` for what is worth a retry, `ClientError` for what
is not, `NotFound` when there is no such record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class OrderBackend(Protocol):
    async def get_order(self, order_id: str) -> dict: ...

    async def orders_for_email(self, email: str) -> list[dict]: ...


class TicketBackend(Protocol):
    async def create_ticket(self, *, email: str, subject: str, body: str, priority: str,
                            idempotency_key: str) -> dict: ...


class RefundBackend(Protocol):
    async def refund(self, *, order_id: str, amount: float, reason: str, idempotency_key: str) -> dict: ...


@dataclass
class Backends:
    orders: OrderBackend
    tickets: TicketBackend
    refunds: RefundBackend

    async def close(self) -> None:
        for backend in {id(b): b for b in (self.orders, self.tickets, self.refunds)}.values():
            close = getattr(backend, "close", None)
            if close:
                await close()
