"""HTTP backends: a team's own shop or helpdesk API behind the same protocols.

Endpoints (JSON): `GET /orders/{id}`, `GET /orders?email=…`, `POST /tickets`,
`POST /refunds`. Writes carry an `Idempotency-Key` header. Status codes map to errors:
404 → NotFound, other 4xx → ClientError (never retried), 5xx and network failures →
TransientError (retried once, counted by the breaker).
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from bot.hands.errors import ClientError, NotFound, TransientError


class HttpBackend:
    def __init__(self, base_url: str, token: str = "", timeout_s: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _request(self, method: str, path: str, **kwargs) -> dict | list:
        try:
            async with self._http().request(method, self.base_url + path, **kwargs) as resp:
                if resp.status == 404:
                    raise NotFound(f"{method} {path}: not found")
                if 400 <= resp.status < 500:
                    raise ClientError(f"{method} {path}: HTTP {resp.status}")
                if resp.status >= 500:
                    raise TransientError(f"{method} {path}: HTTP {resp.status}")
                return await resp.json()
        except (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError) as exc:
            raise TransientError(f"{method} {path}: {type(exc).__name__}") from exc

    async def get_order(self, order_id: str) -> dict:
        return await self._request("GET", f"/orders/{quote(order_id, safe='')}")

    async def orders_for_email(self, email: str) -> list[dict]:
        result = await self._request("GET", "/orders", params={"email": email})
        return result.get("orders", []) if isinstance(result, dict) else result

    async def create_ticket(self, *, email: str, subject: str, body: str, priority: str,
                            idempotency_key: str) -> dict:
        return await self._request(
            "POST", "/tickets", json={"email": email, "subject": subject, "body": body, "priority": priority},
            headers={"Idempotency-Key": idempotency_key})

    async def refund(self, *, order_id: str, amount: float, reason: str, idempotency_key: str) -> dict:
        return await self._request(
            "POST", "/refunds", json={"order_id": order_id, "amount": amount, "reason": reason},
            headers={"Idempotency-Key": idempotency_key})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
