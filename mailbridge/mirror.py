"""The seam between email and the team's Slack: what the mail bridge tells the mirror.

DESIGN §7: every email conversation is mirrored into a thread in the tenant's support
channel, and a teammate's reply in that thread goes out as the email reply (the takeover).
The bridge does not know Slack. It calls a `MailMirror` (the Slack one is
bot/slack/mail_mirror.py; `deskhand run` plugs it in):

- `inbound(envelope, disposition)` for every stored inbound email (answered, handed to a
  human, or held);
- `outbound(...)` for every email the bridge queues: the bot's replies, notices (approval
  outcomes) and teammates' replies. A reply that proposes a refund names the pending action
  (`pending_action_id`, for an approval card), and one that handed the conversation to a
  person says so (`handed_off`);
- `team_notice(tenant_id, text, **info)` when a teammate should look: a broken, oversized or
  unanswerable message, a bounce, a reply the relay refused for good.

The way back, a teammate's reply, is `EmailResponder.reply_as_teammate(session_id, text,
author=…, key=…)`; the session id is `envelope.session_id`.

Calls are at least once (a redelivered email after a crash calls `inbound` again): key what
you post by `envelope.id` / `message_id`. They should return quickly; a mirror that posts
to Slack can hand the post to its own job group. A mirror that raises or hangs never stops
mail: the bridge logs the error and carries on (`MailBridge` bounds each call).
"""

from __future__ import annotations

from typing import Any, Protocol

from bot.contracts import MessageEnvelope
from bot.logs import get_logger

log = get_logger("deskhand.mail.mirror")


class MailMirror(Protocol):
    async def inbound(self, envelope: MessageEnvelope, *, disposition: str) -> None: ...

    async def outbound(
        self, *, tenant_id: str, session_id: str, text: str, message_id: str, kind: str, to: str,
        pending_action_id: str | None = None, handed_off: bool = False,
    ) -> None: ...

    async def team_notice(self, tenant_id: str, text: str, **info: Any) -> None: ...


class LogMirror:
    """The default when no Slack mirror is plugged in: notices go to the log (the audit log
    holds them too)."""

    async def inbound(self, envelope: MessageEnvelope, *, disposition: str) -> None:
        log.info("mail_inbound", inbox_id=envelope.id, session_id=envelope.session_id, disposition=disposition)

    async def outbound(
        self, *, tenant_id: str, session_id: str, text: str, message_id: str, kind: str, to: str,
        pending_action_id: str | None = None, handed_off: bool = False,
    ) -> None:
        log.info("mail_outbound", session_id=session_id, message_id=message_id, kind=kind,
                 pending_action_id=pending_action_id, handed_off=handed_off)

    async def team_notice(self, tenant_id: str, text: str, **info: Any) -> None:
        log.warning("mail_team_notice", tenant_id=tenant_id, notice=text, **info)
