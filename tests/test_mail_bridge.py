"""The mail bridge end to end, in one process: real SMTP in on 127.0.0.1 (stdlib smtplib),
real turns through the orchestrator and the demo shop, replies out through a real aiosmtpd
relay. Waits are on observable state: messages at the relay, rows in SQLite."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from contextlib import asynccontextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from bot.config import load_settings
from bot.store import DELIVERED, SKIPPED, Store
from bot.surfaces import Surfaces
from mailbridge.receiver import write_atomic
from mailbridge.service import InboundResult, MailBridge, MailOptions
from tests.test_dead_letters import dlq
from tests.test_mail_imap import DOVECOT, PASSWORD, USER, _append, _unseen, dovecot  # noqa: F401 - a fixture

DATA = Path(__file__).parent / "data" / "mail"
SUPPORT = "support@deskhand.example"


# -- a relay that records what it is given ---------------------------------------------------


class Relay:
    """An aiosmtpd server standing in for the team's mail relay."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self._changed = asyncio.Condition()
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        async with self._changed:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self._changed.notify_all()
        return "250 OK"

    async def start(self, port: int = 0) -> Relay:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self, hostname="relay", loop=loop), "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, n: int, timeout: float = 60) -> list:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.messages) >= n), timeout)
        return self.messages

    def parsed(self, i: int) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.messages[i][2])


def unused_port() -> socket.socket:
    """A bound socket that does not listen: connecting to its port is refused until it closes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class Mirror:
    """Stands in for the Slack mirror: records every call."""

    def __init__(self) -> None:
        self.seen_inbound: list[tuple[str, str]] = []
        self.seen_outbound: list[dict] = []
        self.notices: list[tuple[str, dict]] = []

    async def inbound(self, envelope, *, disposition: str) -> None:
        self.seen_inbound.append((envelope.id, disposition))

    async def outbound(self, **info) -> None:
        self.seen_outbound.append(info)

    async def team_notice(self, tenant_id: str, text: str, **info) -> None:
        self.notices.append((text, info))


# -- helpers ---------------------------------------------------------------------------------


def email(
    body: str = "Where is order A-1042?",
    *,
    sender: str = "Ada Lovelace <ada@example.com>",
    subject: str = "Where is my lamp?",
    mid: str = "<q1@example.com>",
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    msg["Message-ID"] = mid
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=policy.SMTP)


def smtp_send(port: int, raw: bytes, sender: str = "ada@example.com", rcpts: tuple = (SUPPORT,)) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail(sender, list(rcpts), raw)


async def send(bridge: MailBridge, raw: bytes, sender: str = "ada@example.com") -> None:
    assert await asyncio.to_thread(smtp_send, bridge.smtp_port, raw, sender) == {}


async def eventually(check, timeout: float = 60):
    """Wait until `check()` returns something truthy: for state that only SQLite shows."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the expected state")
        await asyncio.sleep(0.02)


def mail_settings(tmp_path: Path, relay_port: int, **overrides):
    return load_settings(home=tmp_path / "home", smtp_port=0, relay_port=relay_port,
                         kb_dir=tmp_path / "no-kb", **overrides)


@asynccontextmanager
async def serving(settings, mirror=None, options: MailOptions | None = None, workers: int = 2):
    """The runtime, the bridge and the orchestrator's workers, as `deskhand mail serve` runs them."""
    from bot.runtime import open_runtime

    async with open_runtime(settings) as rt:
        bridge = MailBridge(rt, mirror=mirror or Mirror(), options=options)
        async with bridge.running(), rt.orchestrator.delivering_to(Surfaces(email=bridge.responder)), \
                rt.orchestrator.running(workers=workers):
            yield rt, bridge


def inbox_rows(settings) -> list[dict]:
    store = Store(settings.db_path)
    try:
        return list(store.db["inbox"].rows_where(order_by="received_at"))
    finally:
        store.close()


def outbox_rows(settings) -> list[dict]:
    store = Store(settings.db_path)
    try:
        return store.outbox_rows(channel="email")
    finally:
        store.close()


