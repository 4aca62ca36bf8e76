"""Outbound mail: the reply's headers, a real send to a local SMTP sink, retries."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from bot.outbox_policy import RetryPolicy
from mailbridge.outbox import (
    MemoryOutboxStore,
    Outbox,
    PermanentSendError,
    RelayConfig,
    TemporarySendError,
    build_reply,
    reply_subject,
    send_message,
    text_to_html,
)
from mailbridge.parse import parse_message

DATA = Path(__file__).parent / "data" / "mail"


class Sink:
    """An SMTP handler that records what it receives, or refuses with a fixed answer."""

    def __init__(self, answer: str = "250 OK") -> None:
        self.answer = answer
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.answer.startswith("250"):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return self.answer


async def _serve(sink: Sink, port: int = 0) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SMTP(sink, hostname="sink", loop=loop), "127.0.0.1", port)


async def _close(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


def _parent():
    return parse_message((DATA / "misc" / "reply_in_thread.eml").read_bytes())


def _reply(**kw):
    return build_reply(_parent(), text="Glad it arrived!\n\nDeskhand", from_addr="support@deskhand.example", **kw)


def test_reply_headers():
    msg = _reply(from_name="Deskhand Support")
    assert msg["To"] == "jane.customer@example.com"
    assert msg["From"] == "Deskhand Support <support@deskhand.example>"
    assert msg["Subject"] == "Re: Order 10423 never arrived"
    assert msg["In-Reply-To"] == "<CAJane0002@mail.gmail.com>"
    assert msg["References"].split() == [
        "<CAJane0001@mail.gmail.com>",
        "<reply-0001@deskhand.example>",
        "<CAJane0002@mail.gmail.com>",
    ]
    assert msg["Message-ID"].endswith("@deskhand.example>")
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "Glad it arrived!\n\nDeskhand"
    assert "<p>Glad it arrived!</p>" in msg.get_body(("html",)).get_content()


def test_reply_round_trips_through_our_parser_into_the_same_thread():
    msg = _reply()
    back = parse_message(msg.as_bytes())
    assert back.in_reply_to == "<CAJane0002@mail.gmail.com>"
    assert back.references[-1] == "<CAJane0002@mail.gmail.com>"
    assert back.text == "Glad it arrived!\n\nDeskhand"


def test_reply_options():
    parent = _parent().model_copy(update={"reply_to": ["orders+jane@example.com"]})
    msg = build_reply(
        parent, text="Hi", from_addr="support@deskhand.example", html_body="<b>Hi</b>", auto_submitted=False,
        cc=["agent@shop.example"], domain="mail.deskhand.example",
    )
    assert msg["To"] == "orders+jane@example.com"
    assert msg["Cc"] == "agent@shop.example"
    assert msg["Auto-Submitted"] is None
    assert msg["Message-ID"].endswith("@mail.deskhand.example>")
    assert msg.get_body(("html",)).get_content().strip() == "<b>Hi</b>"


def test_reply_to_a_message_without_message_id():
    parent = parse_message(b"From: a@example.com\nSubject: Help\n\nHello")
    msg = build_reply(parent, text="Hi", from_addr="support@deskhand.example")
    assert msg["In-Reply-To"] is None and msg["References"] is None
    assert msg["Subject"] == "Re: Help"


def test_long_references_keep_the_root():
    refs = " ".join(f"<r{i}@x>" for i in range(40))
    parent = parse_message(f"From: a@example.com\nMessage-ID: <last@x>\nReferences: {refs}\n\nhi".encode())
    msg = build_reply(parent, text="Hi", from_addr="support@deskhand.example")
    sent = msg["References"].split()
    assert len(sent) == 20 and sent[0] == "<r0@x>" and sent[-1] == "<last@x>"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [("Order", "Re: Order"), ("RE: Order", "RE: Order"), ("Fwd: Order", "Re: Fwd: Order"), ("", "Re: your message")],
)
def test_reply_subject(subject: str, expected: str):
    assert reply_subject(subject) == expected


def test_text_to_html_escapes():
    assert text_to_html("a < b\nc\n\nd").count("<p>") == 2
    assert "a &lt; b<br>" in text_to_html("a < b\nc")


async def test_send_to_a_local_sink():
    sink = Sink()
    server = await _serve(sink)
    try:
        port = server.sockets[0].getsockname()[1]
        msg = _reply()
        await send_message(msg, RelayConfig(host="127.0.0.1", port=port))
        [(mail_from, rcpts, raw)] = sink.messages
        assert mail_from == "support@deskhand.example"
        assert rcpts == ["jane.customer@example.com"]
        got = BytesParser(policy=policy.default).parsebytes(raw)
        assert got["Message-ID"] == msg["Message-ID"]
        assert got["In-Reply-To"] == "<CAJane0002@mail.gmail.com>"
    finally:
        await _close(server)


async def test_relay_refusal_is_permanent_and_4xx_is_temporary():
    for answer, error in (("554 5.7.1 Rejected", PermanentSendError), ("451 4.3.0 Try later", TemporarySendError)):
        server = await _serve(Sink(answer))
        try:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(error):
                await send_message(_reply(), RelayConfig(port=port))
        finally:
            await _close(server)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 6, 4, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def _unused_port() -> socket.socket:
    """A bound, non-listening socket: connections to its port are refused until it closes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_relay_down_then_up_delivers_exactly_once():
    clock = Clock()
    store = MemoryOutboxStore()
    reserved = _unused_port()
    port = reserved.getsockname()[1]
    outbox = Outbox(store, RelayConfig(port=port, timeout_s=5), clock=clock, policy=RetryPolicy(base_s=30, jitter=0))
    item = await outbox.enqueue(_reply(), session_id="email:jane")

    # Relay down: the attempt fails and is scheduled 30 s later.
    first = await outbox.run_once()
    assert first.retrying == [item.id] and first.sent == []
    assert store.items[item.id].attempts == 1
    assert store.items[item.id].next_attempt_at == clock.now + timedelta(seconds=30)
    assert "Connect" in store.errors[item.id][0] or "refused" in store.errors[item.id][0].lower()

    # Not due yet: nothing is tried.
    assert (await outbox.run_once()).retrying == []

    # Relay up, time passes: delivered once, then never again.
    reserved.close()
    sink = Sink()
    server = await _serve(sink, port)
    try:
        clock.now += timedelta(seconds=31)
        second = await outbox.run_once()
        assert second.sent == [item.id]
        clock.now += timedelta(hours=5)
        assert (await outbox.run_once()).sent == []
        assert len(sink.messages) == 1
        raw = sink.messages[0][2]
        assert BytesParser(policy=policy.default).parsebytes(raw)["Message-ID"] == item.message_id
        assert store.status[item.id] == "sent"
    finally:
        await _close(server)


