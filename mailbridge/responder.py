"""EmailResponder: how a turn's outcome reaches an email customer (`Surfaces.email`).

- `deliver(envelope, outcome)`: the reply to the customer's message, as text plus HTML, with
  `In-Reply-To`/`References` from that message and a "Re:" subject.
- `follow_up(envelope, outcome)`: a degraded turn's late answer, one email after the reply
  that said we would follow up (bot/deadline.py).
- `notify(session, text, **info)`: a message outside a turn (an approval's outcome), sent
  as a reply to the customer's latest email in the conversation.
- `reply_as_teammate(session_id, text, author=…, key=…)`: a teammate's reply (the takeover
  from the Slack mirror), not marked as automatic.

Every message is queued in the persistent outbox, never sent inline: the outbox loop sends
it through the relay with retries. Before it is queued, its Message-ID (and its subject key)
is recorded in `email_threads`, so the customer's reply to it continues the same session.

Each message has an idempotency key (the inbox id it answers, the notice, the teammate's
message) from which its Message-ID is derived. A turn that is delivered again after a crash
builds the same message and the outbox keeps one copy: one reply per customer message.
A reply whose conversation a teammate took over while the turn ran is not sent (the team
is told in the mirror).
"""

from __future__ import annotations

import hashlib
import html
import json
from typing import Any

from bot.contracts import Citation, MessageEnvelope
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.logs import get_logger
from bot.render import to_html, to_text
from mailbridge.mirror import MailMirror
from mailbridge.outbox import Outbox, OutboxItem, build_reply, html_page
from mailbridge.parse import ParsedEmail
from mailbridge.threading import normalise_subject, subject_key

log = get_logger("deskhand.mail.responder")


def render_text(reply: str, citations: list[Citation], signature: str) -> str:
    """The text/plain part: the Markdown reply as plain text (bot/render.py), its sources
    and the signature."""
    parts = [to_text(reply)]
    if citations:
        lines = []
        for c in citations:
            title = f"{c.title} — {c.section}" if c.section and c.section != c.title else c.title
            lines.append(f"- {title}: {c.url}" if c.url else f"- {title}")
        parts.append("Sources:\n" + "\n".join(lines))
    parts.append(f"-- \n{signature}")
    return "\n\n".join(parts) + "\n"


def render_html(reply: str, citations: list[Citation], signature: str) -> str:
    """The text/html part: the Markdown reply as escaped HTML, its sources and the signature."""
    page = html_page(to_html(reply))
    extra = ""
    if citations:
        items = []
        for c in citations:
            title = html.escape(c.title + (f" — {c.section}" if c.section and c.section != c.title else ""))
            items.append(f'<li><a href="{html.escape(c.url, quote=True)}">{title}</a></li>' if c.url else f"<li>{title}</li>")
        extra += "<p>Sources:</p>\n<ul>\n" + "\n".join(items) + "\n</ul>\n"
    extra += f'<p style="color:#666">-- <br>\n{html.escape(signature)}</p>\n'
    return page.replace("\n</body>", "\n" + extra + "</body>", 1)


def parent_of(envelope: MessageEnvelope) -> ParsedEmail:
    """The customer's message, as `build_reply` needs it, from the envelope's metadata."""
    meta = envelope.metadata
    return ParsedEmail(
        message_id=meta.get("message_id") or f"<{envelope.id}@deskhand.invalid>",
        in_reply_to=meta.get("in_reply_to"),
        references=list(meta.get("references") or []),
        subject=meta.get("thread_subject") or meta.get("subject") or "",
        from_addr=meta.get("customer") or envelope.user_id,
        flags=[f for f in meta.get("flags", []) if f == "no_message_id"],
    )


