"""The IMAP poller: a support mailbox's unread mail, handed to the same `on_message`.

For each UNSEEN message (by UID): fetch it with BODY.PEEK[] (which does not mark it read),
write it to the spool like the SMTP receiver does, await `on_message(raw, eml_path,
envelope_from, rcpt_tos)`, and only then set \\Seen. If the callback fails, the message stays
unread and the poll stops there; the next poll tries it again. A crash between the callback
and the \\Seen flag means a second delivery of the same bytes, which the inbox's Message-ID
dedup absorbs.

`envelope_from` is the Return-Path header if there is one (IMAP has no SMTP envelope), and
`rcpt_tos` is the mailbox's own address (the login name when it is an address).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import aioimaplib

from mailbridge.receiver import OnMessage, write_atomic

_FETCH_UID = re.compile(rb"\bUID (\d+)")
_RETURN_PATH = re.compile(rb"^Return-Path:\s*<?([^>\r\n]*)>?", re.IGNORECASE | re.MULTILINE)


class ImapError(Exception):
    pass


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int = 993
    username: str = ""
    password: str = ""
    mailbox: str = "INBOX"
    use_ssl: bool = True
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings) -> ImapConfig:
        """From `bot.config.Settings` (imap_host, imap_port, imap_username, imap_password,
        imap_ssl: TLS from the first byte, on by default)."""
        return cls(
            host=settings.imap_host,
            port=settings.imap_port,
            username=settings.imap_username,
            password=settings.imap_password,
            use_ssl=settings.imap_ssl,
        )


def _check(response: aioimaplib.Response, what: str) -> aioimaplib.Response:
    if response.result != "OK":
        detail = b" ".join(bytes(x) for x in response.lines[-1:]).decode("utf-8", "replace")
        raise ImapError(f"{what} failed: {response.result} {detail}")
    return response


def _search_uids(response: aioimaplib.Response) -> list[str]:
    """UIDs from a UID SEARCH answer; aioimaplib drops the "* SEARCH" prefix, and the last
    line is the completion text."""
    uids: list[str] = []
    for line in response.lines[:-1]:
        if isinstance(line, (bytes, bytearray)):
            tokens = bytes(line).split()
            if tokens[:1] == [b"SEARCH"]:
                tokens = tokens[1:]
            if tokens and all(tok.isdigit() for tok in tokens):
                uids.extend(tok.decode() for tok in tokens)
    return uids


def _fetched_message(response: aioimaplib.Response) -> bytes | None:
    """The literal of a `UID FETCH … (BODY.PEEK[])` answer: the bytearray after the
    `* n FETCH (… {size}` line."""
    lines = response.lines
    for i, line in enumerate(lines[:-1]):
        if isinstance(line, (bytes, bytearray)) and b"FETCH" in line and line.rstrip().endswith(b"}"):
            body = lines[i + 1]
            if isinstance(body, (bytes, bytearray)):
                return bytes(body)
    return None


class ImapPoller:
    def __init__(self, config: ImapConfig, *, spool_dir: Path, on_message: OnMessage, batch: int = 50) -> None:
        self.config = config
        self.spool_dir = Path(spool_dir)
        self.on_message = on_message
        self.batch = batch

    def _client(self) -> aioimaplib.IMAP4:
        cfg = self.config
        if cfg.use_ssl:
            return aioimaplib.IMAP4_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s, ssl_context=ssl.create_default_context())
        return aioimaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout_s)

    async def poll_once(self) -> int:
        """Hand every unread message to `on_message`; return how many were handed over."""
        client = self._client()
        handed = 0
        try:
            await client.wait_hello_from_server()
            _check(await client.login(self.config.username, self.config.password), "LOGIN")
            _check(await client.select(self.config.mailbox), "SELECT")
            uids = _search_uids(_check(await client.uid_search("UNSEEN", charset=None), "UID SEARCH"))
            for uid in uids[: self.batch]:
                response = _check(await client.uid("fetch", uid, "(UID BODY.PEEK[])"), "UID FETCH")
                raw = _fetched_message(response)
                if raw is None:
                    continue  # expunged meanwhile
                path = await asyncio.to_thread(write_atomic, self.spool_dir, raw)
                match = _RETURN_PATH.search(raw[:65536].split(b"\r\n\r\n", 1)[0])
                envelope_from = match.group(1).decode("utf-8", "replace").strip() if match else ""
                rcpt = [self.config.username] if "@" in self.config.username else []
                await self.on_message(raw, path, envelope_from, rcpt)
                _check(await client.uid("store", uid, "+FLAGS", "(\\Seen)"), "UID STORE")
                handed += 1
            await client.logout()
        finally:
            await _close(client)
        return handed

    async def run(self, stop: asyncio.Event, *, poll_s: float = 60.0, on_error=None) -> None:
        """Poll until `stop` is set. Errors (server down, bad login, a failing callback) are
        passed to `on_error` (e.g. a logger) and the next poll tries again."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # noqa: BLE001 - one bad poll must not end the loop
                if on_error is not None:
                    on_error(exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll_s)
            except asyncio.TimeoutError:
                pass


async def _close(client: aioimaplib.IMAP4) -> None:
    """Close the transport whatever state the session is in."""
    protocol = client.protocol
    transport = getattr(protocol, "transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()
    task = getattr(client, "_client_task", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
