"""The Slack app: bolt's `AsyncApp` on `AsyncSocketModeHandler`, wired to a `Runtime`.

    async with open_runtime(settings) as rt, serve(rt):
        ...  # Slack is connected; turns run on the orchestrator's workers

`serve` is the Slack lifespan, in this order:
1. per workspace, a Web API client (one shared aiohttp session, retry handlers, pointed at
   `DESKHAND_SLACK_API_URL`) and auth.test to learn the team and the bot;
2. the responder registered as `orchestrator.responders["slack"]`, the jobs group and the
   outbox retrier;
3. the orchestrator's workers (`orchestrator.running()`), which first finish any turn a
   previous process left;
4. Socket Mode connections, one per workspace.
Shutdown runs backwards: Socket Mode closes (no new events), jobs finish, the queue drains
while the Web API is still up, then the clients close. A post that still fails is in the
outbox for the next start.
"""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp

from bot.handlers import actions, commands, events, home, middleware
from bot.logs import get_logger
from bot.slack.approvers import Directory
from bot.slack.client import ChannelPacer, SlackTeam, web_client
from bot.slack.commands import SlashCommands
from bot.slack.home import HomeTab
from bot.slack.jobs import Jobs
from bot.slack.ops import SlackOps
from bot.slack.responder import SlackResponder

log = get_logger("deskhand.slack")

DOCS = "docs/slack.md"


@dataclass(frozen=True)
class SlackCredentials:
    """One workspace's tokens: the bot token (xoxb-) and the app-level token (xapp-)."""

    bot_token: str
    app_token: str


@dataclass
class SlackOptions:
    ping_interval_s: float = 10.0  # Socket Mode keepalive; a socket silent for 4x this is replaced
    pace_per_channel: float = 1.0  # posts per second per channel, after a burst
    pace_burst: int = 3
    outbox_retry_s: float = 5.0  # first retry of a failed post; doubles up to 10 minutes
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

    async def handle(self, client, req) -> None:  # type: ignore[override]
        received = time.perf_counter()
        async with self._intake:
            await super().handle(client, req)  # returns once the ack is sent
        if self.metrics is not None:
            self.metrics.ack_sent(req.type, time.perf_counter() - received)


@dataclass
class SlackSurface:
    """What `serve` yields: the connected workspaces and the services behind the listeners."""

    teams: dict[str, SlackTeam]
    responder: SlackResponder
    ops: SlackOps
    commands: SlashCommands
    home: HomeTab
    jobs: Jobs
    handlers: list[IntakeHandler] = field(default_factory=list)


def slack_credentials(settings) -> list[SlackCredentials]:
    """Every workspace to connect: SLACK_BOT_TOKEN/SLACK_APP_TOKEN, then DESKHAND_SLACK_WORKSPACES."""
    return [SlackCredentials(settings.slack_bot_token, settings.slack_app_token),
            *(SlackCredentials(w.bot_token, w.app_token) for w in settings.slack_workspaces)]


def missing_credentials(settings) -> list[str]:
    """What stops `deskhand run` from connecting to Slack, as readable lines (empty: nothing)."""
    problems, credentials = [], slack_credentials(settings)
    for n, creds in enumerate(credentials):
        bot, app = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN") if n == 0 else (
            f"DESKHAND_SLACK_WORKSPACES[{n - 1}].bot_token", f"DESKHAND_SLACK_WORKSPACES[{n - 1}].app_token")
        if not creds.bot_token:
            problems.append(f"{bot} is not set (the Bot User OAuth Token, xoxb-…).")
        elif not creds.bot_token.startswith("xoxb-"):
            problems.append(f"{bot} must be a bot token starting with xoxb-.")
        if not creds.app_token:
            problems.append(f"{app} is not set (an app-level token with connections:write, xapp-…).")
        elif not creds.app_token.startswith("xapp-"):
            problems.append(f"{app} must be an app-level token starting with xapp-.")
    app_tokens = [c.app_token for c in credentials if c.app_token]
    if len(set(app_tokens)) != len(app_tokens):
        # Slack spreads one app's events over all its sockets: a workspace's event could reach
        # the connection that holds another workspace's bot token.
        problems.append("Two workspaces share an app-level token: give each workspace its own Slack app "
                        "(created from manifest.yml) and its own xapp- token.")
    return problems


