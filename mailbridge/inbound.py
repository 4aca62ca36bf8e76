"""From a parsed email to Deskhand's `MessageEnvelope`: who the customer is, and what to do.

Pure functions, no I/O: `service.MailBridge` calls them between the parse and the store.

Who the customer is (and so `verified_email`, the only address whose orders may be shown):
- a plain message: its From address;
- a forward from a sender in the tenant's `trusted_forwarders`: the forwarded message's
  original sender (the teammate who forwarded it is copied on the replies);
- a forward from anyone else: the forwarder. An untrusted forward can never make the bot
  reveal someone else's orders.

Replies go to the customer's address, never to a Reply-To: a forged Reply-To must not
redirect a customer's order details elsewhere.

What happens to it (`Disposition`):
- `answer`: a normal turn, through `orchestrator.accept`;
- `human`: nothing the bot can safely answer (no text, only quoted text, a parse error, no
  sender): stored, the conversation handed to a teammate, the team told;
- `held`: automatic mail (auto-replies, bounces, mailing lists, our own replies coming back):
  stored, never answered, so that two robots never answer each other.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from bot.config import TenantPolicy
from bot.contracts import Channel, MessageEnvelope, new_correlation_id
from mailbridge.parse import ParsedEmail

HELD_FLAGS = ("auto_submitted", "bounce", "mailing_list", "from_self")
HUMAN_FLAGS = ("no_text", "only_quoted", "parse_error", "no_sender")
# Worth a teammate's look even when the bot can answer: part of the message may be missing
# or garbled.
NOTICE_FLAGS = ("oversized", "undecodable_charset", "malformed_mime", "bad_encoding", "text_truncated")


class Disposition(StrEnum):
    answer = "answer"
    human = "human"
    held = "held"


def envelope_id(tenant_id: str, message_id: str) -> str:
    """The inbox id of an email: one per tenant and Message-ID, so a redelivery is the same
    row (the inbox insert is the deduplication)."""
    return "mail_" + hashlib.sha256(f"{tenant_id}\n{message_id}".encode("utf-8", "replace")).hexdigest()[:24]


def duplicate_id(tenant_id: str, raw: bytes) -> str:
    """The inbox id of a different message that reuses a known Message-ID."""
    return "mail_dup_" + hashlib.sha256(tenant_id.encode() + b"\n" + raw).hexdigest()[:20]


def _matches(address: str, entries: list[str]) -> bool:
    addr = address.strip().lower()
    domain = "@" + addr.rpartition("@")[2]
    wanted = {e.strip().lower() for e in entries if e.strip()}
    return bool(addr) and (addr in wanted or domain in wanted)


def is_trusted_forward(parsed: ParsedEmail, policy: TenantPolicy) -> bool:
    """A forward that names its original sender, from a trusted forwarder ("@domain" entries
    trust a whole domain)."""
    return bool(parsed.is_forward and parsed.original_sender and _matches(parsed.from_addr, policy.trusted_forwarders))


def customer_address(parsed: ParsedEmail, policy: TenantPolicy, envelope_from: str = "") -> str:
    """The address this conversation belongs to (see the module docstring)."""
    if is_trusted_forward(parsed, policy):
        return (parsed.original_sender or "").lower()
    return (parsed.from_addr or envelope_from or "").strip().lower()


def flags_for(parsed: ParsedEmail, *, customer: str, mail_from: str) -> list[str]:
    """The parser's flags plus the bridge's own: `from_self` (our own mail come back) and
    `no_sender` (no address to answer)."""
    flags = list(parsed.flags)
    if mail_from and parsed.from_addr.strip().lower() == mail_from.strip().lower():
        flags.append("from_self")
    if "@" not in customer:
        flags.append("no_sender")
    return flags


def disposition(flags: list[str]) -> Disposition:
    names = {f.split(":", 1)[0] for f in flags}
    if names & set(HELD_FLAGS):
        return Disposition.held
    if names & set(HUMAN_FLAGS):
        return Disposition.human
    return Disposition.answer


def notable(flags: list[str]) -> list[str]:
    """The flags a teammate should hear about."""
    names = {f.split(":", 1)[0] for f in flags}
    return sorted(names & {*HUMAN_FLAGS, *NOTICE_FLAGS, "bounce"})


def build_envelope(
    parsed: ParsedEmail,
    *,
    tenant_id: str,
    session_id: str,
    policy: TenantPolicy,
    mail_from: str,
    envelope_from: str = "",
    rcpt_tos: list[str] | None = None,
) -> MessageEnvelope:
    """The envelope for one email. Its id comes from the Message-ID (see `envelope_id`), and
    so does its correlation id: the same email delivered again logs under the same id."""
    customer = customer_address(parsed, policy, envelope_from)
    flags = flags_for(parsed, customer=customer, mail_from=mail_from)
    trusted = is_trusted_forward(parsed, policy)
    text = parsed.question_text
    if disposition(flags) is not Disposition.answer:
        text = text or parsed.full_text  # for the teammate who reads it
    metadata = {
        "message_id": parsed.message_id,
        "in_reply_to": parsed.in_reply_to,
        "references": list(parsed.references),
        "subject": parsed.subject,
        # What the customer's replies are threaded under: a trusted forward is answered to
        # the customer, about their own message.
        "thread_subject": (parsed.original_subject or parsed.subject) if trusted else parsed.subject,
        "from": parsed.from_addr,
        "reply_address": parsed.reply_address,
        "customer": customer,
        "cc": [parsed.from_addr.lower()] if trusted else [],
        "forwarded_by": parsed.from_addr if parsed.is_forward else None,
        "original_sender": parsed.original_sender,
        "trusted_forward": trusted,
        "verified_email": customer if "@" in customer else None,
        "flags": flags,
        "disposition": disposition(flags).value,
        "envelope_from": envelope_from,
        "rcpt_tos": list(rcpt_tos or []),
        "size": parsed.size,
    }
    inbox_id = envelope_id(tenant_id, parsed.message_id)
    return MessageEnvelope(
        id=inbox_id,
        correlation_id=new_correlation_id(f"email:{inbox_id}"),
        tenant_id=tenant_id,
        channel=Channel.email,
        user_id=customer or "unknown",
        session_id=session_id,
        text=text,
        attachments=list(parsed.attachments),
        metadata=metadata,
    )
