"""The SMTP receiver, driven by the stdlib smtplib client over 127.0.0.1."""

from __future__ import annotations

import asyncio
import smtplib
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbridge.parse import parse_message
from mailbridge.receiver import MailReceiver, SmtpServer, start_smtp_server, write_atomic

SUPPORT = "support@deskhand.example"


def _message(body: str = "Where is order 10423?", mid: str = "<in-1@example.com>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane <jane@example.com>"
    msg["To"] = SUPPORT
    msg["Subject"] = "Order 10423"
    msg["Message-ID"] = mid
    msg.set_content(body)
    return msg.as_bytes(policy=policy.SMTP)  # CRLF, as it travels


def _send(port: int, raw: bytes, rcpts: list[str], sender: str = "jane@example.com") -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail(sender, rcpts, raw)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, Path, str, list[str]]] = []
        self.file_existed: list[bool] = []

    async def __call__(self, raw: bytes, path: Path, mail_from: str, rcpt_tos: list[str]) -> None:
        self.file_existed.append(path.exists() and path.read_bytes() == raw)
        self.calls.append((raw, path, mail_from, rcpt_tos))


@pytest.fixture
async def receiver(tmp_path: Path):
    recorder = Recorder()
    handler = MailReceiver(spool_dir=tmp_path / "spool", on_message=recorder, recipients=[SUPPORT, "@help.example"])
    server = await start_smtp_server("127.0.0.1", 0, handler)
    try:
        yield server, handler, recorder
    finally:
        await server.stop()


async def test_round_trip(receiver):
    server, handler, recorder = receiver
    raw = _message()
    refused = await asyncio.to_thread(_send, server.port, raw, [SUPPORT])
    assert refused == {}
    [(got, path, mail_from, rcpts)] = recorder.calls
    assert mail_from == "jane@example.com" and rcpts == [SUPPORT]
    assert path.read_bytes() == got
    parsed = parse_message(got)
    assert parsed.message_id == "<in-1@example.com>"
    assert parsed.text == "Where is order 10423?"
    assert recorder.file_existed == [True]


async def test_unknown_recipient_is_rejected_with_550(receiver):
    server, handler, recorder = receiver
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        await asyncio.to_thread(_send, server.port, _message(), ["someone@elsewhere.example"])
    [(code, _msg)] = err.value.recipients.values()
    assert code == 550
    assert recorder.calls == []
    assert not list((handler.spool_dir).glob("*.eml")) if handler.spool_dir.exists() else True


async def test_domain_entry_and_mixed_recipients(receiver):
    server, handler, recorder = receiver
    refused = await asyncio.to_thread(
        _send, server.port, _message(), ["Orders@Help.Example", "nobody@elsewhere.example"]
    )
    assert set(refused) == {"nobody@elsewhere.example"}
    assert recorder.calls[0][3] == ["Orders@Help.Example"]


async def test_message_is_on_disk_before_the_client_gets_250(tmp_path: Path):
    entered = asyncio.Event()
    release = asyncio.Event()
    seen: dict[str, object] = {}

    async def slow_store(raw: bytes, path: Path, mail_from: str, rcpt_tos: list[str]) -> None:
        seen["path"] = path
        seen["complete"] = path.read_bytes() == raw
        entered.set()
        await release.wait()

    handler = MailReceiver(spool_dir=tmp_path / "spool", on_message=slow_store, recipients=[SUPPORT])
    server = await start_smtp_server("127.0.0.1", 0, handler)
    try:
        client = asyncio.ensure_future(asyncio.to_thread(_send, server.port, _message(), [SUPPORT]))
        await entered.wait()
        # The store callback is running: the file is complete on disk, and the client is
        # still waiting for the answer to DATA.
        assert seen["complete"] is True
        assert not client.done()
        assert not list((tmp_path / "spool").glob(".*.tmp"))
        release.set()
        assert await client == {}
    finally:
        await server.stop()


