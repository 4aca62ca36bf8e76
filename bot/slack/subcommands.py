"""`/deskhand`: what each subcommand does. The listener (bot/handlers/slash_command.py)
reads the payload into a `Slash` and acks with what `handle` returns (within Slack's 3
seconds); anything slow runs afterwards as a job and answers by `response_url` or by
updating one message in the channel.

    /deskhand help | status | kb status | kb reload | handback [thread link]
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timezone
from typing import Any

import aiohttp
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.handlers.payloads import Slash
from bot.kb_status import kb_facts, kb_folder, kb_summary
from bot.logs import get_logger
from bot.shadow import shadow_surfaces
from bot.slack import blocks as bk
from bot.slack.mrkdwn import escape
from bot.slack.responder import SEND_ERRORS
from bot.slack_ids import parse_session_id, session_id

log = get_logger("deskhand.slack.commands")

USAGE = (
    "*Deskhand commands*\n"
    "• `/deskhand status`: how Deskhand is doing in this workspace\n"
    "• `/deskhand kb status`: the knowledge base's state\n"
    "• `/deskhand kb reload`: re-index the knowledge base (admins only)\n"
    "• `/deskhand handback <thread link>`: give a handed-off thread back to Deskhand (support teammates)\n"
    "• `/deskhand help`: this list"
)
KB_NOT_CONFIGURED = ("The knowledge base is not configured in this Deskhand, so there is nothing to "
                     "reload. See the README's knowledge base section.")
_PERMALINK = re.compile(r"/archives/([A-Z0-9]+)/p(\d{10})(\d{6})(?:\?[^\s>|]*thread_ts=(\d+\.\d+))?")


def describe(value: Any) -> dict[str, Any]:
    """A pydantic model, a dict, or anything else, as a flat dict to show."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return value if isinstance(value, dict) else {"result": value}


