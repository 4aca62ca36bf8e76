"""The Slack app: bolt's `AsyncApp` on `AsyncSocketModeHandler`, wired to a `Runtime`.

    async with open_runtime(settings) as rt, serve(rt):
        ...  # Slack is connected; turns run on the orchestrator's workers

The Slack lifespan comes in two halves, so that the wiring can give the orchestrator its
surfaces between them (bot/run.py does, with email beside Slack; `serve` does, for Slack alone):
1. `connect`: per workspace, a Web API client (one shared aiohttp session, retry handlers,
   pointed at `DESKHAND_SLACK_API_URL`) and auth.test to learn the team and the bot; the
   responder, the jobs group and the outbox retrier;
2. the wiring: `orchestrator.delivering_to(Surfaces(slack=…))` and the orchestrator's
   workers (`orchestrator.running()`), which first finish any turn a previous process left;
3. `listen`: Socket Mode connections, one per workspace; or, with DESKHAND_SLACK_MODE=http,
   the Request URL that Slack POSTs to (bot/slack/request_url.py), with the same listeners.
Shutdown runs backwards: Socket Mode (or the Request URL) closes (no new events), jobs finish, the queue drains
while the Web API is still up, then the clients close. A post that still fails is in the
outbox for the next start.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import contextlib
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp

from bot.contracts import MessageEnvelope
from bot.handlers import actions, events, home_opened, middleware, slash_command
from bot.logs import get_logger
from bot.slack.approvers import Directory
from bot.slack.client import ChannelPacer, SlackTeam, web_client
from bot.slack.home_tab import HomeTab
from bot.slack.jobs import Jobs
from bot.slack.ops import SlackOps
from bot.slack.request_url import RequestUrlServer, WorkspaceEndpoint, claim_port, serve_request_url
from bot.slack.responder import SlackResponder
from bot.slack.subcommands import SlashCommands
from bot.surfaces import Surfaces, TeammateMail

log = get_logger("deskhand.slack")

DOCS = "docs/slack.md"


@dataclass(frozen=True)
class SlackCredentials:
    """One workspace's credentials: the bot token (xoxb-), and the app-level token (xapp-) for
    Socket Mode or the app's signing secret for HTTP mode."""

    bot_token: str
    app_token: str
    signing_secret: str = ""


@dataclass
class SlackOptions:
    ping_interval_s: float = 10.0  # Socket Mode keepalive; a socket silent for 4x this is replaced
    pace_per_channel: float = 1.0  # posts per second per channel, after a burst
    pace_burst: int = 3
    outbox_retry_s: float = 5.0  # how often the retrier looks at the outbox; waits between tries: DESKHAND_OUTBOX_*
    progress_interval_s: float = 1.0  # at most one `kb reload` progress update per interval
    rate_limit_retries: int = 3
    max_in_flight: int = 32  # Slack requests dispatched at once per workspace (the rest queue, in order)
    max_placeholders_in_flight: int = 32  # placeholder posts at once; acks come first
    identity_timeout_s: float = 1.5  # users.info for a verified email, when a turn starts


class IntakeHandler(AsyncSocketModeHandler):
    """bolt's Socket Mode handler with admission control: at most `max_in_flight` requests are
    dispatched at once, first come first served. Under a burst, early events are stored
    and acked promptly instead of every event progressing a little and all acking late."""

    def __init__(self, app: AsyncApp, *, max_in_flight: int, **kwargs):
        super().__init__(app, **kwargs)
        self._intake = asyncio.Semaphore(max_in_flight)
        self.metrics = None  # bot/metrics.py DeskhandMetrics: ack latency

    async def is_connected(self) -> bool:
        return await self.client.is_connected()

    async def handle(self, client, req) -> None:  # type: ignore[override]
        received = time.perf_counter()
        async with self._intake:
            await super().handle(client, req)  # returns once the ack is sent
        if self.metrics is not None:
            self.metrics.ack_sent(req.type, time.perf_counter() - received)


@dataclass
class SlackSurface:
    """What `connect` (and `serve`) yields: the connected workspaces and the services behind
    the listeners."""

    teams: dict[str, SlackTeam]
    responder: SlackResponder
    ops: SlackOps
    commands: SlashCommands
    home: HomeTab
    jobs: Jobs
    directory: Directory
    options: SlackOptions
    apps: list[tuple[SlackTeam, SlackCredentials]]  # each workspace with the tokens it connects with
    # Socket Mode handlers, or in HTTP mode each workspace's endpoint; both say `is_connected`.
    handlers: list[IntakeHandler | WorkspaceEndpoint] = field(default_factory=list)
    request_url: RequestUrlServer | None = None  # HTTP mode: where Slack sends events
    request_url_socket: socket.socket | None = None  # HTTP mode: its port, bound by `connect`

    async def identify(self, envelope: MessageEnvelope) -> str | None:
        """The Slack user's verified email (`Surfaces.slack_identity`), asked when a turn starts."""
        return await self.directory.email(envelope.tenant_id, envelope.user_id)


