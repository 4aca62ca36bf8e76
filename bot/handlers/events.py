"""The message listeners, and how a Slack message becomes a `MessageEnvelope`.

A message for Deskhand is accepted; that is all. A teammate's message in a thread mirroring
an email goes to `SlackOps.teammate_reply`. `ToEnvelope` (middleware) has already asked the
orchestrator whose the message is (`Orchestrator.route`) and put the envelope, or the
teammate's reply, in the context; `Dedup` has dropped repeats. The turn itself runs on the
orchestrator's workers; the placeholder is posted by the responder, after the ack.
"""

from __future__ import annotations

import re

from slack_bolt.app.async_app import AsyncApp

from bot.contracts import Channel, MessageEnvelope
from bot.handlers.plain_text import plain_text
from bot.slack_ids import message_id, session_id


def envelope_from_event(team: str, event: dict, *, bot_user_id: str | None, event_id: str | None = None,
                        correlation_id: str | None = None) -> MessageEnvelope:
    """A Slack message (`message` or `app_mention` event) as Deskhand's envelope, with the
    correlation id minted for its event (middleware `BindLogContext`) and with what the
    handler saw (which event, whether it mentions Deskhand, the author's team), from which
    the orchestrator decides whose it is (`Orchestrator.route`). The user's verified email
    is added when the turn starts (`Surfaces.slack_identity`), not here: asking Slack for it
    must not hold up the ack."""
    channel, ts = event["channel"], event["ts"]
    thread_ts = event.get("thread_ts") or ts
    if event.get("channel_type") == "im" or channel.startswith("D"):
        kind = Channel.slack_dm
    else:
        kind = Channel.slack_thread if thread_ts != ts else Channel.slack_channel
    metadata = {"slack_channel": channel, "thread_ts": thread_ts, "message_ts": ts,
                "client_msg_id": event.get("client_msg_id"), "event_id": event_id,
                "slack_event": event["type"], "mentions_bot": f"<@{bot_user_id}>" in (event.get("text") or ""),
                "user_team": event.get("user_team", team)}
    return MessageEnvelope(
        id=message_id(team, channel, ts), tenant_id=team, channel=kind, user_id=event["user"],
        session_id=session_id(team, channel, thread_ts), text=plain_text(event.get("text") or "", bot_user_id),
        metadata=metadata, **({"correlation_id": correlation_id} if correlation_id else {}),
    )


async def on_message(envelope, orchestrator, responder):
    # The orchestrator decides which conversation the message joins (a top-level DM message
    # may continue an open case); the placeholder then checks that conversation's status.
    envelope = await orchestrator.place(envelope)
    if await orchestrator.accept(envelope):
        responder.acknowledge(envelope)


async def is_mail_reply(context) -> bool:
    return context.get("mail_reply") is not None


async def on_mail_reply(mail_reply, ops):
    """A teammate's answer to an email customer, in the thread mirroring that email."""
    await ops.teammate_reply(mail_reply)


async def on_other_event():
    """Any other event: acked (bolt acks events itself) so Slack does not redeliver it."""


def register(app: AsyncApp) -> None:
    app.event("message", matchers=[is_mail_reply])(on_mail_reply)  # bolt runs the first listener that matches
    app.event("message")(on_message)
    app.event("app_mention")(on_message)


def register_fallback(app: AsyncApp) -> None:
    app.event(re.compile(".*"))(on_other_event)
