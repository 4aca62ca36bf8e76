"""The mail bridge wired into Deskhand: mail in, turns through the orchestrator, replies out.

    async with open_runtime(settings) as rt, MailBridge(rt).running() as bridge, \
            rt.orchestrator.delivering_to(Surfaces(email=bridge.responder)), rt.orchestrator.running():
        ...  # SMTP (and IMAP) in, replies out through the relay

`deskhand mail serve` runs exactly that; `mail_lifespan(rt)` is the same bridge for
`deskhand run`, started only when the settings ask for mail.

`MailBridge(runtime).responder` is its `EmailResponder`: the wiring gives it to the
orchestrator (`Surfaces.email`) and, in `deskhand run`, to Slack (its `TeammateMail` port).
`running()` starts, on the current loop and owned by one task group:
1. the SMTP receiver on `smtp_host:smtp_port` (only `smtp_recipients`; the spool under
   `home/mail/spool`), unless `running(smtp=False)` (an IMAP-only mailbox);
2. the IMAP poller, when `imap_host` is set;
3. the outbox sender: every queued email, through the relay (`relay_*`), retried as the
   outbox's one policy says (bot/outbox_policy.py) and given up to `deskhand dlq` after the
   last attempt; on start, whatever a previous process left pending is tried at once.
On exit the receivers stop first (in-flight messages are finished and stored), then the
sender. The bridge does not start the orchestrator's workers: whoever serves Slack does, or
`deskhand mail serve`. Put the bridge outside them, as above, so that the queue drains
while replies can still be sent.

`on_message` is what both receivers call before a message is acknowledged (SMTP "250", the
IMAP \\Seen flag). In order:
1. parse (in a thread: it is CPU work) and resolve the session through `email_threads`;
2. store the inbox row, keyed by tenant and Message-ID, so a redelivery is the same row and
   is never processed twice. A different message reusing a known Message-ID is stored as
   its own row, flagged `duplicate_message_id`, and not processed;
3. by disposition (see `mailbridge.inbound`): `answer` goes to `orchestrator.accept`;
   `human` is handed to a teammate first and then accepted (the turn stays silent, the
   transcript has it); `held` (auto-replies, bounces, lists) is stored as `skipped`;
4. record the message's thread keys, show the message to the mirror, and tell the team about
   anything flagged (an audit entry and `mirror.team_notice`).
If a step fails before the end, the exception reaches the receiver, which answers 451 (or
leaves the IMAP message unread) and the message comes again; every step is idempotent.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import structlog
from bot.contracts import MessageEnvelope, PlanStep, new_correlation_id
from bot.logs import get_logger
from bot.outbox_policy import RetryPolicy
from bot.shadow import is_shadow
from bot.store import SKIPPED
from bot.surfaces import Surfaces
from mailbridge.imap import ImapConfig, ImapPoller
from mailbridge.inbound import Disposition, build_envelope, duplicate_id, notable
from mailbridge.mirror import LogMirror, MailMirror
from mailbridge.outbox import Outbox, RelayConfig, RunResult
from mailbridge.parse import ParsedEmail, fallback_message_id, parse_message
from mailbridge.receiver import MailReceiver, SmtpServer, start_smtp_server
from mailbridge.responder import EmailResponder
from bot.store.mail_outbox import CHANNEL, StoreOutbox
from mailbridge.threading import resolve_thread

log = get_logger("deskhand.mail")

ACTOR = "mailbridge"  # the audit log's actor for what the bridge does on its own


@dataclass
class MailOptions:
    # How often the sender looks at the outbox; it also wakes at once when a reply is queued.
    # The waits between attempts and their number are the outbox's one policy (DESKHAND_OUTBOX_*).
    outbox_poll_s: float = 15.0
    mirror_timeout_s: float = 5.0


@dataclass
class InboundResult:
    envelope: MessageEnvelope
    disposition: Disposition
    fresh: bool  # False for a redelivery of a message already stored
    duplicate_of: str | None = None  # set when a different message reused a known Message-ID


def _parse(raw: bytes, max_bytes: int) -> ParsedEmail:
    try:
        return parse_message(raw, max_bytes=max_bytes)
    except Exception as exc:  # the parser promises not to raise; a message is never lost if it does
        return ParsedEmail(
            message_id=fallback_message_id(raw), size=len(raw),
            flags=["parse_error", f"parse_error:{type(exc).__name__}"],
        )


class MailBridge:
    def __init__(self, runtime, *, mirror: MailMirror | None = None, options: MailOptions | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.store = runtime.store
        self.options = options or MailOptions()
        self.mirror: MailMirror = mirror or LogMirror()
        self.spool_dir: Path = self.settings.home / "mail" / "spool"
        self.outbox = Outbox(
            StoreOutbox(self.store), RelayConfig.from_settings(self.settings),
            policy=RetryPolicy.from_settings(self.settings),
        )
        self.responder = EmailResponder(store=self.store, settings=self.settings, outbox=self.outbox,
                                        mirror=self.mirror, call_mirror=self._call_mirror)
        self.smtp: SmtpServer | None = None

    # -- lifespan -------------------------------------------------------------------------
    @asynccontextmanager
    async def running(self, *, smtp: bool = True) -> AsyncIterator[MailBridge]:
        """Receive (SMTP unless `smtp=False`; IMAP when configured) and send, until exit."""
        settings = self.settings
        stop = asyncio.Event()
        await self.store.outbox_due_now(CHANNEL)  # a restart retries at once
        if smtp:
            receiver = MailReceiver(spool_dir=self.spool_dir, on_message=self.on_message,
                                    recipients=settings.smtp_recipients, max_bytes=settings.mail_max_bytes)
            self.smtp = await start_smtp_server(settings.smtp_host, settings.smtp_port, receiver)
            log.info("mail_smtp_listening", host=settings.smtp_host, port=self.smtp.port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.outbox.run(stop, poll_s=self.options.outbox_poll_s,
                                               on_result=self._after_send, on_error=self._send_loop_error),
                               name="mail-outbox")
                if settings.imap_host:
                    poller = ImapPoller(ImapConfig.from_settings(settings), spool_dir=self.spool_dir,
                                        on_message=self.on_message)
                    tg.create_task(poller.run(stop, poll_s=settings.imap_poll_s, on_error=self._imap_error),
                                   name="mail-imap")
                try:
                    yield self
                finally:
                    await self._stop_smtp()  # no new mail; callbacks in flight finish first
                    stop.set()
        finally:
            await self._stop_smtp()  # if the task group failed before the body ran

    async def _stop_smtp(self) -> None:
        server, self.smtp = self.smtp, None
        if server is not None:
            await server.stop()

    @property
    def smtp_port(self) -> int | None:
        return self.smtp.port if self.smtp else None

    # -- inbound --------------------------------------------------------------------------
    async def on_message(self, raw: bytes, eml_path: Path, envelope_from: str, rcpt_tos: list[str]) -> InboundResult:
        """Store one received email and start what it needs (see the module docstring)."""
        settings, store = self.settings, self.store
        tenant = settings.mail_tenant
        parsed = await asyncio.to_thread(_parse, raw, settings.mail_max_bytes)
        known = await store.email_thread_lookup(parsed.thread_keys, tenant)
        session_id = resolve_thread(parsed, known.get)
        envelope = build_envelope(parsed, tenant_id=tenant, session_id=session_id, policy=settings.policy(tenant),
                                  mail_from=settings.mail_from, envelope_from=envelope_from, rcpt_tos=rcpt_tos)
        # Every line this email logs carries its correlation id (an IMAP poller's other lines do not).
        with structlog.contextvars.bound_contextvars(correlation_id=envelope.correlation_id, tenant_id=tenant,
                                                     session_id=session_id, channel=CHANNEL):
            flags = envelope.metadata["flags"]
            disposition = Disposition(envelope.metadata["disposition"])
            raw_path = str(eml_path)

            if disposition is Disposition.answer:
                fresh = await self.runtime.orchestrator.accept(envelope, flags=flags, raw_path=raw_path)
            elif disposition is Disposition.human:
                fresh = await self._to_human(envelope, flags, raw_path)
            else:
                fresh = await store.inbox_add(envelope, flags=flags, raw_path=raw_path, status=SKIPPED,
                                              outcome=_held_outcome(envelope, "automatic mail is not answered"))
            if not fresh:
                existing = await store.inbox_get(envelope.id)
                if existing is not None and existing["raw_path"] != raw_path:
                    return await self._duplicate(envelope, raw, raw_path, existing["id"])
                # The same bytes again: the sender did not see our answer (we may have stopped
                # before it). Everything below is idempotent or at least once.
            await store.email_thread_record(parsed.thread_keys, session_id, tenant)
            await self._call_mirror("inbound", self.mirror.inbound(envelope, disposition=disposition.value))
            await self._tell_team(envelope, disposition)
            log.info("mail_received", inbox_id=envelope.id, session_id=session_id, disposition=disposition.value,
                     fresh=fresh, flags=flags)
            return InboundResult(envelope=envelope, disposition=disposition, fresh=fresh)

    async def _to_human(self, envelope: MessageEnvelope, flags: list[str], raw_path: str) -> bool:
        """Hand the conversation to a teammate, then accept the message: its turn finds the
        session handed off and stays silent, and the transcript keeps the message."""
        store = self.store
        if await store.inbox_get(envelope.id) is not None:
            return False
        await store.session_get_or_create(envelope)
        reason = "email needs a person: " + ", ".join(notable(flags) or flags)
        ctx = self.runtime.hand_context(
            envelope.tenant_id, envelope.session_id, envelope.user_id, CHANNEL, envelope.correlation_id,
            verified_email=envelope.metadata.get("verified_email"), inbox_id=envelope.id,
            shadow=is_shadow(self.settings.policy(envelope.tenant_id), CHANNEL),
        )
        result = await self.runtime.executor.run(PlanStep(tool="escalate_to_human", args={
            "reason": reason[:500], "transcript_excerpt": envelope.text[:4000]}), ctx)
        if not result.ok:  # e.g. the tenant forbids the tool: keep it unanswered all the same
            log.warning("mail_handoff_failed", inbox_id=envelope.id, error=result.error)
            return await store.inbox_add(envelope, flags=flags, raw_path=raw_path, status=SKIPPED,
                                         outcome=_held_outcome(envelope, reason))
        return await self.runtime.orchestrator.accept(envelope, flags=flags, raw_path=raw_path)

    async def _duplicate(self, envelope: MessageEnvelope, raw: bytes, raw_path: str, original: str) -> InboundResult:
        store = self.store
        dup_id = duplicate_id(envelope.tenant_id, raw)
        dup = envelope.model_copy(update={"id": dup_id, "correlation_id": new_correlation_id(f"email:{dup_id}")})
        flags = [*envelope.metadata["flags"], "duplicate_message_id"]
        fresh = await store.inbox_add(dup, flags=flags, raw_path=raw_path, status=SKIPPED,
                                      outcome=_held_outcome(dup, f"reuses the Message-ID of {original}"))
        if fresh:
            info = {"inbox_id": dup.id, "duplicate_of": original, "message_id": envelope.metadata["message_id"]}
            await store.audit(envelope.tenant_id, ACTOR, "mail_duplicate", envelope.session_id, info)
            await self._call_mirror("team_notice", self.mirror.team_notice(
                envelope.tenant_id, f"A second, different email from {envelope.user_id} reused the Message-ID "
                f"of an earlier one; it was stored ({dup.id}) and not answered.", session_id=envelope.session_id,
                **info))
        return InboundResult(envelope=dup, disposition=Disposition.held, fresh=fresh, duplicate_of=original)

    async def _tell_team(self, envelope: MessageEnvelope, disposition: Disposition) -> None:
        flags = envelope.metadata["flags"]
        worth = notable(flags)
        if disposition is Disposition.held:
            await self.store.audit(envelope.tenant_id, ACTOR, "mail_held", envelope.session_id,
                                   {"inbox_id": envelope.id, "flags": flags})
            if "bounce" not in worth:
                return  # auto-replies and lists: recorded, nobody needs to act
        if not worth:
            return
        info = {"inbox_id": envelope.id, "flags": flags, "disposition": disposition.value}
        await self.store.audit(envelope.tenant_id, ACTOR, "mail_flagged", envelope.session_id, info)
        sender = envelope.user_id
        subject = envelope.metadata.get("subject") or "(no subject)"
        if disposition is Disposition.human:
            text = f"An email from {sender} (\"{subject}\") needs a teammate: {', '.join(worth)}. It is handed to you."
        elif disposition is Disposition.held:
            text = f"A bounce arrived (\"{subject}\"): a customer may not have received our email."
        else:
            text = f"An email from {sender} (\"{subject}\") was answered, but check it: {', '.join(worth)}."
        await self._call_mirror("team_notice", self.mirror.team_notice(
            envelope.tenant_id, text, session_id=envelope.session_id, **info))

    # -- outbound -------------------------------------------------------------------------
    async def _after_send(self, result: RunResult) -> None:
        """Tell the team about every email the relay will not take."""
        if not result.dead:
            return
        failed = {str(r["id"]): r for r in await self.store.outbox_rows("failed", CHANNEL)}
        for item_id in result.dead:
            row = failed.get(item_id)
            if row is None:
                continue
            info = {"outbox_id": item_id, "error": row["last_error"], "attempts": row["attempts"]}
            await self.store.audit(row["tenant_id"], ACTOR, "mail_send_failed", row["session_id"], info)
            to = row["payload"].get("to", "")
            await self._call_mirror("team_notice", self.mirror.team_notice(
                row["tenant_id"], f"An email to {to} could not be sent: {row['last_error']}. "
                f"Retry with `deskhand mail retry {item_id}`.", session_id=row["session_id"], **info))

    def _send_loop_error(self, exc: Exception) -> None:
        log.error("mail_outbox_error", error=f"{type(exc).__name__}: {exc}")

    def _imap_error(self, exc: Exception) -> None:
        log.warning("mail_imap_error", error=f"{type(exc).__name__}: {exc}")

    async def _call_mirror(self, what: str, call: Awaitable[Any]) -> None:
        """A mirror that fails or hangs never stops mail."""
        try:
            async with asyncio.timeout(self.options.mirror_timeout_s):
                await call
        except Exception as exc:  # TimeoutError included
            log.warning("mail_mirror_failed", call=what, error=f"{type(exc).__name__}: {exc}")


def _held_outcome(envelope: MessageEnvelope, reason: str) -> dict:
    return {"inbox_id": envelope.id, "session_id": envelope.session_id, "state": "HELD", "reply": None,
            "reason": reason, "flags": envelope.metadata.get("flags", [])}


@asynccontextmanager
async def mail_lifespan(runtime, *, mirror: MailMirror | None = None,
                        options: MailOptions | None = None) -> AsyncIterator[MailBridge | None]:
    """The bridge when the settings ask for mail (`smtp_enabled`, or an `imap_host`), else
    nothing. For `deskhand run`, outside the Slack lifespan, which bot/run.py wires to it.
    """
    settings = runtime.settings
    if not (settings.smtp_enabled or settings.imap_host):
        yield None
        return
    async with MailBridge(runtime, mirror=mirror, options=options).running(smtp=settings.smtp_enabled) as bridge:
        yield bridge


async def serve_until_stopped(runtime, *, mirror: MailMirror | None = None, options: MailOptions | None = None,
                              on_ready=None) -> None:
    """Run the mail bridge and the orchestrator's workers until SIGINT or SIGTERM
    (`deskhand mail serve`). `on_ready(bridge)` is called once mail is being accepted."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with MailBridge(runtime, mirror=mirror, options=options).running() as bridge, \
                runtime.orchestrator.delivering_to(Surfaces(email=bridge.responder)), runtime.orchestrator.running():
            if on_ready is not None:
                on_ready(bridge)
            await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