@pytest.fixture
async def relay():
    relay = await Relay().start()
    try:
        yield relay
    finally:
        await relay.stop()


# -- the round trip ------------------------------------------------------------------------------


async def test_smtp_round_trip_threads_the_reply_and_the_customers_answer(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, email())
        await relay.wait_for(1)
        mail_from, rcpts, _ = relay.messages[0]
        reply = relay.parsed(0)
        assert mail_from == SUPPORT and rcpts == ["ada@example.com"]
        assert reply["To"] == "ada@example.com" and SUPPORT in reply["From"]
        assert reply["Subject"] == "Re: Where is my lamp?"
        assert reply["In-Reply-To"] == "<q1@example.com>" and reply["References"] == "<q1@example.com>"
        assert reply["Auto-Submitted"] == "auto-replied"
        text = reply.get_body(("plain",)).get_content()
        html = reply.get_body(("html",)).get_content()
        assert "Order A-1042 has shipped" in text and "Order A-1042 has shipped" in html
        bot_id = reply["Message-ID"]

        # The customer answers the bot's email: same session, threaded under both.
        await send(bridge, email("Thank you!", subject="Re: Where is my lamp?", mid="<q2@example.com>",
                                 in_reply_to=bot_id, references=f"<q1@example.com> {bot_id}"))
        await relay.wait_for(2)
        second = relay.parsed(1)
        assert second["In-Reply-To"] == "<q2@example.com>"
        assert second["References"].split() == ["<q1@example.com>", bot_id, "<q2@example.com>"]
        assert second["Subject"] == "Re: Where is my lamp?"

    rows = inbox_rows(settings)
    assert len(rows) == 2 and rows[0]["session_id"] == rows[1]["session_id"]
    assert [r["status"] for r in rows] == [DELIVERED, DELIVERED]
    assert all(Path(r["raw_path"]).is_file() for r in rows)  # the .eml is kept
    store = Store(settings.db_path)
    session = rows[0]["session_id"]
    assert [m["role"] for m in store.history(session)] == ["user", "assistant", "user", "assistant"]
    assert bot_id in store.email_threads_for(session)
    store.close()
    assert [item["status"] for item in outbox_rows(settings)] == ["sent", "sent"]
    assert [d for _, d in mirror.seen_inbound] == ["answer", "answer"]
    assert [o["kind"] for o in mirror.seen_outbound] == ["reply", "reply"]
    assert mirror.seen_outbound[0]["session_id"] == session and mirror.seen_outbound[0]["message_id"] == bot_id


async def test_a_fresh_email_with_the_same_subject_starts_a_new_conversation(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    async with serving(settings) as (rt, bridge):
        await send(bridge, email(mid="<s1@example.com>", subject="Order status"))
        await send(bridge, email("Where is order A-1120?", mid="<s2@example.com>", subject="Order status"))
        await relay.wait_for(2)
    first, second = inbox_rows(settings)
    assert first["session_id"] != second["session_id"]


# -- who is the customer -----------------------------------------------------------------------


def tenants_file(tmp_path: Path, trusted: list[str]) -> Path:
    path = tmp_path / "tenants.yml"
    path.write_text(
        "tenants:\n  T_DEMO:\n    name: Deskhand Demo Shop\n    approvers: [U_LEAD]\n"
        f"    trusted_forwarders: [{', '.join(trusted)}]\n"
    )
    return path


async def deliver_file(bridge: MailBridge, raw: bytes, envelope_from: str) -> InboundResult:
    path = write_atomic(bridge.spool_dir, raw)
    return await bridge.on_message(raw, path, envelope_from, [SUPPORT])


@pytest.mark.parametrize(
    ("fixture", "forwarder", "original"),
    [
        ("gmail_forward.eml", "sam@shop.example", "jane.customer@example.com"),
        ("outlook_forward.eml", "alex@shop.example", "renee.dupont@example.fr"),
    ],
)
@pytest.mark.parametrize("trusted", [True, False])
async def test_a_forward_is_attributed_to_its_original_sender_only_from_a_trusted_forwarder(
    tmp_path, fixture, forwarder, original, trusted
):
    from bot.runtime import open_runtime

    trusted_list = [forwarder] if trusted else ["frontdesk@deskhand.example"]
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb",
                             tenants_file=tenants_file(tmp_path, trusted_list))
    raw = (DATA / "forwards" / fixture).read_bytes()
    async with open_runtime(settings) as rt:
        bridge = MailBridge(rt, mirror=Mirror())
        result = await deliver_file(bridge, raw, forwarder)
        stored = await rt.store.inbox_envelope(result.envelope.id)
    meta = stored.metadata
    assert meta["original_sender"] == original and meta["forwarded_by"] == forwarder  # recovered either way
    customer = original if trusted else forwarder
    assert stored.user_id == customer and meta["verified_email"] == customer and meta["customer"] == customer
    assert meta["trusted_forward"] is trusted
    assert meta["cc"] == ([forwarder] if trusted else [])
    assert result.disposition == "answer"


