"""A team's shop/helpdesk API, served for real on 127.0.0.1, whose faults tests script.

It speaks the protocol of bot/hands/backends/http.py. Each route answers from a queue of
behaviours ("ok", "hang", 503, 400, or 1.5 for an
answer after 1.5 s, …); the last behaviour repeats. Every request is recorded, and `wait_for_requests` lets a test wait on that observable state.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

from aiohttp import web

ORDER = {"order_id": "A-2001", "email": "pat@example.com", "status": "shipped", "total": 42.0,
         "currency": "USD", "placed_at": "2026-11-18", "shipped_at": "2026-11-19", "eta": "2026-11-23",
         "carrier": "UPS", "tracking_number": "1Z0000000000000001", "items": [], "refunds": []}


class ShopServer:
    def __init__(self):
        self.behaviours: dict[str, list] = defaultdict(lambda: ["ok"])
        self.requests: list[dict] = []
        self.tickets: dict[str, dict] = {}
        self.answered_at: list[float] = []  # when each slow (float) behaviour answered
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, route: str, *behaviours) -> None:
        self.behaviours[route] = list(behaviours)

    def release_hung(self) -> None:
        self._release.set()

    async def _behaviour(self, route: str):
        queue = self.behaviours[route]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def _record(self, request: web.Request, route: str, body=None) -> None:
        async with self._changed:
            self.requests.append({"route": route, "path": request.path, "body": body,
                                  "headers": dict(request.headers)})
            self._changed.notify_all()

    async def wait_for_requests(self, n: int, route: str | None = None, timeout: float = 10) -> None:
        def enough():
            return len([r for r in self.requests if route is None or r["route"] == route]) >= n
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(enough), timeout)

    async def _answer(self, route: str, payload):
        behaviour = await self._behaviour(route)
        if behaviour == "hang":
            await self._release.wait()
            return web.json_response(payload)
        if isinstance(behaviour, float):  # a slow backend: answers after that many seconds
            await asyncio.sleep(behaviour)
            self.answered_at.append(time.perf_counter())
            return web.json_response(payload)
        if isinstance(behaviour, int):
            return web.json_response({"error": "scripted"}, status=behaviour)
        return web.json_response(payload)

    async def order(self, request: web.Request):
        await self._record(request, "order")
        oid = request.match_info["order_id"]
        if oid != ORDER["order_id"]:
            return web.json_response({"error": "not found"}, status=404)
        return await self._answer("order", ORDER)

    async def orders(self, request: web.Request):
        await self._record(request, "orders")
        email = request.query.get("email", "")
        return await self._answer("orders", {"orders": [ORDER] if email == ORDER["email"] else []})

    async def ticket(self, request: web.Request):
        body = await request.json()
        await self._record(request, "ticket", body)
        key = request.headers.get("Idempotency-Key", "")
        ticket = self.tickets.setdefault(key, {"ticket_id": f"HD-{len(self.tickets) + 1}", "status": "open"})
        return await self._answer("ticket", ticket)

    async def refund(self, request: web.Request):
        body = await request.json()
        await self._record(request, "refund", body)
        return await self._answer("refund", {"refund_id": "R-1", "order_id": body["order_id"],
                                             "amount": body["amount"], "status": "issued"})

    async def start(self) -> "ShopServer":
        app = web.Application()
        app.router.add_get("/orders/{order_id}", self.order)
        app.router.add_get("/orders", self.orders)
        app.router.add_post("/tickets", self.ticket)
        app.router.add_post("/refunds", self.refund)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner:
            await self._runner.cleanup()


def tenants_yaml(shop_url: str, timeout_s: float = 5.0) -> str:
    return json.dumps({"tenants": {
        "T_HTTP": {"name": "Shop over HTTP", "approvers": ["U_LEAD"],
                   "backend": {"base_url": shop_url, "token": "shop-token", "timeout_s": timeout_s}},
        "T_DEMO": {"approvers": ["U_LEAD"]},
    }})