class EmailResponder:
    def __init__(self, *, store, settings, outbox: Outbox, mirror: MailMirror, call_mirror) -> None:
        self.store = store
        self.settings = settings
        self.outbox = outbox
        self.mirror = mirror
        self._call_mirror = call_mirror  # bounded and logged: see MailBridge

    # -- the Responder protocol ---------------------------------------------------------
    async def deliver(self, envelope: MessageEnvelope, outcome) -> None:
        if outcome.reply is None or envelope.metadata.get("disposition", "answer") != "answer":
            return  # held and unanswerable mail never gets an automatic reply
        if outcome.state != "HANDED_OFF" and await self._taken_over(envelope.session_id):
            # A teammate took the conversation over while this turn ran: theirs is the answer.
            log.info("mail_reply_withheld", inbox_id=envelope.id, session_id=envelope.session_id)
            await self._call_mirror("team_notice", self.mirror.team_notice(
                envelope.tenant_id, "Deskhand's answer to this email was not sent: a teammate took the "
                "conversation over while it was being written.", session_id=envelope.session_id,
                inbox_id=envelope.id))
            return
        await self._queue_answer(envelope, outcome, key=f"reply:{envelope.id}", kind="reply",
                                 mirror_info={"pending_action_id": outcome.pending_action_id,
                                              "handed_off": outcome.state == "HANDED_OFF"})

    async def follow_up(self, envelope: MessageEnvelope, outcome) -> None:
        """A degraded turn's late answer (bot/deadline.py): one more email in the thread, after
        the reply that said we would follow up. Keyed `late:<inbox id>`: sent once."""
        if outcome.reply is None or envelope.metadata.get("disposition", "answer") != "answer":
            return
        if await self._taken_over(envelope.session_id):  # a teammate has it now: theirs is the answer
            log.info("mail_follow_up_withheld", inbox_id=envelope.id, session_id=envelope.session_id)
            return
        await self._queue_answer(envelope, outcome, key=f"late:{envelope.id}", kind="follow_up",
                                 mirror_info={"pending_action_id": outcome.pending_action_id})

    async def _queue_answer(self, envelope: MessageEnvelope, outcome, *, key: str, kind: str,
                            mirror_info: dict) -> None:
        """A turn's answer as an email (text and HTML, with the tenant's signature), keyed."""
        signature = self._signature(envelope.tenant_id)
        await self._queue(
            envelope,
            text=render_text(outcome.reply, outcome.citations, signature),
            html_body=render_html(outcome.reply, outcome.citations, signature),
            summary=outcome.reply, key=key, kind=kind, inbox_id=envelope.id, mirror_info=mirror_info,
        )

    async def _taken_over(self, session_id: str) -> bool:
        session = await self.store.session_get(session_id)
        return session is not None and session["status"] == HANDED_OFF

    async def notify(self, session: dict, text: str, **info: Any) -> None:
        parent = await self.store.inbox_latest(session["id"], "email")
        if parent is None:
            log.warning("mail_notify_without_email", session_id=session["id"])
            return
        digest = hashlib.sha256(json.dumps([text, info], sort_keys=True, default=str).encode()).hexdigest()[:24]
        signature = self._signature(parent.tenant_id)
        await self._queue(
            parent,
            text=render_text(text, [], signature),
            html_body=render_html(text, [], signature),
            summary=text,
            key=f"notice:{session['id']}:{digest}",
            kind="notice",
        )

    # -- the takeover seam ----------------------------------------------------------------
    async def reply_as_teammate(self, session_id: str, text: str, *, author: str, key: str) -> OutboxItem:
        """Send a teammate's reply to the customer of an email session, threaded under the
        customer's latest message. `key` identifies the teammate's message (e.g. the Slack
        message ts), so a redelivered event sends one email. LookupError when the session
        has no email."""
        parent = await self.store.inbox_latest(session_id, "email")
        if parent is None:
            raise LookupError(f"session {session_id} has no email to reply to")
        return await self._queue(
            parent,
            text=text.strip() + "\n",
            html_body=None,
            summary=text,
            key=f"teammate:{session_id}:{key}",
            kind="teammate",
            from_name=f"{author} at {self._team_name(parent.tenant_id)}",
            auto_submitted=False,
        )

    # -- building and queueing ---------------------------------------------------------------
    async def _queue(
        self,
        parent_env: MessageEnvelope,
        *,
        text: str,
        html_body: str | None,
        summary: str,
        key: str,
        kind: str,
        inbox_id: str = "",
        from_name: str | None = None,
        auto_submitted: bool = True,
        mirror_info: dict | None = None,
    ) -> OutboxItem:
        settings = self.settings
        meta = parent_env.metadata
        to = meta.get("customer") or parent_env.user_id
        domain = settings.mail_from.rpartition("@")[2] or "deskhand.invalid"
        msg = build_reply(
            parent_of(parent_env),
            text=text,
            html_body=html_body,
            from_addr=settings.mail_from,
            from_name=from_name if from_name is not None else self._team_name(parent_env.tenant_id),
            to=to,
            cc=meta.get("cc") or [],
            auto_submitted=auto_submitted,
            message_id=f"<deskhand.{hashlib.sha256(key.encode()).hexdigest()[:24]}@{domain}>",
        )
        message_id = str(msg["Message-ID"])
        keys = [message_id, subject_key(normalise_subject(str(msg["Subject"])), to)]
        # Recorded before it can leave: the customer's answer must find this session.
        await self.store.email_thread_record([k for k in keys if k], parent_env.session_id, parent_env.tenant_id)
        item = await self.outbox.enqueue(
            msg, session_id=parent_env.session_id, tenant_id=parent_env.tenant_id, inbox_id=inbox_id, key=key
        )
        log.info("mail_queued", kind=kind, session_id=parent_env.session_id, outbox_id=item.id)
        await self._call_mirror(
            "outbound",
            self.mirror.outbound(
                tenant_id=parent_env.tenant_id, session_id=parent_env.session_id, text=summary,
                message_id=message_id, kind=kind, to=to, **(mirror_info or {}),
            ),
        )
        return item

    def _team_name(self, tenant_id: str) -> str:
        return self.settings.policy(tenant_id).name or "Deskhand"

    def _signature(self, tenant_id: str) -> str:
        name = self.settings.policy(tenant_id).name
        return f"Deskhand, the {name} support assistant" if name else "Deskhand, the support assistant"