class SlashCommands:
    def __init__(self, runtime, responder, directory, ops, jobs, http: aiohttp.ClientSession,
                 *, progress_interval_s: float = 1.0):
        self.runtime = runtime
        self.store = runtime.store
        self.responder = responder
        self.directory = directory
        self.ops = ops
        self.jobs = jobs
        self.http = http
        self.progress_interval_s = progress_interval_s
        self._reloading: set[str] = set()

    async def handle(self, cmd: Slash) -> str:
        """Route a command; returns the text to ack with ("" when the answer comes later)."""
        words = cmd.text.lower().split()
        if words in ([], ["help"]):
            return USAGE
        if words == ["status"]:
            self.jobs.spawn(self._reply_later(cmd, self.status(cmd.team)), name="slack-status")
            return ""
        if words == ["kb", "status"]:
            self.jobs.spawn(self._reply_later(cmd, self.kb_status(cmd.team)), name="slack-kb-status")
            return ""
        if words == ["kb", "reload"]:
            return await self.start_kb_reload(cmd)
        if words and words[0] == "handback":
            self.jobs.spawn(self._reply_later(cmd, self.handback(cmd, cmd.text.split()[1:])), name="slack-handback")
            return ""
        return f"Sorry, I don't know `/deskhand {escape(cmd.text.strip())}`.\n\n{USAGE}"

    async def _reply_later(self, cmd: Slash, answer) -> None:
        await self._respond(cmd, await answer)

    async def _respond(self, cmd: Slash, text: str) -> None:
        try:
            await AsyncWebhookClient(cmd.response_url, session=self.http).send(
                text=text, response_type="ephemeral", replace_original=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("response_url_failed", error=type(exc).__name__)

    # -- status ------------------------------------------------------------------------------
    async def status(self, team_id: str) -> str:
        policy = self.runtime.settings.policy(team_id)
        today = await self.store.activity_since(team_id, midnight_utc())
        pending = await self.store.pending_list(team_id)
        handoffs = await self.store.sessions_with_status(team_id, HANDED_OFF)
        outbox = [r for r in await self.store.outbox_rows("pending") if r["tenant_id"] == team_id]
        lines = [
            "*Deskhand status*",
            f"• Connected: Socket Mode · support channel {f'<#{policy.support_channel}>' if policy.support_channel else 'not set'}"
            + (f" · *shadow mode* on {shadow_surfaces(policy)} (answers are recorded, not sent)"
               if shadow_surfaces(policy) else ""),
            f"• Today: {today['answered']} messages answered · {today['handoffs']} handoffs · {today['approvals']} approval decisions",
            f"• Waiting: {len(pending)} approvals · {len(handoffs)} conversations with a human · "
            f"{len(outbox)} Slack posts waiting to be sent",
            f"• Knowledge base: {escape(kb_summary(await self.runtime.kb_state(team_id)))}"
            if self.runtime.kb is not None else "• Knowledge base: not configured",
        ]
        return "\n".join(lines)

    async def kb_status(self, team_id: str) -> str:
        if self.runtime.kb is None:
            return KB_NOT_CONFIGURED
        return bk.kb_facts_text(kb_facts(await self.runtime.kb_state(team_id)))

    # -- kb reload ---------------------------------------------------------------------------
    async def start_kb_reload(self, cmd: Slash) -> str:
        if not self.runtime.gate.is_admin(cmd.team, cmd.user):
            await self.store.audit(cmd.team, cmd.user, "kb_reload_refused", cmd.team)
            return "Only Deskhand admins can reload the knowledge base. Ask one of them, or see `/deskhand help`."
        if self.runtime.kb is None:
            return KB_NOT_CONFIGURED
        if cmd.team in self._reloading:
            return "A reload is already running for this workspace; its progress is above."
        self._reloading.add(cmd.team)
        await self.store.audit(cmd.team, cmd.user, "kb_reload", cmd.team)
        self.jobs.spawn(self._reload(cmd), name="slack-kb-reload")
        return "Reloading the knowledge base… progress follows in this channel."

    async def _reload(self, cmd: Slash) -> None:
        loop = asyncio.get_running_loop()
        team = self.responder.teams[cmd.team]
        state = {"done": 0, "total": 0, "label": ""}
        changed = asyncio.Event()

        def progress(*args) -> None:
            """Called on the reload's thread, as `(stage, done, total)` or `(done, total, label)`."""
            if isinstance(args[0], str):
                stage, done, total = args[:3]
            else:
                done, total, stage = args[0], args[1], args[2] if len(args) > 2 else ""

            def record() -> None:
                state.update(done=int(done), total=int(total), label=str(stage))
                changed.set()
            loop.call_soon_threadsafe(record)

        try:
            ts = await team.post(cmd.channel, "Reloading the knowledge base…",
                                 [bk.section(bk.progress("Reloading the knowledge base", 0, 0))])
        except SEND_ERRORS:
            ts = None  # e.g. Deskhand is not in this channel: only the final result is sent
        reload = asyncio.create_task(asyncio.to_thread(
            self.runtime.kb.reload, cmd.team, kb_folder(self.runtime.settings, cmd.team), progress=progress))
        try:
            last = float("-inf")
            while ts is not None and not reload.done():
                waiter = asyncio.create_task(changed.wait())
                await asyncio.wait({waiter, reload}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if (pause := last + self.progress_interval_s - time.monotonic()) > 0:
                    await asyncio.wait({reload}, timeout=pause)  # one update per interval at most
                if reload.done():
                    break
                changed.clear()
                last = time.monotonic()
                line = bk.progress("Reloading the knowledge base", state["done"], state["total"], state["label"])
                await self._show(team, cmd.channel, ts, line)
            await asyncio.wait({reload})
            summary = describe(reload.result())
            text = "✅ Knowledge base reloaded · " + " · ".join(
                f"{escape(str(k))}: {escape(str(v))}" for k, v in list(summary.items())[:8])
        except Exception:
            log.exception("kb_reload_failed", tenant_id=cmd.team)
            text = "⚠️ The knowledge base reload failed; the previous index is still in use. See the logs."
        finally:
            self._reloading.discard(cmd.team)
        if ts is not None:
            await self._show(team, cmd.channel, ts, text)
        else:
            await self._respond(cmd, text)

    async def _show(self, team, channel: str, ts: str, line: str) -> None:
        try:
            await team.update(channel, ts, line, [bk.section(line)])
        except SEND_ERRORS as exc:
            log.warning("progress_update_failed", error=type(exc).__name__)

    # -- handback ----------------------------------------------------------------------------
    async def handback(self, cmd: Slash, args: list[str]) -> str:
        target = self._resolve(cmd, " ".join(args))
        if target is None:
            candidates = [s["id"] for s in await self.store.sessions_with_status(cmd.team, HANDED_OFF)
                          if await self._thread_channel(s["id"]) == cmd.channel]
            if len(candidates) != 1:
                found = "several handed-off threads" if candidates else "no handed-off thread"
                return (f"I found {found} in this channel. Run `/deskhand handback <thread link>` "
                        "with the link of the thread (⋮ → Copy link).")
            target = candidates[0]
        return await self.ops.handback(cmd.team, cmd.user, target)

    async def _thread_channel(self, session_id: str) -> str | None:
        """The channel of a conversation's thread: its own, or its email mirror's."""
        if ref := parse_session_id(session_id):
            return ref.channel
        mirror = await self.store.mirror_thread(session_id)
        return mirror["channel"] if mirror else None

    @staticmethod
    def _resolve(cmd: Slash, arg: str) -> str | None:
        arg = arg.strip().strip("<>").split("|")[0]
        if parse_session_id(arg):
            return arg
        if match := _PERMALINK.search(arg):
            channel, secs, micros, thread_ts = match.groups()
            return session_id(cmd.team, channel, thread_ts or f"{secs}.{micros}")
        return None


def midnight_utc() -> str:
    """Today's start in UTC, as the store writes times."""
    now = datetime.now(timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
