"""Whose a Slack message is, and which conversation a Slack DM message belongs to.

Whose (`route_slack_message`), decided from what the handler saw (the envelope's metadata)
and who owns the thread:
- **Deskhand's to answer**: a DM message, a mention, or a reply in a thread that is a
  Deskhand conversation (a session exists for it). A reply there that mentions Deskhand is
  answered through its `app_mention` copy, not its `message` copy;
- **a teammate's reply to an email customer**: a message, by someone of the workspace, in a
  thread that mirrors an email conversation (bot/slack/mail_mirror.py). Its `app_mention`
  copy is dropped: the `message` copy is the one that counts;
- **nobody's**: anything else (a plain channel message), acked and dropped.

Which conversation (`place_dm_message`): in a channel a conversation is a thread. In a DM most people answer the bot's question at
the top level instead of in its thread, so a top-level DM message may continue the
person's latest case in that DM (the case of their newest earlier message there):

- **a teammate has it** (session `handed_off`) and its last message is at most
  `dm_question_window_hours` old: the message joins it and Deskhand stays silent;
- **Deskhand asked them something** (case state `awaiting`, e.g. an order number), within
  `dm_question_window_hours`;
- **it is open**: session status `active` (never handed off, or handed back) and its last
  message, the customer's or Deskhand's, at most `dm_case_window_minutes` old. A completed
  answer is no exception: within the window a follow-up still belongs to it. Any other
  status never continues.

Otherwise it starts a new conversation, as in a channel. A reply inside a DM thread joins
the conversation its thread's first message joined. The decision is made once, when the
message is accepted, and stored with it (the inbox row's session), so a turn resumed after
a restart stays in the same conversation; it is measured from the message's own receipt
time. Email and the CLI name their conversations themselves and never come here.

Where the reply goes: under the new message, in its own thread, as for any DM message. The
person looks at the message they just sent, and an answer in an older thread would be out
of sight. Only the case state and history come from the continued conversation (its
session id); the envelope keeps the new message's `thread_ts`, so the placeholder and its
`chat.update` land there. Notices sent later (an approval's outcome) go under the newest
message of the conversation (`SlackResponder.notify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.contracts import Channel, MessageEnvelope
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.logs import get_logger
from bot.slack_ids import message_id, parse_session_id

log = get_logger("deskhand.conversations")

ACTIVE = "active"


@dataclass(frozen=True)
class Route:
    """Whose a Slack message is (`route_slack_message`)."""

    to: Literal["deskhand", "teammate_mail", "nobody"]
    mail_session: str | None = None  # for "teammate_mail": the email conversation the thread mirrors


DESKHAND, NOBODY = Route("deskhand"), Route("nobody")


async def route_slack_message(store, envelope: MessageEnvelope) -> Route:
    """Whose a Slack message is, from what the handler saw (`bot/handlers/events.py`
    `envelope_from_event`) and, for a reply in a channel thread, who owns the thread."""
    meta, ref = envelope.metadata, parse_session_id(envelope.session_id)
    if ref is None or "message_ts" not in meta:
        return NOBODY
    direct = envelope.channel is Channel.slack_dm
    in_thread = meta["thread_ts"] != meta["message_ts"]
    mention = meta.get("slack_event") == "app_mention"
    known = False
    if not direct and in_thread:
        # A thread Deskhand answers in, or one mirroring an email conversation (a teammate's
        # message there is their reply to the customer)? One store call says which.
        known, mirrored = await store.thread_owner(envelope.session_id, ref.team, ref.channel, ref.thread_ts)
        if not known and mirrored is not None:
            if mention or meta.get("user_team", ref.team) != ref.team:
                return NOBODY  # its `message` copy is the one that counts
            return Route("teammate_mail", mirrored)
    if not (direct or mention) and (not in_thread or meta.get("mentions_bot") or not known):
        # A plain channel message: answered only as a reply in a thread Deskhand is part
        # of. One that mentions Deskhand is answered through its app_mention copy instead.
        return NOBODY
    return DESKHAND


def continues_because(case: dict | None, at: datetime, *, case_window: timedelta,
                      question_window: timedelta) -> str | None:
    """Why a top-level DM message sent `at` continues `case` (`Store.latest_case_before`),
    or None when it starts a new conversation."""
    if case is None:
        return None
    age = max(at - datetime.fromisoformat(case["last_activity"]), timedelta(0))
    if case["status"] == HANDED_OFF:
        return "handed_off" if age <= question_window else None
    if case["status"] != ACTIVE:
        return None
    if case["case_state"].get("awaiting") and age <= question_window:
        return "awaiting"
    return "open" if age <= case_window else None


async def place_dm_message(store, settings, envelope: MessageEnvelope) -> MessageEnvelope:
    """The envelope with the session it belongs to (unchanged unless a Slack DM message
    continues an earlier conversation)."""
    meta = envelope.metadata
    ref = parse_session_id(envelope.session_id)
    if envelope.channel is not Channel.slack_dm or ref is None or "message_ts" not in meta:
        return envelope
    if meta["thread_ts"] != meta["message_ts"]:
        root = await store.inbox_get(message_id(ref.team, ref.channel, meta["thread_ts"]))
        if root is None or root["session_id"] == envelope.session_id:
            return envelope
        return _moved(envelope, root["session_id"], "thread")
    case = await store.latest_case_before(f"slack:{ref.team}:{ref.channel}:", envelope.id)
    reason = continues_because(
        case, envelope.received_at, case_window=timedelta(minutes=settings.dm_case_window_minutes),
        question_window=timedelta(hours=settings.dm_question_window_hours))
    if case is None or reason is None:
        return envelope
    log.info("dm_case_continued", inbox_id=envelope.id, continued=case["session_id"], reason=reason)
    return _moved(envelope, case["session_id"], reason)


def _moved(envelope: MessageEnvelope, session_id: str, reason: str) -> MessageEnvelope:
    return envelope.model_copy(update={
        "session_id": session_id, "metadata": {**envelope.metadata, "continues": reason}})