async def test_backoff_grows_and_gives_up():
    clock = Clock()
    store = MemoryOutboxStore()
    calls: list[bytes] = []

    async def always_down(raw: bytes, relay: RelayConfig) -> None:
        calls.append(raw)
        raise TemporarySendError("relay down")

    policy = RetryPolicy(max_attempts=5, base_s=10, max_delay_s=60, jitter=0)
    outbox = Outbox(store, RelayConfig(), send=always_down, clock=clock, policy=policy)
    item = await outbox.enqueue(_reply())
    delays = []
    for _ in range(5):
        before = clock.now
        result = await outbox.run_once()
        after = store.items[item.id].next_attempt_at
        if after is not None:
            delays.append((after - before).total_seconds())
            clock.now = after
    assert delays == [10, 20, 40, 60]
    assert result.dead == [item.id] and store.status[item.id] == "dead"
    assert len(calls) == 5 and len(set(calls)) == 1  # the same bytes every time


async def test_permanent_failure_is_not_retried():
    store = MemoryOutboxStore()

    async def refused(raw: bytes, relay: RelayConfig) -> None:
        raise PermanentSendError("550 no such user")

    outbox = Outbox(store, RelayConfig(), send=refused)
    item = await outbox.enqueue(_reply())
    assert (await outbox.run_once()).dead == [item.id]
    assert store.status[item.id] == "dead" and store.errors[item.id] == ["550 no such user"]


async def test_run_loop_sends_on_enqueue_and_stops():
    store = MemoryOutboxStore()
    sent = asyncio.Queue()

    async def record(raw: bytes, relay: RelayConfig) -> None:
        await sent.put(raw)

    outbox = Outbox(store, RelayConfig(), send=record)
    stop = asyncio.Event()
    runner = asyncio.ensure_future(outbox.run(stop, poll_s=3600))
    item = await outbox.enqueue(_reply())
    raw = await asyncio.wait_for(sent.get(), timeout=10)
    assert raw == item.raw
    stop.set()
    await asyncio.wait_for(runner, timeout=10)
    assert store.status[item.id] == "sent"