async def test_a_trusted_forward_is_answered_to_the_customer_with_their_orders(tmp_path, relay):
    raw = forwarded_question(forwarder="frontdesk@deskhand.example")
    settings = mail_settings(tmp_path, relay.port)  # fixtures/tenants.yml trusts frontdesk@
    async with serving(settings) as (rt, bridge):
        await send(bridge, raw, sender="frontdesk@deskhand.example")
        await relay.wait_for(1)
    _, rcpts, _ = relay.messages[0]
    reply = relay.parsed(0)
    assert sorted(rcpts) == ["ada@example.com", "frontdesk@deskhand.example"]
    assert reply["To"] == "ada@example.com" and reply["Cc"] == "frontdesk@deskhand.example"
    assert reply["Subject"] == "Re: My lamp"  # the customer's own subject, not "Fwd:"
    assert "Order A-1042 has shipped" in reply.get_body(("plain",)).get_content()


async def test_an_untrusted_forward_cannot_reveal_the_original_senders_order(tmp_path, relay):
    raw = forwarded_question(forwarder="someone@elsewhere.example")
    settings = mail_settings(tmp_path, relay.port)
    async with serving(settings) as (rt, bridge):
        await send(bridge, raw, sender="someone@elsewhere.example")
        await relay.wait_for(1)
    _, rcpts, _ = relay.messages[0]
    text = relay.parsed(0).get_body(("plain",)).get_content()
    assert rcpts == ["someone@elsewhere.example"]
    assert "only share orders placed from the address you're writing from" in text
    assert "shipped" not in text and "1Z999AA10123456784" not in text


def forwarded_question(*, forwarder: str) -> bytes:
    body = (
        "Could you answer this one?\n\n"
        "---------- Forwarded message ---------\n"
        "From: Ada Lovelace <ada@example.com>\n"
        "Date: Mon, 3 Jun 2024 at 22:41\n"
        "Subject: My lamp\n"
        f"To: <{forwarder}>\n\n\n"
        "Hi, where is order A-1042?\n\nAda\n"
    )
    return email(body, sender=f"Front Desk <{forwarder}>", subject="Fwd: My lamp", mid="<fwd-1@example.com>")


