"""An in-process Slack for Deskhand's end-to-end tests.

One aiohttp server on 127.0.0.1 serves the Web API (``/api/<method>``), the Socket Mode
WebSocket (``/link/?ticket=…``) and ``response_url`` webhooks (``/webhook/<id>``), so the real
slack-sdk ``AsyncWebClient`` and slack-bolt ``AsyncSocketModeHandler`` talk to it as to Slack.
A workspace switched to HTTP mode (``use_request_url``) gets its events, clicks and slash
commands POSTed to the app's Request URL instead, signed with its signing secret as Slack
signs them, with ``X-Slack-Retry-*`` headers on a redelivery; the app's answer (2xx within
3 s) is the ack. The wire behaviour follows ``SLACK_PROTOCOL.md``; workspaces, Web API
semantics and payloads live in ``slack_emulator_payloads.py``. This module is over 400 lines
because every transport records into, and is waited on through, the same state.

    async with SlackEmulator() as emu:
        app = AsyncApp(client=AsyncWebClient(token=emu.team.bot_token, base_url=emu.api_url))
        handler = AsyncSocketModeHandler(app, app_token=emu.team.app_token)
        await handler.connect_async()
        envelope_id = await emu.push_event(emu.team, emu.mention(emu.team, "U1", "C1", "hi"))
        await emu.wait_for_ack(envelope_id)
        await handler.close_async()

Synchronisation never sleeps: every recorded change wakes ``wait_for`` and its friends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from slack_emulator_payloads import PayloadBuilders, SlackApiFailure, Workspace, event_callback, slack_id

__all__ = ["Call", "Delivery", "SlackEmulator", "Workspace", "slack_signature"]

SCOPES = ("app_mentions:read,channels:history,chat:write,commands,im:history,reactions:write,"
          "usergroups:read,users:read,users:read.email")  # auth.test's x-oauth-scopes header
ACK_TIMEOUT_S = 3.0  # Slack stops waiting for a Request URL's answer after this, and retries
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def slack_signature(signing_secret: str, timestamp: str, body: str) -> str:
    """``X-Slack-Signature``: ``v0=`` and the hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    digest = hmac.new(signing_secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


@dataclass
class Call:
    """One Web API (or ``response_url``) call as the emulator received it."""

    method: str
    team: str | None
    params: dict[str, Any]
    status: int
    response: dict[str, Any]
    time: float = field(default_factory=time.monotonic)


@dataclass
class Delivery:
    """One POST to an app's Request URL (HTTP mode) and what the app answered."""

    url: str
    headers: dict[str, str]  # as sent: signature, timestamp, retry headers
    body: str
    status: int | None = None  # None: no answer within ACK_TIMEOUT_S, or no connection
    response: str = ""
    # Why Slack would retry it (its X-Slack-Retry-Reason): http_timeout, connection_failed,
    # http_error (not 2xx); empty when acked.
    failure: str = ""
    time: float = 0.0  # time.monotonic() when answered (or given up)

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Fault:
    status: int
    error: str
    retry_after: int | None
    times: int


@dataclass
class _Connection:
    team: str
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None


class SlackEmulator(PayloadBuilders):
    """Slack for one or more workspaces; by default one, ``T0ACME0001``."""

    def __init__(self, workspaces: list[Workspace] | None = None, *, send_hello: bool = True):
        self.workspaces = {ws.team_id: ws for ws in workspaces or [Workspace("T0ACME0001", name="Acme")]}
        self.send_hello = send_hello
        self.calls: list[Call] = []
        self.envelopes: dict[str, dict[str, Any]] = {}  # every envelope pushed, by envelope_id
        self.acks: dict[str, dict[str, Any] | None] = {}  # envelope_id -> ack payload, None if empty
        self.ack_times: dict[str, float] = {}  # envelope_id -> time.monotonic() of its first ack
        self.webhooks: dict[str, list[dict[str, Any]]] = {}  # response_url id -> bodies POSTed
        self.deliveries: dict[str, Delivery] = {}  # HTTP mode: delivery id -> the POST and its answer
        self.connections_opened = 0
        self.port = 0
        self._connections: list[_Connection] = []
        self._queued: dict[str, list[dict[str, Any]]] = {}  # team -> envelopes awaiting a socket
        self._tickets: dict[str, str] = {}  # Socket Mode URL ticket -> team
        self._faults: dict[str, list[_Fault]] = {}
        self._holds: list[tuple[str, Callable[[dict[str, Any]], bool], asyncio.Event]] = []
        self._hooks: dict[str, tuple[str, str | None, str | None]] = {}  # id -> team, channel, ts
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None  # HTTP mode: POSTs to Request URLs
        self._sending: set[asyncio.Task] = set()

    # ---------------------------------------------------------------- life cycle
    async def start(self) -> SlackEmulator:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        app.router.add_post("/webhook/{hook_id}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None
        for conn in list(self._connections):
            await conn.ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackEmulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # ---------------------------------------------------------------- workspaces
    def add_workspace(self, ws: Workspace) -> Workspace:
        self.workspaces[ws.team_id] = ws
        return ws

    @property
    def team(self) -> Workspace:
        """The first workspace, for tests that need only one."""
        return next(iter(self.workspaces.values()))

    def workspace(self, team: str | Workspace) -> Workspace:
        return team if isinstance(team, Workspace) else self.workspaces[team]

    # ---------------------------------------------------------------- recording and waiting
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[SlackEmulator], Any], timeout: float = 5) -> Any:
        """Wait until ``predicate(emu)`` is truthy and return its value."""
        try:
            async with asyncio.timeout(timeout):
                while not (result := predicate(self)):
                    await self._changed.wait()
                return result
        except TimeoutError:
            recent = [c.method for c in self.calls[-10:]]
            raise TimeoutError(f"condition not met within {timeout}s; last calls: {recent}") from None

    async def wait_for_call(self, method: str, predicate: Callable[[Call], bool] | None = None,
                            count: int = 1, timeout: float = 5) -> Call:
        """Wait for ``count`` calls to ``method`` matching ``predicate``; return the count-th."""
        def matching(emu: SlackEmulator) -> list[Call]:
            found = [c for c in emu.calls_to(method) if predicate is None or predicate(c)]
            return found if len(found) >= count else []
        return (await self.wait_for(matching, timeout))[count - 1]

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5) -> dict[str, Any] | None:
        """Wait until the app acks ``envelope_id``; return the ack's payload (None if empty)."""
        await self.wait_for(lambda emu: envelope_id in emu.acks, timeout)
        return self.acks[envelope_id]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def messages(self, channel: str, team: str | Workspace | None = None) -> list[dict[str, Any]]:
        """Every message in ``channel`` (thread replies included), oldest first."""
        spaces = [self.workspace(team)] if team else self.workspaces.values()
        return [dict(m) for ws in spaces for m in ws.history.get(channel, [])]

    def message(self, channel: str, ts: str, team: str | Workspace | None = None) -> dict[str, Any] | None:
        return next((m for m in self.messages(channel, team) if m["ts"] == ts), None)

    # ---------------------------------------------------------------- Web API
    def fail_next(self, method: str, *, status: int | None = None, error: str | None = None,
                  retry_after: int | None = None, times: int = 1) -> None:
        """Make the next ``times`` calls to ``method`` fail. With no ``error`` it is HTTP 429
        ``ratelimited`` with ``Retry-After`` (1 s unless given); with only an ``error`` it is
        HTTP 200 ``{"ok": false, "error": error}``; a 5xx ``status`` says ``internal_error``."""
        status = status or (200 if error else 429)
        error = error or {429: "ratelimited"}.get(status, "internal_error" if status >= 500 else "request_failed")
        if status == 429 and retry_after is None:
            retry_after = 1
        self._faults.setdefault(method, []).append(_Fault(status, error, retry_after, times))

    def hold(self, method: str, predicate: Callable[[dict[str, Any]], bool]) -> asyncio.Event:
        """Hold calls to ``method`` whose params match ``predicate`` (a slow Slack) until the
        returned event is set; other calls are answered meanwhile."""
        gate = asyncio.Event()
        self._holds.append((method, predicate, gate))
        return gate

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        queue[0].times -= 1
        return queue.pop(0) if queue[0].times <= 0 else queue[0]

    def _team_for_token(self, token: str) -> tuple[Workspace | None, str]:
        for ws in self.workspaces.values():
            if token in (ws.bot_token, ws.app_token):
                return ws, "app" if token == ws.app_token else "bot"
        return None, ""

    async def _api(self, request: web.Request) -> web.Response:
        """Parse a call as the SDK sends it (query string, form or JSON body; the token in
        ``Authorization: Bearer``), check the token, apply any fault, then run the method."""
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            params.update(await request.json() if request.content_type == "application/json"
                          else await request.post())
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else params.pop("token", "")
        for held, predicate, gate in self._holds:
            if held == method and predicate(params):
                await gate.wait()
        ws, kind = self._team_for_token(token)
        name = "api_" + method.replace(".", "_")
        status, headers = 200, {}
        try:
            if method != "apps.connections.open" and not hasattr(Workspace, name):
                raise SlackApiFailure("unknown_method")
            if not token:
                raise SlackApiFailure("not_authed")
            if ws is None:
                raise SlackApiFailure("invalid_auth")
            if (kind == "app") != (method == "apps.connections.open"):
                raise SlackApiFailure("not_allowed_token_type")
            if fault := self._take_fault(method):
                status = fault.status
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                raise SlackApiFailure(fault.error)
            result = self._open_connection(ws) if kind == "app" else getattr(ws, name)(params)
            body = {"ok": True, **result}
        except SlackApiFailure as failure:
            body = {"ok": False, "error": failure.args[0]}
        if method == "auth.test" and body["ok"]:
            headers["x-oauth-scopes"] = ws.scopes or SCOPES
        self.calls.append(Call(method, ws.team_id if ws else None, params, status, body))
        self._notify()
        return web.json_response(body, status=status, headers=headers)

    def _open_connection(self, ws: Workspace) -> dict[str, Any]:
        """apps.connections.open: a one-time WebSocket URL for the app token's workspace."""
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = ws.team_id
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={ws.app_id}"}

    # ---------------------------------------------------------------- response_url
    def response_url(self, team: str, channel: str | None = None, message_ts: str | None = None) -> str:
        """A new ``response_url``; with a message, POSTs to it may replace or delete that message."""
        hook_id = secrets.token_hex(12)
        self._hooks[hook_id] = (team, channel, message_ts)
        return f"{self.base_url}/webhook/{hook_id}"

    async def _webhook(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook_id"]
        if hook_id not in self._hooks:
            return web.json_response({"ok": False, "error": "no_service"}, status=404)
        body = await request.json()
        team, channel, message_ts = self._hooks[hook_id]
        self.workspaces[team].apply_response_url(channel, message_ts, body)
        self.webhooks.setdefault(hook_id, []).append(body)
        self.calls.append(Call("response_url", team, {"hook_id": hook_id, **body}, 200, {"ok": True}))
        self._notify()
        return web.json_response({"ok": True})

    # ---------------------------------------------------------------- Socket Mode
    @property
    def connection_count(self) -> int:
        """Socket Mode connections open now, all workspaces together."""
        return len(self._connections)

    def _conns(self, team: str | Workspace | None) -> list[_Connection]:
        team_id = self.workspace(team).team_id if team else None
        return [c for c in self._connections if team_id in (None, c.team)]

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        team = self._tickets.pop(request.query.get("ticket", ""), None)  # each URL works once
        if team is None:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        ws = web.WebSocketResponse()  # autoping=True echoes the client's sdk-ping-pong payloads
        await ws.prepare(request)
        conn = _Connection(team, ws, request.transport)
        self._connections.append(conn)
        self.connections_opened += 1
        self._notify()
        try:
            if self.send_hello:
                await ws.send_json({"type": "hello", "num_connections": len(self._conns(team)),
                                    "debug_info": {"host": "applink-1", "build_number": 10,
                                                   "approximate_connection_time": 18060},
                                    "connection_info": {"app_id": self.workspaces[team].app_id}})
            for envelope in self._queued.pop(team, []):
                await self._deliver(team, envelope)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_frame(msg.data)
        finally:
            self._connections.remove(conn)
            self._notify()
        return ws

    def _on_frame(self, data: str) -> None:
        frame = json.loads(data)
        if "envelope_id" in frame:  # an ack: {"envelope_id": …, "payload"?: …}
            self.acks[frame["envelope_id"]] = frame.get("payload")
            self.ack_times.setdefault(frame["envelope_id"], time.monotonic())
            self._notify()

    async def _deliver(self, team: str, envelope: dict[str, Any]) -> None:
        """Send to the newest open connection of the team, or queue until one opens."""
        for conn in reversed(self._conns(team)):
            if not conn.ws.closed:
                try:
                    await conn.ws.send_str(json.dumps(envelope))
                    return
                except ConnectionError:
                    continue
        self._queued.setdefault(team, []).append(envelope)

    async def _push(self, team: str, envelope: dict[str, Any]) -> str:
        envelope_id = str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, **envelope}
        self.envelopes[envelope_id] = envelope
        await self._deliver(team, envelope)
        self._notify()
        return envelope_id

    async def push_event(self, team: str | Workspace, event: dict[str, Any], retry_attempt: int = 0,
                         event_id: str | None = None, retry_reason: str | None = None, *,
                         signed_with: str | None = None, signed_at: float | None = None) -> str:
        """Deliver an Events API event; returns the envelope_id (the delivery id in HTTP mode).
        A retry (``retry_attempt`` > 0, reason ``timeout`` in Socket Mode and ``http_timeout``
        over HTTP by default) should pass the first delivery's ``event_id``. Over HTTP,
        ``signed_with``/``signed_at`` forge the signature's secret or timestamp."""
        ws = self.workspace(team)
        ws.apply_event(event)
        payload = event_callback(ws, event, event_id or slack_id("Ev"))
        if ws.event_url:
            reason = retry_reason if retry_reason is not None else "http_timeout" if retry_attempt else ""
            return self._post(ws, ws.event_url, json.dumps(payload), "application/json", retry_attempt, reason,
                              signed_with=signed_with, signed_at=signed_at)
        if retry_reason is None:
            retry_reason = "timeout" if retry_attempt else ""
        return await self._push(ws.team_id, {
            "payload": payload, "type": "events_api",
            "accepts_response_payload": False, "retry_attempt": retry_attempt, "retry_reason": retry_reason})

    async def push_interactive(self, team: str | Workspace, payload: dict[str, Any], *,
                               signed_with: str | None = None) -> str:
        ws = self.workspace(team)
        if ws.interactivity_url:  # a form with one field, `payload`, the JSON of the interaction
            return self._post(ws, ws.interactivity_url, urlencode({"payload": json.dumps(payload)}),
                              "application/x-www-form-urlencoded", signed_with=signed_with)
        # A view_submission (and an options request) may be answered in the ack itself.
        accepts = payload.get("type") in ("view_submission", "block_suggestion")
        return await self._push(ws.team_id, {
            "payload": payload, "type": "interactive", "accepts_response_payload": accepts})

    async def push_slash_command(self, team: str | Workspace, payload: dict[str, Any]) -> str:
        ws = self.workspace(team)
        if ws.command_url:  # the command's fields as a form
            return self._post(ws, ws.command_url, urlencode(payload), "application/x-www-form-urlencoded")
        return await self._push(ws.team_id, {
            "payload": payload, "type": "slash_commands", "accepts_response_payload": True})

    # ---------------------------------------------------------------- HTTP mode (Request URLs)
    def use_request_url(self, team: str | Workspace, url: str, *, interactivity_url: str | None = None,
                        command_url: str | None = None) -> Workspace:
        """Configure the workspace's app for HTTP: Event Subscriptions' Request URL, the
        Interactivity Request URL and the slash command's Request URL (``url`` unless given)."""
        ws = self.workspace(team)
        ws.event_url, ws.interactivity_url, ws.command_url = url, interactivity_url or url, command_url or url
        return ws

    async def verify_request_url(self, team: str | Workspace, url: str | None = None) -> Delivery:
        """What Slack does when a Request URL is saved: POST a ``url_verification`` challenge,
        which the app must echo (``json.loads(d.response)["challenge"]``)."""
        ws = self.workspace(team)
        body = json.dumps({"token": "verification_token", "challenge": secrets.token_urlsafe(36),
                           "type": "url_verification"})
        return await self.wait_for_delivery(self._post(ws, url or ws.event_url, body, "application/json"))

    async def wait_for_delivery(self, delivery_id: str, timeout: float = 5) -> Delivery:
        """Wait until the app answered a POST (or it failed); return what happened."""
        await self.wait_for(lambda emu: delivery_id in emu.deliveries, timeout)
        return self.deliveries[delivery_id]

    def _post(self, ws: Workspace, url: str, body: str, content_type: str, retry_num: int = 0,
              retry_reason: str = "", *, signed_with: str | None = None, signed_at: float | None = None) -> str:
        """Start POSTing ``body`` to ``url`` as Slack does; returns the delivery id at once."""
        timestamp = str(int(time.time() if signed_at is None else signed_at))
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT, "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": slack_signature(signed_with or ws.signing_secret, timestamp, body)}
        if retry_num:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason})
        delivery_id = str(uuid.uuid4())
        task = asyncio.create_task(self._send(delivery_id, Delivery(url, headers, body)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return delivery_id

    async def _send(self, delivery_id: str, delivery: Delivery) -> None:
        assert self._http is not None, "the emulator is not started"
        try:
            async with self._http.post(delivery.url, data=delivery.body.encode(), headers=delivery.headers,
                                       allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=ACK_TIMEOUT_S)) as response:
                delivery.status, delivery.response = response.status, await response.text()
        except TimeoutError:
            delivery.failure = "http_timeout"
        except aiohttp.ClientError:
            delivery.failure = "connection_failed"
        delivery.time = time.monotonic()
        if delivery.acked:
            try:  # an ack's payload: a slash command's reply, a modal's response_action
                self.acks[delivery_id] = json.loads(delivery.response) if delivery.response.strip() else None
            except ValueError:
                self.acks[delivery_id] = {"text": delivery.response}  # plain text answers a command
            self.ack_times[delivery_id] = delivery.time
        elif not delivery.failure:
            delivery.failure = "http_error"
        self.deliveries[delivery_id] = delivery
        self._notify()

    async def send_disconnect(self, team: str | Workspace | None = None,
                              reason: str = "refresh_requested") -> None:
        """Ask the app to reconnect, as Slack does before recycling a connection."""
        for conn in self._conns(team):
            await conn.ws.send_json({"type": "disconnect", "reason": reason,
                                     "debug_info": {"host": "applink-3"}})

    async def drop_sockets(self, team: str | Workspace | None = None) -> None:
        """Cut connections without a close frame, like a network failure; returns once gone."""
        dropped = self._conns(team)
        for conn in dropped:
            if conn.transport is not None:
                conn.transport.abort()
        await self.wait_for(lambda emu: all(c not in emu._connections for c in dropped))