def slack_credentials(settings) -> list[SlackCredentials]:
    """Every workspace to connect: SLACK_BOT_TOKEN/SLACK_APP_TOKEN, then DESKHAND_SLACK_WORKSPACES."""
    return [SlackCredentials(settings.slack_bot_token, settings.slack_app_token, settings.slack_signing_secret),
            *(SlackCredentials(w.bot_token, w.app_token, w.signing_secret) for w in settings.slack_workspaces)]


def missing_credentials(settings) -> list[str]:
    """What stops `deskhand run` from connecting to Slack, as readable lines (empty: nothing)."""
    problems, credentials = [], slack_credentials(settings)
    http = settings.slack_mode == "http"
    for n, creds in enumerate(credentials):
        bot, app, secret = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET") if n == 0 else (
            f"DESKHAND_SLACK_WORKSPACES[{n - 1}].bot_token", f"DESKHAND_SLACK_WORKSPACES[{n - 1}].app_token",
            f"DESKHAND_SLACK_WORKSPACES[{n - 1}].signing_secret")
        if not creds.bot_token:
            problems.append(f"{bot} is not set (the Bot User OAuth Token, xoxb-…).")
        elif not creds.bot_token.startswith("xoxb-"):
            problems.append(f"{bot} must be a bot token starting with xoxb-.")
        if http:
            if not creds.signing_secret:
                problems.append(f"{secret} is not set (HTTP mode checks every request with the app's "
                                "Signing Secret, Basic Information, App Credentials).")
            continue
        if not creds.app_token:
            problems.append(f"{app} is not set (an app-level token with connections:write, xapp-…).")
        elif not creds.app_token.startswith("xapp-"):
            problems.append(f"{app} must be an app-level token starting with xapp-.")
    app_tokens = [c.app_token for c in credentials if c.app_token]
    if not http and len(set(app_tokens)) != len(app_tokens):
        # Slack spreads one app's events over all its sockets: a workspace's event could reach
        # the connection that holds another workspace's bot token.
        problems.append("Two workspaces share an app-level token: give each workspace its own Slack app "
                        "(created from manifest.yml) and its own xapp- token.")
    return problems


def credentials_help(problems: list[str], mode: str = "socket") -> str:
    third = (["  3. Basic Information, App Credentials: copy the Signing Secret into",
              "     SLACK_SIGNING_SECRET (HTTP mode; the Request URLs are in docs/slack.md)."] if mode == "http" else
             ["  3. Basic Information, App-Level Tokens: generate one with the connections:write",
              "     scope and put it in SLACK_APP_TOKEN."])
    return "\n".join([
        "Deskhand can't connect to Slack:",
        *(f"  - {p}" for p in problems),
        "",
        "To get the tokens:",
        "  1. Create the app from manifest.yml at https://api.slack.com/apps (Create New App,",
        "     From an app manifest) and install it to your workspace.",
        "  2. OAuth & Permissions: copy the Bot User OAuth Token into SLACK_BOT_TOKEN.",
        *third,
        "  4. Put both in the environment or in .env, then run `deskhand run` again.",
        f"Step by step: {DOCS} (linked from the README, \"Running it for a team\").",
    ])


def build_app(team: SlackTeam, services: dict, *, signing_secret: str | None = None) -> AsyncApp:
    """One workspace's bolt app: middleware in order, then the listeners. With a
    `signing_secret` (HTTP mode) bolt's HTTP-only middleware is on: every request's signature
    and timestamp are checked first (401 otherwise), and the URL verification challenge and
    SSL checks are answered.

    `process_before_response=True` runs each listener before the ack is sent, inline; the
    listeners are short (accept, or spawn a job), so the ack still leaves at once, and no
    listener runs as an unowned task."""
    over_http = signing_secret is not None
    app = AsyncApp(
        client=team.client, process_before_response=True, signing_secret=signing_secret or "",
        # Built-in middleware that only matters over HTTP (signatures, SSL checks, URL
        # verification) is on in HTTP mode only; that for features Deskhand does not use
        # (workflow functions, assistant threads) is off, since each runs on every event.
        request_verification_enabled=over_http, ssl_check_enabled=over_http, url_verification_enabled=over_http,
        attaching_function_token_enabled=False, attaching_conversation_kwargs_enabled=False,
    )
    middleware.register(app, services)
    events.register(app)
    home_opened.register(app)
    actions.register(app)
    slash_command.register(app)
    events.register_fallback(app)
    return app


@asynccontextmanager
async def serve(runtime, *, credentials: list[SlackCredentials] | None = None,
                options: SlackOptions | None = None) -> AsyncIterator[SlackSurface]:
    """Slack alone (no mail): connect to Slack (one or more workspaces), deliver to it from the
    orchestrator's workers, and listen. `deskhand run` wires the same with email (bot/run.py)."""
    orchestrator = runtime.orchestrator
    async with connect(runtime, credentials=credentials, options=options) as slack:
        surfaces = Surfaces(slack=slack.responder, slack_identity=slack.identify)
        async with orchestrator.delivering_to(surfaces), orchestrator.running(), listen(runtime, slack):
            yield slack