async def test_an_email_lookup_of_another_customers_order_is_refused(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    async with serving(settings) as (rt, bridge):
        await send(bridge, email(sender="Mallory <mallory@example.com>", subject="Order", mid="<m1@example.com>"),
                   sender="mallory@example.com")
        await relay.wait_for(1)
    _, rcpts, _ = relay.messages[0]
    text = relay.parsed(0).get_body(("plain",)).get_content()
    assert rcpts == ["mallory@example.com"]
    assert "only share orders placed from the address you're writing from" in text
    for secret in ("shipped", "UPS", "1Z999AA10123456784", "2026-11-24", "129.99"):
        assert secret not in text
    store = Store(settings.db_path)
    [call] = list(store.db["tool_calls"].rows_where("tool = 'get_order_status'"))
    assert call["ok"] == 0 and call["error_kind"] == "not_verified"
    store.close()


async def test_a_forged_reply_to_does_not_redirect_the_answer(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    raw = email(headers={"Reply-To": "mallory@example.com"})
    async with serving(settings) as (rt, bridge):
        await send(bridge, raw)
        await relay.wait_for(1)
    assert relay.messages[0][1] == ["ada@example.com"]


async def test_a_failing_or_hanging_mirror_never_stops_mail(tmp_path, relay):
    class Broken:
        async def inbound(self, envelope, *, disposition: str) -> None:
            raise RuntimeError("Slack is down")

        async def outbound(self, **info) -> None:
            await asyncio.Event().wait()  # never returns

        async def team_notice(self, tenant_id: str, text: str, **info) -> None:
            raise RuntimeError("Slack is down")

    settings = mail_settings(tmp_path, relay.port)
    async with serving(settings, Broken(), MailOptions(mirror_timeout_s=0.2)) as (rt, bridge):
        await send(bridge, email())
        await relay.wait_for(1)
    assert [r["status"] for r in inbox_rows(settings)] == [DELIVERED]


# -- delivery --------------------------------------------------------------------------------------


async def test_relay_down_then_up_delivers_the_reply_once(tmp_path):
    reserved = unused_port()
    port = reserved.getsockname()[1]
    settings = mail_settings(tmp_path, port)
    mirror = Mirror()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, email())

        async def failed_once():
            rows = await rt.store.outbox_rows(channel="email")
            return rows if rows and rows[0]["attempts"] >= 1 else None

        [row] = await eventually(failed_once)
        assert row["status"] == "pending" and row["last_error"]  # kept, with why it failed
        assert "ada@example.com" == row["payload"]["to"]

        reserved.close()
        relay = await Relay().start(port)
        try:
            # What a restart or `deskhand mail retry` does: make it due now.
            await rt.store.outbox_due_now("email")
            bridge.outbox.wake()
            await relay.wait_for(1)
            assert (await bridge.outbox.run_once()).sent == []  # nothing left to send
        finally:
            await relay.stop()
    [row] = outbox_rows(settings)
    assert row["status"] == "sent" and row["attempts"] >= 1
    assert len(relay.messages) == 1
    assert relay.parsed(0)["In-Reply-To"] == "<q1@example.com>"


async def test_a_reply_the_relay_refuses_for_good_stays_visible_and_the_team_is_told(tmp_path):
    class Refusing(Relay):
        async def handle_DATA(self, server, session, envelope) -> str:
            return "550 5.7.1 Relaying denied"

    relay = await Refusing().start()
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    try:
        async with serving(settings, mirror) as (rt, bridge):
            await send(bridge, email())

            async def failed():
                return await rt.store.outbox_rows("failed", "email")

            [row] = await eventually(failed)
            assert "550" in row["last_error"] and row["attempts"] == 1
            await eventually(lambda: mirror.notices)
    finally:
        await relay.stop()
    [(text, info)] = mirror.notices
    assert "could not be sent" in text and "deskhand mail retry" in text and info["outbox_id"] == str(row["id"])
    store = Store(settings.db_path)
    assert [e["action"] for e in store.audit_entries(row["session_id"])] == ["mail_send_failed"]
    store.close()


async def test_a_reply_the_relay_keeps_deferring_is_given_up_to_the_dlq_and_retried_from_there(tmp_path):
    class Deferring(Relay):
        deferring, deferrals = True, 0

        async def handle_DATA(self, server, session, envelope) -> str:
            if self.deferring:
                self.deferrals += 1
                return "451 4.3.0 Try again later"
            return await super().handle_DATA(server, session, envelope)

    relay = await Deferring().start()
    settings = mail_settings(tmp_path, relay.port, outbox_max_attempts=3, outbox_backoff_base_s=0.01,
                             outbox_backoff_max_s=0.05)
    try:
        async with serving(settings, Mirror(), MailOptions(outbox_poll_s=0.05)) as (rt, bridge):
            await send(bridge, email())
            [row] = await eventually(lambda: rt.store.outbox_rows("failed", "email"))
            assert row["attempts"] == 3 and "451" in row["last_error"] and relay.deferrals == 3
            listed = await asyncio.to_thread(dlq, "list", home=settings.home)
            assert f"outbox:{row['id']}" in listed.stdout and "451" in listed.stdout, listed.stderr

            relay.deferring = False
            retried = await asyncio.to_thread(dlq, "retry", f"outbox:{row['id']}", home=settings.home)
            assert retried.returncode == 0, retried.stderr
            await relay.wait_for(1)
            [row] = await eventually(lambda: rt.store.outbox_rows("sent", "email"))
    finally:
        await relay.stop()
    assert relay.deferrals == 3 and len(relay.messages) == 1
    assert relay.parsed(0)["In-Reply-To"] == "<q1@example.com>"


async def test_redelivering_a_turn_queues_one_email(tmp_path, relay):
    """A turn delivered again (a restart after the outbox took the reply but before the inbox
    row said so) builds the same message, and the outbox keeps one."""
    settings = mail_settings(tmp_path, relay.port)
    async with serving(settings) as (rt, bridge):
        await send(bridge, email())
        await relay.wait_for(1)
        [row] = inbox_rows(settings)
        outcome = await rt.orchestrator.process(row["id"])  # the stored outcome
        envelope = await rt.store.inbox_envelope(row["id"])
        await bridge.responder.deliver(envelope, outcome)
        assert (await bridge.outbox.run_once()).sent == []
    assert len(outbox_rows(settings)) == 1 and len(relay.messages) == 1


# -- what is stored, flagged, held ------------------------------------------------------------


async def test_a_duplicate_message_id_is_processed_once(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    raw = email()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, raw)
        await relay.wait_for(1)
        await send(bridge, raw)  # the sender retries the very same message
        # A different message that reuses the Message-ID: kept, flagged, not processed.
        await send(bridge, email("Actually, where is A-1120?"))
    rows = inbox_rows(settings)
    assert len(rows) == 2
    original, dup = rows
    assert original["status"] == DELIVERED
    assert dup["status"] == SKIPPED and "duplicate_message_id" in dup["flags"]
    assert Path(dup["raw_path"]).read_bytes() != Path(original["raw_path"]).read_bytes()
    assert len(relay.messages) == 1 and len(outbox_rows(settings)) == 1
    store = Store(settings.db_path)
    assert store.db.execute("SELECT count(*) FROM messages WHERE role = 'assistant'").fetchone()[0] == 1
    assert [e["action"] for e in store.audit_entries(original["session_id"])] == ["mail_duplicate"]
    store.close()
    assert any("reused the Message-ID" in text for text, _ in mirror.notices)


async def test_an_oversized_message_is_stored_flagged_answered_and_the_team_is_told(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port, mail_max_bytes=4096)
    mirror = Mirror()
    msg = EmailMessage()
    msg["From"] = "ada@example.com"
    msg["To"] = SUPPORT
    msg["Subject"] = "Photos of my lamp"
    msg["Message-ID"] = "<big@example.com>"
    msg.set_content("Where is order A-1042?")
    msg.add_attachment(b"\x89PNG" + bytes(range(256)) * 40, maintype="image", subtype="png", filename="lamp.png")
    raw = msg.as_bytes(policy=policy.SMTP)
    assert 4096 < len(raw) < 4 * 4096
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, raw)
        await relay.wait_for(1)
    [row] = inbox_rows(settings)
    assert "oversized" in row["flags"] and Path(row["raw_path"]).read_bytes() == raw  # all of it kept
    assert row["status"] == DELIVERED
    [(text, info)] = mirror.notices
    assert "oversized" in text and info["inbox_id"] == row["id"]
    store = Store(settings.db_path)
    assert [e["action"] for e in store.audit_entries(row["session_id"])] == ["mail_flagged"]
    store.close()


