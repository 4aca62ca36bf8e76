"""The SMTP receiver: forwarded mail in, persisted before it is accepted.

`MailReceiver` is an aiosmtpd handler; `start_smtp_server` serves it on the running loop
(no aiosmtpd `Controller`, no extra thread), so it lives inside `deskhand run`.

The order inside one SMTP transaction is what makes a crash safe:

1. RCPT: only the configured recipient addresses are accepted (550 otherwise).
2. DATA: the raw message is written to the spool directory atomically (temporary file,
   fsync, rename, fsync of the directory), then `on_message(raw, eml_path, envelope_from,
   rcpt_tos)` is awaited (the store's inbox insert), and only then "250 OK" is sent. If the
   process dies before the 250, the sending server still holds the message and retries.
   If `on_message` raises, the answer is 451 and the sender retries later; the spool file
   stays, and is overwritten by the same bytes on the retry (files are named by content
   hash, so a redelivery never makes a second file).

Size: messages up to `max_bytes` are stored as they are. Messages above it, up to
`hard_max_bytes` (4 x `max_bytes` by default), are still stored and accepted: the parser
flags them "oversized" and reads only the head, and a human sees them. Above
`hard_max_bytes`, aiosmtpd itself answers "552 Too much mail data" without storing anything;
the sender's server then bounces the message to its author, so it is refused, not lost.

`on_message` runs shielded from the SMTP connection: a client that hangs up while the
store is writing does not cancel the write. `aclose()` waits for such writes to finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import weakref
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

OnMessage = Callable[[bytes, Path, str, list[str]], Awaitable[None]]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024


def write_atomic(directory: Path, raw: bytes) -> Path:
    """Write raw bytes to `<directory>/<sha256>.eml` durably, and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(raw).hexdigest()}.eml"
    tmp = directory / f".{path.name}.{os.getpid()}.{id(raw):x}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _normalise_addr(addr: str) -> str:
    return addr.strip().strip("<>").lower()


class MailReceiver:
    """aiosmtpd handler: recipient allow-list, durable spool, then the callback."""

    def __init__(
        self,
        *,
        spool_dir: Path,
        on_message: OnMessage,
        recipients: Iterable[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        hard_max_bytes: int | None = None,
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.on_message = on_message
        # "support@shop.example" accepts that address; "@shop.example" the whole domain.
        self.recipients = {_normalise_addr(r) for r in recipients if r.strip()}
        self.max_bytes = max_bytes
        self.hard_max_bytes = hard_max_bytes if hard_max_bytes is not None else 4 * max_bytes
        self._inflight: set[asyncio.Task[None]] = set()

    def accepts(self, address: str) -> bool:
        addr = _normalise_addr(address)
        domain = "@" + addr.rpartition("@")[2]
        return addr in self.recipients or domain in self.recipients

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.accepts(address):
            return "550 5.1.1 Recipient address rejected: not a Deskhand mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        if len(raw) > self.hard_max_bytes:  # aiosmtpd normally stops these first
            return "552 5.3.4 Message too big for Deskhand"
        try:
            path = await asyncio.to_thread(write_atomic, self.spool_dir, raw)
        except OSError:
            return "451 4.3.0 Could not store the message; try again later"
        task = asyncio.ensure_future(
            self.on_message(raw, path, envelope.mail_from or "", list(envelope.rcpt_tos))
        )
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            raise  # the connection went away; the task finishes on its own, aclose() waits
        except Exception:
            return "451 4.3.0 Temporary failure processing the message; try again later"
        return "250 OK"

    async def aclose(self) -> None:
        """Wait for callbacks whose SMTP client hung up before they finished."""
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


class SmtpServer:
    """A running SMTP listener on the current loop, with its live sessions."""

    def __init__(self, server: asyncio.Server, handler: MailReceiver, sessions: weakref.WeakSet[SMTP]):
        self.server = server
        self.handler = handler
        self._sessions = sessions

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, hang up on idle sessions, and wait for in-flight callbacks."""
        self.server.close()
        await self.server.wait_closed()
        tasks = []
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
            task = getattr(session, "_handler_coroutine", None)
            if task is not None:
                tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.handler.aclose()


async def start_smtp_server(
    host: str,
    port: int,
    handler: MailReceiver,
    *,
    hostname: str | None = None,
    timeout: float = 300,
) -> SmtpServer:
    """Serve `handler` on the running loop; port 0 picks a free port (`server.port`)."""
    loop = asyncio.get_running_loop()
    sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory() -> SMTP:
        smtp = SMTP(
            handler,
            data_size_limit=handler.hard_max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname or "deskhand",
            ident="Deskhand mailbridge",
            timeout=timeout,
            loop=loop,
        )
        sessions.add(smtp)
        return smtp

    server = await loop.create_server(factory, host=host, port=port)
    return SmtpServer(server, handler, sessions)
