"""The IMAP poller against a real Dovecot server started for the test on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

import aioimaplib
import pytest

from mailbridge.imap import ImapConfig, ImapPoller, _search_uids
from mailbridge.parse import parse_message

DOVECOT = shutil.which("dovecot") or next(
    (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.path.exists(p)), None
)
pytestmark = pytest.mark.skipif(
    DOVECOT is None, reason="dovecot is not installed (Debian: apt-get install dovecot-imapd)"
)

USER = "support@deskhand.example"
PASSWORD = "imap-test-password"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = {uid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, deadline_s: float = 20.0) -> None:
    """Dovecot gives no readiness signal; wait (bounded) until it accepts connections."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not start: {log.read_text() if log.exists() else ''}")


@pytest.fixture
def dovecot():
    # Not tmp_path: Dovecot's unprivileged processes must be able to reach the directory.
    root = Path(tempfile.mkdtemp(prefix="deskhand-imap-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        mail_user = pwd.getpwnam("nobody")
        login_user, internal_user = "dovenull", "dovecot"
    else:
        mail_user = pwd.getpwuid(os.getuid())
        login_user = internal_user = mail_user.pw_name
    home = root / "home" / USER.split("@")[0]
    home.mkdir(parents=True)
    for path in (root / "home", home):
        os.chown(path, mail_user.pw_uid, mail_user.pw_gid)
    (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    port = _free_port()
    conf = root / "dovecot.conf"
    conf.write_text(
        CONFIG.format(
            root=root,
            port=port,
            uid=mail_user.pw_uid,
            gid=mail_user.pw_gid,
            login_user=login_user,
            internal_user=internal_user,
        )
    )
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, root / "dovecot.log")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def _message(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <c{n}@example.com>"
    msg["To"] = USER
    msg["Subject"] = f"Order {10400 + n}"
    msg["Message-ID"] = f"<imap-{n}@example.com>"
    msg["Return-Path"] = f"<c{n}@example.com>"
    msg.set_content(f"Where is order {10400 + n}?")
    return msg.as_bytes(policy=policy.SMTP)


async def _client(port: int) -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4("127.0.0.1", port, timeout=10)
    await client.wait_hello_from_server()
    assert (await client.login(USER, PASSWORD)).result == "OK"
    return client


async def _append(port: int, *raws: bytes, flags: str | None = None) -> None:
    client = await _client(port)
    for raw in raws:
        assert (await client.append(raw, mailbox="INBOX", flags=flags)).result == "OK"
    await client.logout()


async def _unseen(port: int) -> int:
    client = await _client(port)
    await client.select("INBOX")
    response = await client.uid_search("UNSEEN", charset=None)
    await client.logout()
    return len(_search_uids(response))


def _poller(port: int, spool: Path, on_message) -> ImapPoller:
    config = ImapConfig(host="127.0.0.1", port=port, username=USER, password=PASSWORD, use_ssl=False, timeout_s=10)
    return ImapPoller(config, spool_dir=spool, on_message=on_message)


async def test_unseen_messages_are_handed_over_then_marked_seen(dovecot: int, tmp_path: Path):
    await _append(dovecot, _message(1), _message(2))
    await _append(dovecot, _message(3), flags="(\\Seen)")  # already read: not ours
    calls = []

    async def on_message(raw: bytes, path: Path, envelope_from: str, rcpt_tos: list[str]) -> None:
        # Not yet marked read while the store is writing.
        assert await _unseen(dovecot) == 2 - len(calls)
        assert path.read_bytes() == raw
        calls.append((parse_message(raw).message_id, envelope_from, rcpt_tos))

    handed = await _poller(dovecot, tmp_path / "spool", on_message).poll_once()
    assert handed == 2
    assert calls == [
        ("<imap-1@example.com>", "c1@example.com", [USER]),
        ("<imap-2@example.com>", "c2@example.com", [USER]),
    ]
    assert await _unseen(dovecot) == 0
    # Nothing new: nothing handed over again.
    assert await _poller(dovecot, tmp_path / "spool", on_message).poll_once() == 0


async def test_failing_callback_leaves_the_message_unread(dovecot: int, tmp_path: Path):
    await _append(dovecot, _message(4))

    async def broken(raw: bytes, path: Path, envelope_from: str, rcpt_tos: list[str]) -> None:
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError):
        await _poller(dovecot, tmp_path / "spool", broken).poll_once()
    assert await _unseen(dovecot) == 1

    got = []

    async def working(raw: bytes, path: Path, envelope_from: str, rcpt_tos: list[str]) -> None:
        got.append(parse_message(raw).message_id)

    assert await _poller(dovecot, tmp_path / "spool", working).poll_once() == 1
    assert got == ["<imap-4@example.com>"]
    assert await _unseen(dovecot) == 0


async def test_bad_login_is_an_error_and_run_keeps_going(dovecot: int, tmp_path: Path):
    config = ImapConfig(host="127.0.0.1", port=dovecot, username=USER, password="wrong", use_ssl=False, timeout_s=10)

    async def never(*args) -> None:
        raise AssertionError("no message expected")

    poller = ImapPoller(config, spool_dir=tmp_path, on_message=never)
    errors: list[Exception] = []
    stop = asyncio.Event()

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        stop.set()

    await asyncio.wait_for(poller.run(stop, poll_s=3600, on_error=on_error), timeout=30)
    assert len(errors) == 1 and "LOGIN" in str(errors[0])