@pytest.mark.parametrize(
    ("raw", "flag"),
    [
        (b"From: ada@example.com\r\nTo: support@deskhand.example\r\nSubject: hello\r\n"
         b"Message-ID: <empty@example.com>\r\n\r\n", "no_text"),
        (b"From: ada@example.com\r\nTo: support@deskhand.example\r\nSubject: broken\r\n"
         b"Message-ID: <broken@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n"
         b"--zzz\r\nContent-Type: text/plain\r\n\r\nwhere is A-1042\r\n", "malformed_mime"),
        (b"From: ada@example.com\r\nTo: support@deskhand.example\r\nSubject: Re: lamp\r\n"
         b"Message-ID: <quoted@example.com>\r\n\r\nOn Mon, Ada wrote:\r\n> where is my lamp?\r\n", "only_quoted"),
    ],
    ids=["empty", "broken-mime", "only-quoted"],
)
async def test_an_unanswerable_message_is_stored_and_handed_to_a_human(tmp_path, relay, raw, flag):
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, raw)
    [row] = inbox_rows(settings)  # stored, with its .eml, and its turn stayed silent
    assert flag in row["flags"] and Path(row["raw_path"]).read_bytes() == raw
    assert row["status"] == SKIPPED
    assert relay.messages == [] and outbox_rows(settings) == []
    store = Store(settings.db_path)
    assert store.session_get(row["session_id"])["status"] == "handed_off"
    assert [e["action"] for e in store.audit_entries(row["session_id"])] == ["handoff", "mail_flagged"]
    assert [m["role"] for m in store.history(row["session_id"])] == ["user"]  # the teammate sees it
    store.close()
    [(text, info)] = mirror.notices
    assert "needs a teammate" in text and info["session_id"] == row["session_id"]
    assert mirror.seen_inbound == [(row["id"], "human")]


