"""Cross-cutting concerns of every Slack request, one small bolt middleware each.

Each is bolt's own shape, `async_process(req, resp, next)` (no per-call argument
injection). `register` installs them in this order (after bolt's own authorization and
self-event filter, which already drop Deskhand's own posts):

1. `Provide`: Deskhand's services into the context, so listeners ask for them by name.
2. `BindLogContext`: tenant, channel and a correlation id bound to structlog's
   contextvars for everything the request logs (jobs it spawns inherit them).
3. `IgnoreNoise`: other bots, edits, deletions and other message subtypes are acked and
   dropped: Slack must not redeliver them, and Deskhand must not answer them.
4. `ToEnvelope`: decides whether a message is for Deskhand (a DM, a mention, or a reply in a
   thread Deskhand is part of) and puts its `MessageEnvelope` in the context; anything else
   is acked and dropped. A teammate's message in a thread that mirrors an email conversation
   becomes a `TeammateReply` (`mail_reply`) instead: their answer to the customer.
5. `Dedup`: a persisted record of event ids and client_msg_ids (`store.mark_processed`). A
   redelivered event (Slack's retries, `retry_attempt` > 0) is acked and dropped, even
   after a restart. It runs after (4) because Slack sends a mention in a channel twice (as
   `app_mention` and as `message`) with the same client_msg_id: only the copy that is going
   to be answered may claim it.

Since envelope ids are fixed by the message (`bot/slack/ids.py`), `orchestrator.accept`
itself is idempotent too: two deliveries racing past (5) still store the message once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.handlers.events import envelope_from_event
from bot.logs import get_logger
from bot.slack.ids import session_id
from bot.slack.mrkdwn import plain_text
from bot.slack.ops import TeammateReply

log = get_logger("deskhand.slack.events")

ANSWERED_SUBTYPES = (None, "thread_broadcast", "file_share")
Next = Callable[[], Awaitable[BoltResponse]]


def register(app: AsyncApp, services: dict) -> None:
    for middleware in (Provide(services), BindLogContext(), IgnoreNoise(), ToEnvelope(), Dedup()):
        app.use(middleware)


def _message(body: dict) -> dict | None:
    event = body.get("event") if body.get("type") == "event_callback" else None
    return event if event and event.get("type") in ("message", "app_mention") else None


class Provide(AsyncMiddleware):
    """Deskhand's services into the context: listeners name what they need."""

    def __init__(self, services: dict):
        self.services = services

    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next):
        req.context.update(self.services)
        return await next()


class BindLogContext(AsyncMiddleware):
    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next):
        body, context = req.body, req.context
        structlog.contextvars.bind_contextvars(
            tenant_id=context.team_id, channel="slack", slack_channel=context.channel_id,
            correlation_id=body.get("event_id") or body.get("trigger_id") or (body.get("event") or {}).get("ts"),
        )
        return await next()


class IgnoreNoise(AsyncMiddleware):
    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next):
        event = _message(req.body)
        if event is None:
            return await next()
        if (event.get("bot_id") or event.get("subtype") not in ANSWERED_SUBTYPES or event.get("hidden")
                or not event.get("user") or event.get("user") == req.context.bot_user_id):
            log.debug("event_ignored", subtype=event.get("subtype"), bot=bool(event.get("bot_id")))
            return await req.context.ack()
        return await next()


class ToEnvelope(AsyncMiddleware):
    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next):
        event, context = _message(req.body), req.context
        if event is None:
            return await next()
        team, channel, store = context.team_id, event["channel"], context["store"]
        thread_ts = event.get("thread_ts") or event["ts"]
        in_thread = thread_ts != event["ts"]
        direct = event.get("channel_type") == "im" or channel.startswith("D")
        known = False
        if not direct and in_thread:
            # A thread Deskhand answers in, or one mirroring an email conversation (a teammate's
            # message there is their reply to the customer)? One store call says which.
            known, mirrored = await store.thread_owner(session_id(team, channel, thread_ts), team, channel, thread_ts)
            if not known and mirrored is not None:
                if event["type"] == "app_mention" or event.get("user_team", team) != team:
                    return await context.ack()  # its `message` copy is the one that counts
                context["mail_reply"] = teammate_reply(event, team, mirrored, context.bot_user_id)
                return await next()
        if not (direct or event["type"] == "app_mention"):
            # A plain channel message: answered only as a reply in a thread Deskhand is part
            # of. One that mentions Deskhand is answered through its app_mention copy instead.
            mentions_bot = f"<@{context.bot_user_id}>" in (event.get("text") or "")
            if not in_thread or mentions_bot or not known:
                return await context.ack()
        context["envelope"] = envelope_from_event(team, event, bot_user_id=context.bot_user_id)
        return await next()


def teammate_reply(event: dict, team: str, email_session: str, bot_user_id: str | None) -> TeammateReply:
    text = event.get("text") or ""
    return TeammateReply(
        team=team, user=event["user"], channel=event["channel"], ts=event["ts"], session_id=email_session,
        text=plain_text(text, bot_user_id).strip(),
        note=text.lstrip().startswith("//") or f"<@{bot_user_id}>" in text)


class Dedup(AsyncMiddleware):
    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next):
        body, context = req.body, req.context
        if body.get("type") != "event_callback":
            return await next()
        store, event = context["store"], body.get("event") or {}
        keys = [f"slack:event:{body.get('event_id')}"]
        if event.get("client_msg_id"):
            keys.append(f"slack:msg:{context.team_id}:{event['client_msg_id']}")
        if await store.mark_processed_all(keys, "slack") or context.get("mail_reply") is not None:
            return await next()  # a teammate's email reply is keyed by its ts: a second run sends nothing
        envelope = context.get("envelope")
        if envelope is not None and await store.inbox_get(envelope.id) is None:
            # Seen, yet never stored: the process stopped between the two. Let it through.
            return await next()
        log.info("duplicate_event", event_id=body.get("event_id"),
                 retry=(req.headers.get("x-slack-retry-num") or ["0"])[0])
        return await context.ack()