@asynccontextmanager
async def connect(runtime, *, credentials: list[SlackCredentials] | None = None,
                  options: SlackOptions | None = None, mail: TeammateMail | None = None,
                  mail_mirror=None) -> AsyncIterator[SlackSurface]:
    """Slack's outward side, before any event comes in: the clients, the responder and its
    outbox retrier, and the services behind the listeners. `mail` is email's port for a
    teammate's reply in a mirror thread; with a `mail_mirror` (bot/slack/mail_mirror.py),
    email conversations are mirrored into the support channel and its posts sent by this
    app's retrier."""
    settings = runtime.settings
    options = options or SlackOptions(ping_interval_s=settings.slack_ping_interval_s)
    credentials = credentials or slack_credentials(settings)
    # HTTP mode claims its port first: if it is taken, the start stops before any work begins.
    request_url_socket = claim_port(settings) if settings.slack_mode == "http" else None
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as closing:
        if request_url_socket is not None:
            closing.callback(request_url_socket.close)
        pairs = []
        for creds in credentials:
            client = web_client(creds.bot_token, settings.slack_api_url, http,
                                rate_limit_retries=options.rate_limit_retries)
            pacer = ChannelPacer(options.pace_per_channel, options.pace_burst)
            pairs.append((await SlackTeam.connect(client, pacer), creds))
        teams = {team.team_id: team for team, _ in pairs}
        jobs = Jobs()
        responder = SlackResponder(teams=teams, store=runtime.store, settings=settings, jobs=jobs,
                                   outbox_poll_s=options.outbox_retry_s,
                                   max_placeholders_in_flight=options.max_placeholders_in_flight)
        directory = Directory(teams, lookup_timeout_s=options.identity_timeout_s)
        runtime.gate.membership = directory  # the gate asks Slack for user groups, and keeps the answers
        ops = SlackOps(runtime, responder, directory, mail)
        slash = SlashCommands(runtime, responder, directory, ops, jobs, http,
                              progress_interval_s=options.progress_interval_s)
        surface = SlackSurface(teams=teams, responder=responder, ops=ops, commands=slash,
                               home=HomeTab(runtime, teams), jobs=jobs, directory=directory,
                               options=options, apps=pairs, request_url_socket=request_url_socket)
        if mail_mirror is not None:
            responder.mail_mirror = mail_mirror
            mail_mirror.attach(responder.wake)
        stop = asyncio.Event()
        outbox = asyncio.create_task(responder.run_outbox(stop), name="slack-outbox")
        try:
            yield surface
        finally:
            stop.set()
            await outbox
            runtime.gate.membership = None  # back to the memberships Slack returned last
            if mail_mirror is not None:
                mail_mirror.attach(lambda: None)  # what it queues now waits for the next start


@asynccontextmanager
async def listen(runtime, slack: SlackSurface) -> AsyncIterator[SlackSurface]:
    """Socket Mode, one connection per workspace (or, in HTTP mode, the Request URL): events
    come in. On exit no new events come, then the jobs they spawned finish."""
    services = {"orchestrator": runtime.orchestrator, "directory": slack.directory, "responder": slack.responder,
                "ops": slack.ops, "commands": slack.commands, "home": slack.home, "jobs": slack.jobs}
    if runtime.settings.slack_mode == "http":
        async with _listen_http(runtime, slack, services):
            yield slack
        return
    try:
        for team, creds in slack.apps:
            handler = IntakeHandler(build_app(team, services), app_token=creds.app_token,
                                    ping_interval=slack.options.ping_interval_s,
                                    max_in_flight=slack.options.max_in_flight)
            handler.metrics = getattr(runtime, "metrics", None)
            slack.handlers.append(handler)
            await handler.connect_async()
            log.info("slack_connected", team_id=team.team_id, bot_user_id=team.bot_user_id)
        yield slack
    finally:
        for handler in slack.handlers:
            await handler.close_async()
        await slack.jobs.drain()


@asynccontextmanager
async def _listen_http(runtime, slack: SlackSurface, services: dict) -> AsyncIterator[None]:
    """HTTP mode: each workspace's app, verifying with its own signing secret, behind one
    server. No Socket Mode connection is opened."""
    for team, creds in slack.apps:
        slack.handlers.append(WorkspaceEndpoint(
            team.team_id, build_app(team, services, signing_secret=creds.signing_secret),
            max_in_flight=slack.options.max_in_flight, metrics=getattr(runtime, "metrics", None)))
    try:
        async with serve_request_url(runtime.settings, slack.handlers, slack.request_url_socket) as server:
            slack.request_url = server
            yield
    finally:
        slack.request_url = None
        await slack.jobs.drain()


async def wait_for_shutdown() -> None:
    """Return on SIGINT or SIGTERM (what `deskhand run` waits for)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
