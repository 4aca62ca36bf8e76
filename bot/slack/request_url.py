"""HTTP mode (`DESKHAND_SLACK_MODE=http`): Slack POSTs events, clicks and slash commands to
Deskhand's Request URL instead of sending them over Socket Mode.

    sock = claim_port(settings)  # at start, before any work: a taken port stops `deskhand run` here
    ...
    async with serve_request_url(settings, endpoints, sock) as server:
        server.url  # http://127.0.0.1:3000/slack/events; the port also in <home>/slack_http.port

One aiohttp server on `DESKHAND_SLACK_HTTP_HOST:DESKHAND_SLACK_HTTP_PORT`. Each workspace's
bolt app (the same middleware and listeners as in Socket Mode, plus bolt's own signature
check, SSL check and URL verification) answers at `/slack/events/<team_id>`, and the first
workspace (SLACK_BOT_TOKEN) also at `/slack/events`. Every Slack app has its own Request URL
and its own signing secret, so the path picks the app, and the signature is checked with
that app's secret before anything is read from the body. Events, interactivity and slash
commands share the path: bolt tells them apart by the payload.

The HTTP response is the ack. The listeners only accept a message or spawn a job
(`process_before_response=True`, as in Socket Mode), so the answer leaves well inside
Slack's 3 seconds and the reply follows through the Web API. A retry (`X-Slack-Retry-Num`)
carries the first delivery's event_id: the `Dedup` middleware acks it with 200 and drops it,
as it drops a Socket Mode redelivery. What a retry is checked against is in the store, not
in the process, so with a store the instances share, any of them may take any request.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp

from bot.logs import get_logger
from bot.ops_http import bind, write_port_file

log = get_logger("deskhand.slack.http")

EVENTS_PATH = "/slack/events"
MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are a few kB; a view with 100 blocks stays far below


class RequestUrlUnavailable(RuntimeError):
    """The Request URL's port cannot be bound: Slack would have nowhere to send events."""


@dataclass
class WorkspaceEndpoint:
    """One workspace's bolt app at its path. In HTTP mode `SlackSurface.handlers` holds these
    where it holds the Socket Mode handlers otherwise; both answer `is_connected` (/readyz)."""

    team_id: str
    app: AsyncApp
    max_in_flight: int
    metrics: object | None = None  # bot/metrics.py DeskhandMetrics: ack latency
    serving: bool = False
    _intake: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        # Admission control, as `IntakeHandler` does for Socket Mode: under a burst, early
        # requests are answered promptly instead of every request progressing a little.
        self._intake = asyncio.Semaphore(self.max_in_flight)

    @property
    def path(self) -> str:
        return f"{EVENTS_PATH}/{self.team_id}"

    async def is_connected(self) -> bool:
        return self.serving

    async def handle(self, request: web.Request) -> web.Response:
        received = time.perf_counter()
        bolt_request = await to_bolt_request(request)
        async with self._intake:
            bolt_response = await self.app.async_dispatch(bolt_request)
        if self.metrics is not None and bolt_response.status == 200:  # anything else is no ack
            self.metrics.ack_sent(request_type(bolt_request.body), time.perf_counter() - received)
        return await to_aiohttp_response(bolt_response)


def request_type(body: dict) -> str:
    """The Socket Mode envelope type of an HTTP request, so ack metrics read the same in both modes."""
    if body.get("type") in ("event_callback", "url_verification"):
        return "events_api" if body["type"] == "event_callback" else "url_verification"
    return "slash_commands" if "command" in body else "interactive"


@dataclass
class RequestUrlServer:
    host: str
    port: int
    port_file: Path
    endpoints: list[WorkspaceEndpoint]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{EVENTS_PATH}"


def build_web_app(endpoints: list[WorkspaceEndpoint]) -> web.Application:
    web_app = web.Application(client_max_size=MAX_BODY_BYTES)
    for n, endpoint in enumerate(endpoints):
        web_app.router.add_post(endpoint.path, endpoint.handle)
        if n == 0:
            web_app.router.add_post(EVENTS_PATH, endpoint.handle)
    return web_app


def claim_port(settings) -> socket.socket:
    """Bind the Request URL's port (not listening yet): `RequestUrlUnavailable` if it is taken."""
    try:
        return bind(settings.slack_http_host, settings.slack_http_port)
    except OSError as exc:
        raise RequestUrlUnavailable(
            f"cannot listen for Slack on {settings.slack_http_host}:{settings.slack_http_port} "
            f"({exc.strerror or exc}); set DESKHAND_SLACK_HTTP_PORT (0 takes a free port)") from None


@asynccontextmanager
async def serve_request_url(settings, endpoints: list[WorkspaceEndpoint],
                            sock: socket.socket) -> AsyncIterator[RequestUrlServer]:
    """Serve the Request URL on `sock` (from `claim_port`) for the life of the block. On exit
    it stops taking requests and waits for those in flight (each is one ack)."""
    runner = web.AppRunner(build_web_app(endpoints), access_log=None)
    await runner.setup()
    server = RequestUrlServer(settings.slack_http_host, sock.getsockname()[1],
                              settings.home / "slack_http.port", endpoints)
    try:
        await web.SockSite(runner, sock).start()
        for endpoint in endpoints:
            endpoint.serving = True
        write_port_file(server.port_file, server.port)
        log.info("slack_http_listening", url=server.url, port_file=str(server.port_file),
                 workspaces=[e.team_id for e in endpoints])
        yield server
    finally:
        for endpoint in endpoints:
            endpoint.serving = False
        server.port_file.unlink(missing_ok=True)
        await runner.cleanup()
