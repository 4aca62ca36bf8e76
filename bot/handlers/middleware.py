"""Cross-cutting concerns of every Slack request, one small bolt middleware each.

Each is bolt's own shape, `async_process(req, resp, next)` (no per-call argument
injection). `register` installs them in this order (after bolt's own authorization and
self-event filter, which already drop Deskhand's own posts):

1. `Provide`: Deskhand's services into the context, so listeners ask for them by name.
2. `BindLogContext`: tenant, channel and a correlation id bound to structlog's
   contextvars for everything the request logs (jobs it spawns inherit them).
3. `IgnoreNoise`: other bots, edits, deletions and other message subtypes are acked and
   dropped: Slack must not redeliver them, and Deskhand must not answer them.
4. `ToEnvelope`: translates a message into its `MessageEnvelope` and asks the orchestrator
   whose it is (`Orchestrator.route`, bot/conversations.py): Deskhand's (a DM, a mention, or
   a reply in a thread Deskhand is part of) puts the envelope in the context; a teammate's
   message in a thread that mirrors an email conversation becomes a `TeammateReply`
   (`mail_reply`) instead, their answer to the customer; anything else is acked and dropped.
5. `Dedup`: a persisted record of event ids and client_msg_ids (`Orchestrator.first_delivery`). A
   redelivered event (Slack's retries, `retry_attempt` > 0) is acked and dropped, even
   after a restart. It runs after (4) because Slack sends a mention in a channel twice (as
   `app_mention` and as `message`) with the same client_msg_id: only the copy that is going
   to be answered may claim it.

Since envelope ids are fixed by the message (`bot/slack_ids.py`), `orchestrator.accept`
itself is idempotent too: two deliveries racing past (5) still store the message once.
No middleware touches the store: what is decided from stored state, the orchestrator decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.contracts import new_correlation_id
from bot.handlers.events import envelope_from_event
from bot.handlers.payloads import teammate_reply
from bot.logs import get_logger

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
        # An event's correlation id is minted from its event id, so Slack's redelivery of it
        # logs under the same id; the envelope (`ToEnvelope`) carries it into the turn.
        event_id = body.get("event_id")
        correlation_id = (new_correlation_id(f"slack:{context.team_id}:{event_id}") if event_id
                          else body.get("trigger_id") or (body.get("event") or {}).get("ts"))
        context["correlation_id"] = correlation_id
        structlog.contextvars.bind_contextvars(
            tenant_id=context.team_id, channel="slack", slack_channel=context.channel_id,
            correlation_id=correlation_id,
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
        envelope = envelope_from_event(context.team_id, event, bot_user_id=context.bot_user_id,
                                       event_id=req.body.get("event_id"),
                                       correlation_id=context["correlation_id"])
        route = await context["orchestrator"].route(envelope)  # whose it is: bot/conversations.py
        if route.to == "teammate_mail":
            context["mail_reply"] = teammate_reply(event, context.team_id, route.mail_session, context.bot_user_id)
        elif route.to == "deskhand":
            context["envelope"] = envelope
        else:
            return await context.ack()
        return await next()


class Dedup(AsyncMiddleware):
    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Next):
        body, context = req.body, req.context
        if body.get("type") != "event_callback":
            return await next()
        event, envelope = body.get("event") or {}, context.get("envelope")
        keys = [f"slack:event:{body.get('event_id')}"]
        if event.get("client_msg_id"):
            keys.append(f"slack:msg:{context.team_id}:{event['client_msg_id']}")
        # New, or seen yet never stored (the process stopped between the two): let it through.
        # A teammate's email reply is keyed by its ts: a second run sends nothing.
        if (await context["orchestrator"].first_delivery(keys, "slack", envelope.id if envelope else None)
                or context.get("mail_reply") is not None):
            return await next()
        log.info("duplicate_event", event_id=body.get("event_id"),
                 retry=(req.headers.get("x-slack-retry-num") or ["0"])[0])
        return await context.ack()
