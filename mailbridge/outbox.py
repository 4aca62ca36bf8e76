"""Outbound email: build the reply, send it through the relay, retry until it is delivered or given up.

- `build_reply` makes the reply `EmailMessage`: text plus an HTML alternative, "Re: "
  subject, `In-Reply-To` (the parent's Message-ID) and `References` (the parent's references
  plus its id), a fresh `Message-ID`, and `Auto-Submitted: auto-replied` for the bot's own
  answers (RFC 3834), so that autoresponders do not answer back.
- `send_message` hands one message to the relay with aiosmtplib and sorts failures into
  `PermanentSendError` (5xx: retrying cannot help) and `TemporarySendError` (everything else).
- `Outbox` drains a persistent outbox through a small store protocol (`OutboxStore`),
  retrying as the outbox's one `RetryPolicy` says (bot/outbox_policy.py). The message is
  serialised once, at enqueue, so every attempt sends the same bytes with the same Message-ID.

Delivery is once per successful relay hand-off: an item is marked sent right after the relay
accepts it and is never picked again. The one gap is a crash between the relay's 250 and
`outbox_mark_sent`; the item is then sent again on restart, with the same Message-ID, which
mail clients use to recognise the duplicate.
"""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, formataddr, make_msgid
from typing import Protocol

import aiosmtplib

from bot.outbox_policy import RetryPolicy
from mailbridge.parse import ParsedEmail

MAX_REFERENCES = 20


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- building ------------------------------------------------------------------------------


def reply_subject(subject: str) -> str:
    subject = " ".join((subject or "").split())
    if not subject:
        return "Re: your message"
    return subject if re.match(r"(?i)^re\s*:", subject) else f"Re: {subject}"


def reply_references(parent: ParsedEmail) -> list[str]:
    """The parent's References plus its own id; the thread root is always kept."""
    refs = [r for r in parent.references if r != parent.message_id]
    if not _generated_id(parent):
        refs.append(parent.message_id)
    if len(refs) > MAX_REFERENCES:
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
    return refs


def _generated_id(parent: ParsedEmail) -> bool:
    # A stand-in id that Deskhand made up for a message without one: its author never saw
    # it, so it has no place in In-Reply-To.
    return "no_message_id" in parent.flags