async def test_a_message_the_parser_chokes_on_is_kept_and_goes_to_a_human(tmp_path, relay, monkeypatch):
    import mailbridge.service

    def explode(raw, *, max_bytes):
        raise ValueError("a parser bug")

    monkeypatch.setattr(mailbridge.service, "parse_message", explode)
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, email())
    [row] = inbox_rows(settings)
    assert "parse_error" in row["flags"] and row["status"] == SKIPPED
    assert relay.messages == []
    assert len(mirror.notices) == 1 and "parse_error" in mirror.notices[0][0]


@pytest.mark.parametrize(
    ("headers", "sender", "told"),
    [
        ({"Auto-Submitted": "auto-replied"}, "Ada <ada@example.com>", False),
        ({"List-Id": "<offers.example.com>"}, "Offers <news@example.com>", False),
        ({}, "Mail Delivery Subsystem <mailer-daemon@example.com>", True),
        ({}, f"Deskhand <{SUPPORT}>", False),  # our own reply, come back
    ],
    ids=["auto-reply", "mailing-list", "bounce", "own-mail"],
)
async def test_automatic_mail_is_stored_but_never_answered(tmp_path, relay, headers, sender, told):
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, email("I am out of the office.", sender=sender, headers=headers))
    [row] = inbox_rows(settings)
    assert row["status"] == SKIPPED and row["attempts"] == 0  # no turn ever ran
    assert relay.messages == []
    store = Store(settings.db_path)
    assert store.db["messages"].count == 0
    actions = [e["action"] for e in store.audit_entries(row["session_id"])]
    store.close()
    assert actions == (["mail_held", "mail_flagged"] if told else ["mail_held"])
    assert len(mirror.notices) == (1 if told else 0)
    assert mirror.seen_inbound == [(row["id"], "held")]


# -- approvals and the takeover -----------------------------------------------------------------