def credentials_help(problems: list[str]) -> str:
    return "\n".join([
        "Deskhand can't connect to Slack:",
        *(f"  - {p}" for p in problems),
        "",
        "To get the tokens:",
        "  1. Create the app from manifest.yml at https://api.slack.com/apps (Create New App,",
        "     From an app manifest) and install it to your workspace.",
        "  2. OAuth & Permissions: copy the Bot User OAuth Token into SLACK_BOT_TOKEN.",
        "  3. Basic Information, App-Level Tokens: generate one with the connections:write",
        "     scope and put it in SLACK_APP_TOKEN.",
        "  4. Put both in the environment or in .env, then run `deskhand run` again.",
        f"Step by step: {DOCS} (linked from the README, \"Running it for a team\").",
    ])


def build_app(team: SlackTeam, services: dict) -> AsyncApp:
    """One workspace's bolt app: middleware in order, then the listeners.

    `process_before_response=True` runs each listener before the ack is sent, inline; the
    listeners are short (accept, or spawn a job), so the ack still leaves at once, and no
    listener runs as an unowned task."""
    app = AsyncApp(
        client=team.client, process_before_response=True,
        # Built-in middleware that only matters over HTTP (signatures, SSL checks, URL
        # verification) or for features Deskhand does not use (workflow functions, assistant
        # threads): off, since each runs on every event.
        request_verification_enabled=False, ssl_check_enabled=False, url_verification_enabled=False,
        attaching_function_token_enabled=False, attaching_conversation_kwargs_enabled=False,
    )
    middleware.register(app, services)
    events.register(app)
    home.register(app)
    actions.register(app)
    commands.register(app)
    events.register_fallback(app)
    return app


@asynccontextmanager
async def serve(runtime, *, credentials: list[SlackCredentials] | None = None,
                options: SlackOptions | None = None, mail_mirror=None) -> AsyncIterator[SlackSurface]:
    """Connect Deskhand to Slack (one or more workspaces) around the orchestrator's workers.
    With a `mail_mirror` (bot/slack/mail_mirror.py), email conversations are mirrored into the
    support channel and its posts sent by this app's retrier."""
    settings = runtime.settings
    options = options or SlackOptions(ping_interval_s=settings.slack_ping_interval_s)
    credentials = credentials or slack_credentials(settings)
    async with aiohttp.ClientSession() as http:
        pairs = []
        for creds in credentials:
            client = web_client(creds.bot_token, settings.slack_api_url, http,
                                rate_limit_retries=options.rate_limit_retries)
            pacer = ChannelPacer(options.pace_per_channel, options.pace_burst)
            pairs.append((await SlackTeam.connect(client, pacer), creds))
        teams = {team.team_id: team for team, _ in pairs}
        jobs = Jobs()
        responder = SlackResponder(teams=teams, store=runtime.store, settings=settings, jobs=jobs,
                                   outbox_retry_s=options.outbox_retry_s,
                                   max_placeholders_in_flight=options.max_placeholders_in_flight)
        directory = Directory(teams, settings.policy, lookup_timeout_s=options.identity_timeout_s)
        ops = SlackOps(runtime, responder, directory)
        slash = SlashCommands(runtime, responder, directory, ops, jobs, http,
                              progress_interval_s=options.progress_interval_s)
        surface = SlackSurface(teams, responder, ops, slash, HomeTab(runtime, teams, directory), jobs)
        services = {"orchestrator": runtime.orchestrator, "store": runtime.store, "directory": directory,
                    "responder": responder, "ops": ops, "commands": slash, "home": surface.home, "jobs": jobs}
        runtime.orchestrator.responders["slack"] = responder
        runtime.orchestrator.identities["slack"] = lambda env: directory.email(env.tenant_id, env.user_id)
        if mail_mirror is not None:
            responder.mail_mirror = mail_mirror
            mail_mirror.attach(responder.wake)
        stop = asyncio.Event()
        outbox = asyncio.create_task(responder.run_outbox(stop), name="slack-outbox")
        try:
            async with runtime.orchestrator.running():
                try:
                    for team, creds in pairs:
                        handler = IntakeHandler(build_app(team, services), app_token=creds.app_token,
                                                ping_interval=options.ping_interval_s,
                                                max_in_flight=options.max_in_flight)
                        handler.metrics = getattr(runtime, "metrics", None)
                        surface.handlers.append(handler)
                        await handler.connect_async()
                        log.info("slack_connected", team_id=team.team_id, bot_user_id=team.bot_user_id)
                    yield surface
                finally:
                    for handler in surface.handlers:
                        await handler.close_async()
                    await jobs.drain()
        finally:
            stop.set()
            await outbox
            runtime.orchestrator.responders.pop("slack", None)
            runtime.orchestrator.identities.pop("slack", None)
            if mail_mirror is not None:
                mail_mirror.attach(lambda: None)  # what it queues now waits for the next start


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