async def test_failing_callback_answers_451_and_the_retry_succeeds(tmp_path: Path):
    attempts: list[Path] = []

    async def flaky(raw: bytes, path: Path, mail_from: str, rcpt_tos: list[str]) -> None:
        attempts.append(path)
        if len(attempts) == 1:
            raise RuntimeError("database is locked")

    handler = MailReceiver(spool_dir=tmp_path / "spool", on_message=flaky, recipients=[SUPPORT])
    server = await start_smtp_server("127.0.0.1", 0, handler)
    try:
        raw = _message()
        with pytest.raises(smtplib.SMTPDataError) as err:
            await asyncio.to_thread(_send, server.port, raw, [SUPPORT])
        assert err.value.smtp_code == 451
        assert attempts[0].read_bytes() == raw  # kept on disk all the same
        assert await asyncio.to_thread(_send, server.port, raw, [SUPPORT]) == {}
        assert attempts[1] == attempts[0]  # same content, same file: no duplicate spool entry
        assert len(list((tmp_path / "spool").glob("*.eml"))) == 1
    finally:
        await server.stop()


async def test_over_the_soft_cap_is_stored_and_flagged(tmp_path: Path):
    recorder = Recorder()
    handler = MailReceiver(
        spool_dir=tmp_path / "spool", on_message=recorder, recipients=[SUPPORT], max_bytes=2_000, hard_max_bytes=20_000
    )
    server = await start_smtp_server("127.0.0.1", 0, handler)
    try:
        raw = _message("Where is order 10423?\n" + "x" * 60 + "\n" * 1 + ("padding\n" * 1000))
        assert 2_000 < len(raw) < 20_000
        assert await asyncio.to_thread(_send, server.port, raw, [SUPPORT]) == {}
        [(got, path, _, _)] = recorder.calls
        assert path.stat().st_size == len(raw)
        parsed = parse_message(got, max_bytes=handler.max_bytes)
        assert "oversized" in parsed.flags
        assert parsed.text.startswith("Where is order 10423?")
    finally:
        await server.stop()


async def test_over_the_hard_cap_is_refused_with_552(tmp_path: Path):
    recorder = Recorder()
    handler = MailReceiver(
        spool_dir=tmp_path / "spool", on_message=recorder, recipients=[SUPPORT], max_bytes=1_000, hard_max_bytes=4_000
    )
    server = await start_smtp_server("127.0.0.1", 0, handler)
    try:
        raw = _message("y" * 70 + "\n" + ("padding\n" * 2000))
        with pytest.raises(smtplib.SMTPException) as err:
            await asyncio.to_thread(_send, server.port, raw, [SUPPORT])
        assert getattr(err.value, "smtp_code", None) == 552
        assert recorder.calls == []
        assert not (tmp_path / "spool").exists() or not list((tmp_path / "spool").glob("*.eml"))
    finally:
        await server.stop()


async def test_stop_waits_for_a_callback_whose_client_hung_up(tmp_path: Path):
    entered = asyncio.Event()
    release = asyncio.Event()
    finished: list[bool] = []

    async def slow(raw: bytes, path: Path, mail_from: str, rcpt_tos: list[str]) -> None:
        entered.set()
        await release.wait()
        finished.append(True)

    handler = MailReceiver(spool_dir=tmp_path / "spool", on_message=slow, recipients=[SUPPORT])
    server: SmtpServer = await start_smtp_server("127.0.0.1", 0, handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for line in (b"EHLO test", b"MAIL FROM:<jane@example.com>", f"RCPT TO:<{SUPPORT}>".encode(), b"DATA"):
        writer.write(line + b"\r\n")
    writer.write(_message() + b".\r\n")
    await writer.drain()
    await entered.wait()
    writer.close()  # the client gives up before the answer
    await writer.wait_closed()
    closing = asyncio.Event()
    original_aclose = handler.aclose

    async def aclose() -> None:
        closing.set()
        await original_aclose()

    handler.aclose = aclose  # type: ignore[method-assign]
    stopping = asyncio.ensure_future(server.stop())
    await closing.wait()
    # The SMTP session is gone, but the store write is still running, not cancelled, and
    # stop() is waiting for it.
    [inflight] = handler._inflight
    assert not inflight.done() and not stopping.done() and finished == []
    release.set()
    await stopping
    assert finished == [True]


def test_write_atomic_is_content_addressed(tmp_path: Path):
    a = write_atomic(tmp_path, b"one")
    b = write_atomic(tmp_path, b"one")
    c = write_atomic(tmp_path, b"two")
    assert a == b != c
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, c.name])