async def test_an_approval_outcome_is_emailed_in_the_same_thread(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    async with serving(settings) as (rt, bridge):
        await send(bridge, email("I want a refund for A-1120", subject="Refund", mid="<r1@example.com>"))
        await relay.wait_for(1)
        [action] = await rt.store.pending_list()
        assert action.requested_by == "ada@example.com"
        decision = await rt.decide(action.id, "U_LEAD", True)
        assert decision.status == "approved"
        await relay.wait_for(2)
    notice = relay.parsed(1)
    assert relay.messages[1][1] == ["ada@example.com"]
    assert notice["In-Reply-To"] == "<r1@example.com>" and notice["Subject"] == "Re: Refund"
    assert "refund" in notice.get_body(("plain",)).get_content().lower()
    assert len({m[2] for m in relay.messages}) == 2


async def test_a_teammates_reply_goes_out_as_the_email_reply(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, email())
        await relay.wait_for(1)
        [row] = inbox_rows(settings)
        item = await bridge.responder.reply_as_teammate(row["session_id"], "Hi Ada, Sam here. It's on its way!",
                                                        author="Sam", key="1718000000.000100")
        again = await bridge.responder.reply_as_teammate(row["session_id"], "Hi Ada, Sam here. It's on its way!",
                                                         author="Sam", key="1718000000.000100")
        assert again.id == item.id  # a redelivered Slack event sends one email
        await relay.wait_for(2)
        with pytest.raises(LookupError):
            await bridge.responder.reply_as_teammate("slack:T1:C1:1.0", "hi", author="Sam", key="k")
    teammate = relay.parsed(1)
    [author] = teammate["From"].addresses
    assert author.display_name == "Sam at Deskhand Demo Shop" and author.addr_spec == SUPPORT
    assert teammate["Auto-Submitted"] is None  # a person wrote it
    assert teammate["In-Reply-To"] == "<q1@example.com>" and teammate["To"] == "ada@example.com"
    assert len(relay.messages) == 2
    assert [o["kind"] for o in mirror.seen_outbound] == ["reply", "teammate", "teammate"]


async def test_a_customer_writing_into_a_handed_off_thread_gets_no_bot_reply(tmp_path, relay):
    settings = mail_settings(tmp_path, relay.port)
    mirror = Mirror()
    async with serving(settings, mirror) as (rt, bridge):
        await send(bridge, email("I want to talk to a human", subject="Help", mid="<h1@example.com>"))
        await relay.wait_for(1)
        handoff_reply = relay.parsed(0)
        await send(bridge, email("Hello? Anyone?", subject="Re: Help", mid="<h2@example.com>",
                                 in_reply_to=handoff_reply["Message-ID"],
                                 references=f"<h1@example.com> {handoff_reply['Message-ID']}"))
    first, second = inbox_rows(settings)
    assert first["session_id"] == second["session_id"]
    assert second["status"] == SKIPPED and len(relay.messages) == 1
    assert [d for _, d in mirror.seen_inbound] == ["answer", "answer"]  # mirrored for the teammate


# -- IMAP ---------------------------------------------------------------------------------------


@pytest.mark.skipif(DOVECOT is None, reason="dovecot is not installed (Debian: apt-get install dovecot-imapd)")
async def test_imap_mail_is_answered_and_marked_read(tmp_path, relay, dovecot):  # noqa: F811
    settings = mail_settings(tmp_path, relay.port, imap_host="127.0.0.1", imap_port=dovecot, imap_ssl=False,
                             imap_username=USER, imap_password=PASSWORD, imap_poll_s=0.2)
    raw = email(mid="<imap-q1@example.com>")
    await _append(dovecot, raw)
    async with serving(settings) as (rt, bridge):
        await relay.wait_for(1)
    assert relay.parsed(0)["In-Reply-To"] == "<imap-q1@example.com>"
    assert await _unseen(dovecot) == 0
    [row] = inbox_rows(settings)
    assert row["status"] == DELIVERED and row["raw_path"]


async def test_mail_lifespan_runs_the_bridge_only_when_mail_is_configured(tmp_path, relay):
    from bot.runtime import open_runtime
    from mailbridge.service import mail_lifespan

    off = mail_settings(tmp_path, relay.port)
    async with open_runtime(off) as rt, mail_lifespan(rt) as bridge:
        assert bridge is None and rt.orchestrator.surfaces.responder("email") is None
    on = mail_settings(tmp_path, relay.port, smtp_enabled=True)
    async with open_runtime(on) as rt, mail_lifespan(rt) as bridge:
        assert rt.orchestrator.surfaces.responder("email") is None  # the bridge registers nothing itself
        async with rt.orchestrator.delivering_to(Surfaces(email=bridge.responder)), rt.orchestrator.running(workers=1):
            await send(bridge, email())
            await relay.wait_for(1)
