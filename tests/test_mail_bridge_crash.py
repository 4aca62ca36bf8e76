"""`deskhand mail serve` killed (SIGKILL) after it accepted an email and before the reply got
out: after a restart the customer gets exactly one reply, none lost, none doubled."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import sys
from pathlib import Path

from bot.store import DELIVERED, RECEIVED, Store
from tests.test_mail_bridge import SUPPORT, Relay, email, unused_port

DESKHAND = str(Path(sys.executable).with_name("deskhand"))
READY = re.compile(rb"SMTP on 127\.0\.0\.1:(\d+)")


class Serve:
    """One `deskhand mail serve` process."""

    def __init__(self, home: Path, relay_port: int, **env: str) -> None:
        self.env = {**os.environ, "DESKHAND_HOME": str(home), "DESKHAND_SMTP_PORT": "0",
                    "DESKHAND_RELAY_PORT": str(relay_port), "DESKHAND_KB_DIR": str(home.parent / "no-kb"), **env}
        self.err = home.parent / f"serve-{id(self)}.err"
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> Serve:
        with open(self.err, "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                DESKHAND, "mail", "serve", env=self.env, stdout=asyncio.subprocess.PIPE, stderr=err)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 240)  # it prints once it accepts mail
        match = READY.search(line)
        assert match, (line, self.err.read_text())
        self.port = int(match.group(1))
        return self

    async def send(self, raw: bytes) -> None:
        def send() -> dict:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
                return client.sendmail("ada@example.com", [SUPPORT], raw)

        assert await asyncio.to_thread(send) == {}  # 250: the message is in the inbox

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), 60) == 0, self.err.read_text()


def db(home: Path) -> Store:
    return Store(home / "deskhand.db")


async def until(check, timeout: float = 120):
    """Poll SQLite (another process writes it) until `check()` is truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the database"
        await asyncio.sleep(0.05)
    return value


def email_outbox(home: Path) -> list[dict]:
    store = db(home)
    try:
        return store.outbox_rows(channel="email")
    finally:
        store.close()


def assert_one_reply(home: Path, relay: Relay, inbox_id: str, turns: int) -> None:
    assert len(relay.messages) == 1
    assert relay.parsed(0)["In-Reply-To"] == "<q1@example.com>"
    assert "Order A-1042 has shipped" in relay.parsed(0).get_body(("plain",)).get_content()
    store = db(home)
    try:
        row = store.inbox_get(inbox_id)
        assert row["status"] == DELIVERED and row["attempts"] == turns
        replies = store.db.execute("SELECT count(*) FROM messages WHERE inbox_id = ? AND role = 'assistant'",
                                   [inbox_id]).fetchone()[0]
        assert replies == 1
        [item] = store.outbox_rows(channel="email")
        assert item["status"] == "sent" and store.outbox_rows("pending") == []
    finally:
        store.close()


async def test_killed_with_the_reply_queued_and_the_relay_down_sends_it_once_after_restart(tmp_path):
    home = tmp_path / "home"
    reserved = unused_port()  # the relay is down: the reply cannot leave
    port = reserved.getsockname()[1]
    first = await Serve(home, port).start()
    try:
        await first.send(email())
        # The turn ran, the reply is in the outbox, and one attempt to send it failed.
        [item] = await until(lambda: [r for r in email_outbox(home) if r["attempts"] >= 1])
    finally:
        await first.kill()
    assert item["status"] == "pending" and item["sent_at"] is None and item["last_error"]

    reserved.close()
    relay = await Relay().start(port)
    try:
        second = await Serve(home, port).start()
        try:
            await relay.wait_for(1, timeout=120)
        finally:
            await second.stop()
    finally:
        await relay.stop()
    assert_one_reply(home, relay, item["inbox_id"], turns=1)  # sent from the outbox, not re-planned


async def test_killed_before_the_turn_ran_resumes_it_after_restart(tmp_path):
    home = tmp_path / "home"
    relay = await Relay().start()
    try:
        # No workers: the message is accepted and stored, and nothing runs its turn.
        first = await Serve(home, relay.port, DESKHAND_WORKERS="0").start()
        try:
            await first.send(email())
        finally:
            await first.kill()
        store = db(home)
        [row] = store.inbox_unfinished()
        assert row["status"] == RECEIVED and Path(row["raw_path"]).is_file()
        store.close()
        assert email_outbox(home) == [] and relay.messages == []

        second = await Serve(home, relay.port).start()
        try:
            await relay.wait_for(1, timeout=120)
        finally:
            await second.stop()
    finally:
        await relay.stop()
    assert_one_reply(home, relay, row["id"], turns=1)