def text_to_html(text: str) -> str:
    """Plain text as minimal HTML: escaped, paragraphs on blank lines, <br> on newlines."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    body = "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br>' + chr(10))}</p>" for p in paragraphs)
    return html_page(body)


def html_page(body: str) -> str:
    """An HTML fragment (already escaped) as the whole HTML part of an email."""
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body.strip()}\n</body></html>\n'


def build_reply(
    parent: ParsedEmail,
    *,
    text: str,
    from_addr: str,
    from_name: str = "",
    to: str | None = None,
    cc: Iterable[str] = (),
    html_body: str | None = None,
    domain: str | None = None,
    auto_submitted: bool = True,
    now: datetime | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """A reply to `parent`. `to` defaults to the parent's Reply-To, else its From.

    `auto_submitted=False` for a teammate's reply (the takeover), which is not automatic.
    `message_id` fixes the reply's own Message-ID (e.g. derived from what it answers, so a
    reply built twice is the same message); a fresh one is made otherwise.
    """
    recipient = to or parent.reply_address
    if not recipient:
        raise ValueError("the parent message has no address to reply to")
    msg = EmailMessage()
    msg["From"] = formataddr((from_name, from_addr)) if from_name else from_addr
    msg["To"] = recipient
    cc = [c for c in cc if c]
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = reply_subject(parent.subject)
    msg["Date"] = format_datetime(now or utcnow())
    msg["Message-ID"] = message_id or make_msgid(domain=domain or from_addr.rpartition("@")[2] or "deskhand.invalid")
    if not _generated_id(parent):
        msg["In-Reply-To"] = parent.message_id
    refs = reply_references(parent)
    if refs:
        msg["References"] = " ".join(refs)
    if auto_submitted:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text)
    msg.add_alternative(html_body if html_body is not None else text_to_html(text), subtype="html")
    return msg


# --- sending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings) -> RelayConfig:
        """From `bot.config.Settings` (relay_host, relay_port, relay_starttls, relay_*)."""
        return cls(
            host=settings.relay_host,
            port=settings.relay_port,
            starttls=settings.relay_starttls,
            username=settings.relay_username,
            password=settings.relay_password,
        )


class SendError(Exception):
    pass


class TemporarySendError(SendError):
    """The relay could not take the message now (down, 4xx, timeout): retry later."""


class PermanentSendError(SendError):
    """The relay refused the message for good (5xx): retrying will not help."""


async def send_message(msg: EmailMessage | bytes, relay: RelayConfig) -> None:
    """Hand one message to the relay. Raises `TemporarySendError` or `PermanentSendError`."""
    if isinstance(msg, (bytes, bytearray)):
        msg = BytesParser(policy=policy.default).parsebytes(bytes(msg))  # type: ignore[assignment]
    try:
        await aiosmtplib.send(
            msg,
            hostname=relay.host,
            port=relay.port,
            start_tls=relay.starttls,
            username=relay.username or None,
            password=relay.password or None,
            timeout=relay.timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        cls = PermanentSendError if codes and all(c >= 500 for c in codes) else TemporarySendError
        raise cls(f"recipients refused: {codes}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        cls = PermanentSendError if exc.code >= 500 else TemporarySendError
        raise cls(f"{exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
        raise TemporarySendError(f"{type(exc).__name__}: {exc}") from exc


# --- the outbox ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    id: str
    raw: bytes  # the serialised message, Message-ID included
    message_id: str = ""
    session_id: str = ""
    tenant_id: str = ""
    inbox_id: str = ""  # the inbound message this answers, if any
    key: str = ""  # idempotency: a store keeps one item per key
    attempts: int = 0  # failed attempts so far
    next_attempt_at: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)


class OutboxStore(Protocol):
    """What `Outbox` needs from the store (the SQLite `outbox` table, in Deskhand).

    - `outbox_add(item)`: insert a pending item, due at `item.next_attempt_at` (now). It
      may return the id it stored the item under (a database row id); with `item.key`, a
      store may keep a single item per key and return the existing one's id.
    - `outbox_due(now, limit)`: pending items with `next_attempt_at <= now`, oldest first.
    - `outbox_mark_sent(item_id, sent_at)`: the relay accepted it; never return it again.
    - `outbox_mark_failed(item_id, error, next_attempt_at)`: increment `attempts`, keep the
      error; `next_attempt_at=None` means give up (status "dead", shown to an operator).
    """

    async def outbox_add(self, item: OutboxItem) -> str | None: ...

    async def outbox_due(self, now: datetime, limit: int) -> list[OutboxItem]: ...

    async def outbox_mark_sent(self, item_id: str, sent_at: datetime) -> None: ...

    async def outbox_mark_failed(self, item_id: str, error: str, next_attempt_at: datetime | None) -> None: ...


class MemoryOutboxStore:
    """`OutboxStore` in memory: the reference semantics, and a stand-in for tests."""

    def __init__(self) -> None:
        self.items: dict[str, OutboxItem] = {}
        self.status: dict[str, str] = {}
        self.errors: dict[str, list[str]] = {}

    async def outbox_add(self, item: OutboxItem) -> str | None:
        if item.key:
            for existing in self.items.values():
                if existing.key == item.key:
                    return existing.id
        self.items[item.id] = item
        self.status[item.id] = "pending"
        return None

    async def outbox_due(self, now: datetime, limit: int) -> list[OutboxItem]:
        due = [
            it
            for it in self.items.values()
            if self.status[it.id] == "pending" and (it.next_attempt_at is None or it.next_attempt_at <= now)
        ]
        return sorted(due, key=lambda it: it.created_at)[:limit]

    async def outbox_mark_sent(self, item_id: str, sent_at: datetime) -> None:
        self.status[item_id] = "sent"

    async def outbox_mark_failed(self, item_id: str, error: str, next_attempt_at: datetime | None) -> None:
        item = self.items[item_id]
        self.items[item_id] = replace(item, attempts=item.attempts + 1, next_attempt_at=next_attempt_at)
        self.errors.setdefault(item_id, []).append(error)
        if next_attempt_at is None:
            self.status[item_id] = "dead"


@dataclass
class RunResult:
    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


Sender = Callable[[bytes, RelayConfig], Awaitable[None]]


class Outbox:
    """Sends due items; a failed one is retried as `policy` says (bot/outbox_policy.py, the
    policy every outbox channel shares) and given up after its last attempt.

    One `Outbox` per process: `run_once` holds a lock so two drains never send one item twice.
    """

    def __init__(
        self,
        store: OutboxStore,
        relay: RelayConfig,
        *,
        send: Sender = send_message,
        clock: Callable[[], datetime] = utcnow,
        policy: RetryPolicy | None = None,
        batch: int = 20,
    ) -> None:
        self.store = store
        self.relay = relay
        self._send = send
        self._clock = clock
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def enqueue(
        self, msg: EmailMessage, *, session_id: str = "", tenant_id: str = "", inbox_id: str = "", key: str = ""
    ) -> OutboxItem:
        item = OutboxItem(
            id=f"out_{uuid.uuid4().hex[:16]}",
            raw=msg.as_bytes(policy=policy.SMTP),
            message_id=str(msg.get("Message-ID", "")),
            session_id=session_id,
            tenant_id=tenant_id,
            inbox_id=inbox_id,
            key=key,
            next_attempt_at=self._clock(),
            created_at=self._clock(),
        )
        stored_as = await self.store.outbox_add(item)
        if stored_as:
            item = replace(item, id=str(stored_as))
        self._wake.set()
        return item

    async def run_once(self) -> RunResult:
        """Try every due item once."""
        result = RunResult()
        async with self._lock:
            now = self._clock()
            for item in await self.store.outbox_due(now, self.batch):
                try:
                    await self._send(item.raw, self.relay)
                except PermanentSendError as exc:
                    await self.store.outbox_mark_failed(item.id, str(exc), None)
                    result.dead.append(item.id)
                except Exception as exc:  # TemporarySendError, or anything unexpected
                    retry_at = self.policy.next_attempt(item.attempts + 1, self._clock())
                    await self.store.outbox_mark_failed(item.id, _describe(exc), retry_at)
                    (result.dead if retry_at is None else result.retrying).append(item.id)
                else:
                    await self.store.outbox_mark_sent(item.id, self._clock())
                    result.sent.append(item.id)
        return result

    def wake(self) -> None:
        """Drain now (e.g. after items were made due outside `enqueue`)."""
        self._wake.set()

    async def run(
        self,
        stop: asyncio.Event,
        *,
        poll_s: float = 15.0,
        on_result: Callable[[RunResult], Awaitable[None]] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Drain until `stop` is set; wakes on `enqueue` or every `poll_s` seconds.

        `on_result` sees each drain's result (e.g. to tell the team about items given up).
        With `on_error`, a failing drain (the store unavailable) is reported and the loop
        goes on; without it, the error ends the loop.
        """
        while not stop.is_set():
            self._wake.clear()  # before draining: an enqueue during the drain wakes us again
            try:
                result = await self.run_once()
                if on_result is not None:
                    await on_result(result)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(exc)
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
