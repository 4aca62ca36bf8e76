"""SlackMailMirror: every email conversation as a thread in the tenant's support channel.

The mail bridge calls it through its `MailMirror` seam (mailbridge/mirror.py):
- `inbound`: the customer's email, posted in the conversation's thread. The thread's first
  post (subject, customer, a "Take over" button) is queued before anything else of it. Mail
  the bridge hands straight to a person also gets the handoff card. Held mail (auto-replies,
  lists) shows only in a conversation that already has a thread: it never opens one;
- `outbound`: what went out by email: Deskhand's reply, followed by the approval card when
  the reply proposes a refund and by the handoff card when it handed the conversation to a
  person; a notice (an approval's outcome); a teammate's reply, confirmed;
- `team_notice`: in the conversation's thread, or at the top of the support channel when it
  is about no conversation (a message that could not be parsed at all, say).

Every post is written to the Slack outbox with a key (a call repeated after a crash posts
nothing new) and posted, in order, by the responder's retrier. A post into a thread names
its conversation (`mirror_of`); the responder looks the thread up when it posts, so replies
wait for a thread whose first post has not gone out yet. Nothing here calls Slack, so mail
that arrives while Slack is unreachable is mirrored when it is back.

The way back, a teammate's reply in the thread, is `SlackOps.teammate_reply`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from bot.contracts import MessageEnvelope
from bot.logs import get_logger
from bot.shadow import is_shadow
from bot.slack import blocks as bk
from bot.slack.responder import redacted_transcript

log = get_logger("deskhand.slack.mail_mirror")


class SlackMailMirror:
    def __init__(self, store, settings) -> None:
        self.store = store
        self.settings = settings
        self._wake: Callable[[], None] = lambda: None

    def attach(self, wake: Callable[[], None]) -> None:
        """Called by the Slack app once it runs: wake its retrier when something is queued."""
        self._wake = wake

    # -- MailMirror ----------------------------------------------------------------------------
    async def inbound(self, envelope: MessageEnvelope, *, disposition: str) -> None:
        if disposition == "held" and await self.store.mirror_thread(envelope.session_id) is None:
            return  # auto-replies and list mail open no thread; in a conversation's thread they show
        meta = envelope.metadata
        flags = [f for f in meta.get("flags", []) if f != "no_message_id"]
        text, blocks = bk.mail_in(customer=envelope.user_id, text=envelope.text, flags=flags,
                                  attachments=envelope.attachments)
        await self._in_thread(envelope.tenant_id, envelope.session_id, text, blocks,
                              key=f"mail_in:{envelope.id}", envelope=envelope)
        if disposition == "human":  # the bridge handed it to a person before any answer
            session = await self.store.session_get(envelope.session_id) or {"metadata": {}}
            await self.handoff_card(envelope.tenant_id, envelope.session_id, who=envelope.user_id,
                                    reason=session["metadata"].get("handoff_reason") or "this email needs a person",
                                    key=envelope.id)

    async def outbound(self, *, tenant_id: str, session_id: str, text: str, message_id: str, kind: str, to: str,
                       pending_action_id: str | None = None, handed_off: bool = False) -> None:
        fallback, blocks = bk.mail_out(kind=kind, to=to, text=text)
        await self._in_thread(tenant_id, session_id, fallback, blocks, key=f"mail_out:{message_id}")
        if pending_action_id:
            await self._approval_card(tenant_id, session_id, pending_action_id, customer=to)
        if handed_off:
            await self.handoff_card(tenant_id, session_id, who=to, reason="asked for a human", key=message_id)

    async def team_notice(self, tenant_id: str, text: str, **info: Any) -> None:
        if info.get("disposition") == "human":
            return  # its handoff card, posted with the message, says the same and has the button
        fallback, blocks = bk.notice(f"⚠️ {text}")
        session_id = info.get("session_id")
        key = f"mail_notice:{info.get('inbox_id') or info.get('outbox_id') or ''}:{_digest(text)}"
        if session_id:
            await self._in_thread(tenant_id, session_id, fallback, blocks, key=key)
        elif support := self._support(tenant_id):
            await self._queue(tenant_id, "", {"op": "post", "channel": support, "text": fallback, "blocks": blocks},
                              key=key)

    # -- cards in the thread --------------------------------------------------------------------
    async def handoff_card(self, tenant_id: str, session_id: str, *, who: str, reason: str, key: str) -> None:
        """The handoff card, with its "Hand back" button, in the conversation's thread."""
        excerpt = await redacted_transcript(self.store, session_id)
        text, blocks = bk.handoff_card(session_id=session_id, who=who, where=bk.EMAIL_THREAD, reason=reason,
                                       excerpt=excerpt)
        await self._in_thread(tenant_id, session_id, text, blocks, key=f"handoff_card:{session_id}:{key}",
                              record={"session": session_id, "key": f"handoff_card:{key}"})

    async def _approval_card(self, tenant_id: str, session_id: str, action_id: str, *, customer: str) -> None:
        action = await self.store.pending_get(action_id)
        if action is None or action.status != "pending" or action.tenant_id != tenant_id:
            return
        text, blocks = bk.approval_card(action_id=action_id, args=action.args, requester=action.requested_by,
                                        where=bk.EMAIL_THREAD)
        await self._in_thread(tenant_id, session_id, text, blocks, key=f"approval_card:{action_id}",
                              record={"pending_card": action_id})

    # -- queueing ------------------------------------------------------------------------------
    def _support(self, tenant_id: str) -> str | None:
        policy = self.settings.policy(tenant_id)
        return None if is_shadow(policy, "email") else (policy.support_channel or None)

    async def _in_thread(self, tenant_id: str, session_id: str, text: str, blocks: list[dict], *, key: str,
                         envelope: MessageEnvelope | None = None, record: dict | None = None) -> None:
        support = self._support(tenant_id)
        if support is None:
            return
        if await self.store.mirror_thread(session_id) is None:
            await self._open_thread(tenant_id, session_id, support, envelope)
        payload = {"op": "post", "channel": support, "mirror_of": session_id, "text": text, "blocks": blocks}
        if record:
            payload["record"] = record
        await self._queue(tenant_id, session_id, payload, key=key)

    async def _open_thread(self, tenant_id: str, session_id: str, support: str,
                           envelope: MessageEnvelope | None) -> None:
        """Queue the thread's first post (a no-op once queued: the key holds)."""
        envelope = envelope or await self.store.inbox_latest(session_id, "email")
        customer = envelope.user_id if envelope else "a customer"
        subject = (envelope.metadata.get("thread_subject") or envelope.metadata.get("subject") or "") if envelope else ""
        text, blocks = bk.mail_thread(session_id=session_id, customer=customer, subject=subject)
        await self._queue(tenant_id, session_id, {"op": "post", "channel": support, "text": text, "blocks": blocks,
                                                  "record": {"mirror": session_id}},
                          key=f"mail_thread:{session_id}")

    async def _queue(self, tenant_id: str, session_id: str, payload: dict, *, key: str) -> None:
        await self.store.outbox_add(tenant_id, "slack", session_id, "", {"team": tenant_id, **payload}, key=key)
        self._wake()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
