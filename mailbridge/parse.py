"""Raw email bytes to a `ParsedEmail`: headers, the visible reply, forwards, attachments.

`parse_message` never raises. Whatever goes wrong is caught and named in `flags`, and the
result carries what could be recovered, so an unparseable message is still stored and
shown to a human instead of being dropped (DESIGN §7).

Flags:
- `oversized`: over `max_bytes`; only the head was parsed.
- `parse_error`, `parse_error:<Exception>`: something failed inside; fields are partial.
- `no_message_id`: the Message-ID was missing; a stable `<sha256:…@deskhand>` stands in.
- `no_text`: no readable body at all. `only_quoted`: a body, but nothing new above quotes.
- `undecodable_charset`, `unknown_charset:<name>`, `charset_fallback:<codec>`.
- `invalid_utf8`: the body was not valid UTF-8 (whatever it declared); read as cp1252.
- `malformed_headers`, `malformed_mime`, `bad_encoding`, `defects:<Name,…>` (from `email`).
- `html_error`: HTML could not be converted; tags were stripped instead.
- `auto_submitted`, `bounce`, `mailing_list`: do not auto-reply to these (mail loops).
- `forward_without_headers`: a Fwd: subject, but no forwarded header block was found.
- `text_truncated`: the body text was cut to `MAX_TEXT_CHARS`.
- `long_header`: a header over `MAX_HEADER_CHARS`; only its start was decoded.
- `html_sniffed`: no Content-Type, but the body is HTML; it was converted.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email import policy
from email.message import Message
from email.parser import BytesParser

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Attachment
from bot.redact import mask_sensitive
from mailbridge.decode import (
    HEADER_DEFECTS,
    Flags,
    addresses,
    desurrogate,
    header_date,
    header_value,
    html_to_text,
    leaves,
    part_text,
    pick_body,
    repeated_header,
    tidy_text,
)
from mailbridge.forwards import FORWARD_SUBJECT, detect_forward
from mailbridge.quotes import split_body
from mailbridge.threading import message_ids, normalise_subject, thread_keys

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_TEXT_CHARS = 200_000
MAX_HTML_CHARS = 2_000_000
_MAX_DEPTH = 3

_LOOKS_HTML = re.compile(r"\s*(?:<\?xml[^>]*>\s*)?<(?:!doctype\s+html|html|head|body|div|p|table)\b", re.I)
_MIME_DEFECTS = {
    "StartBoundaryNotFoundDefect",
    "CloseBoundaryNotFoundDefect",
    "MultipartInvariantViolationDefect",
    "NoBoundaryInMultipartDefect",
    "FirstHeaderLineIsContinuationDefect",
    "MisplacedEnvelopeHeaderDefect",
}
_ENCODING_DEFECTS = {
    "InvalidBase64PaddingDefect",
    "InvalidBase64CharactersDefect",
    "InvalidBase64LengthDefect",
    "InvalidMultipartContentTransferEncodingDefect",
}


class ParsedEmail(BaseModel):
    """One email, normalised. Text fields are masked (`bot.redact.mask_sensitive`)."""

    model_config = ConfigDict(extra="forbid")

    message_id: str
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    subject: str = ""
    normalised_subject: str = ""
    from_addr: str = ""
    from_name: str = ""
    reply_to: list[str] = Field(default_factory=list)
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    date: datetime | None = None
    text: str = ""  # the visible reply: quotes and signature removed
    quoted_text: str = ""  # what was removed as quotes or earlier messages
    full_text: str = ""  # the whole body as text
    html_converted: bool = False
    is_forward: bool = False
    original_sender: str | None = None
    original_name: str = ""
    original_subject: str = ""
    original_date: str = ""
    original_text: str = ""  # the forwarded message's visible text
    attachments: list[Attachment] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    thread_keys: list[str] = Field(default_factory=list)
    size: int = 0

    @property
    def reply_address(self) -> str:
        """Where a reply goes: Reply-To if given, else From."""
        return self.reply_to[0] if self.reply_to else self.from_addr

    @property
    def question_text(self) -> str:
        """What to answer: the forwarded message for a forward (with the note), else text."""
        if self.is_forward and self.original_text:
            return f"{self.text}\n\n{self.original_text}".strip() if self.text else self.original_text
        return self.text


def fallback_message_id(raw: bytes) -> str:
    return f"<sha256:{hashlib.sha256(raw).hexdigest()[:40]}@deskhand>"


def _attachment(part: Message, index: int, flags: Flags) -> Attachment:
    try:
        name = part.get_filename() or ""
    except Exception:
        flags.add("malformed_headers")
        name = ""
    ctype = part.get_content_type()
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        inner_msg = inner[0] if isinstance(inner, list) and inner else inner
        if isinstance(inner_msg, Message):
            subject = header_value(inner_msg, "subject", flags)
            name = name or f"{subject or 'message'}.eml"
            try:
                size = len(inner_msg.as_bytes(policy=policy.default))
            except Exception:
                size = 0
            return Attachment(name=desurrogate(name)[:255], content_type=ctype, size=size)
    try:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
    except Exception:
        size = 0
    return Attachment(name=desurrogate(name or f"part-{index}")[:255], content_type=ctype, size=size)


def _collect_defects(msg: Message, flags: Flags) -> None:
    names: set[str] = set()
    try:
        for part in msg.walk():
            names.update(type(d).__name__ for d in getattr(part, "defects", ()))
    except Exception:
        flags.add("malformed_mime")
    if names & HEADER_DEFECTS:
        flags.add("malformed_headers")
    if names & _MIME_DEFECTS:
        flags.add("malformed_mime")
    if names & _ENCODING_DEFECTS:
        flags.add("bad_encoding")
    if names:
        flags.add("defects:" + ",".join(sorted(names)))


def _auto_flags(msg: Message, from_addr: str, flags: Flags) -> None:
    auto = header_value(msg, "auto-submitted", flags).lower()
    precedence = header_value(msg, "precedence", flags).lower()
    if (auto and auto != "no") or precedence in {"bulk", "junk", "auto_reply"}:
        flags.add("auto_submitted")
    if header_value(msg, "x-autoreply", flags) or header_value(msg, "x-autorespond", flags):
        flags.add("auto_submitted")
    if header_value(msg, "list-id", flags) or precedence == "list":
        flags.add("mailing_list")
    local = from_addr.split("@")[0]
    if (
        msg.get_content_type() == "multipart/report"
        or local in {"mailer-daemon", "postmaster"}
        or header_value(msg, "return-path", flags) == "<>"
    ):
        flags.add("bounce")


def parse_message(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedEmail:
    """Parse raw RFC 5322 bytes. Never raises; problems are reported in `flags`."""
    flags = Flags()
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raw = str(raw).encode("utf-8", "replace")
    raw = bytes(raw)
    size = len(raw)
    data = raw
    if max_bytes and size > max_bytes:
        flags.add("oversized")
        data = raw[:max_bytes]
    try:
        msg = BytesParser(policy=policy.default).parsebytes(data)
        return _from_message(msg, data, size, flags, depth=0)
    except Exception as exc:  # the contract: never raise, say what happened
        flags.add("parse_error")
        flags.add(f"parse_error:{type(exc).__name__}")
        text = desurrogate(data.decode("utf-8", "replace"))[:MAX_TEXT_CHARS]
        return ParsedEmail(
            message_id=fallback_message_id(raw),
            full_text=mask_sensitive(text),
            flags=list(flags),
            size=size,
        )


def _from_message(msg: Message, data: bytes | None, size: int, flags: Flags, depth: int) -> ParsedEmail:
    out: dict = {"size": size}
    try:
        _fill(msg, data, flags, depth, out)
    except Exception as exc:
        flags.add("parse_error")
        flags.add(f"parse_error:{type(exc).__name__}")
    if not out.get("message_id"):
        out["message_id"] = fallback_message_id(data if data is not None else repr(out).encode())
        flags.add("no_message_id")
    return _finish(out, flags)


def _fill(msg: Message, data: bytes | None, flags: Flags, depth: int, out: dict) -> None:
    ids = message_ids(header_value(msg, "message-id", flags))
    if ids:
        out["message_id"] = ids[0]
    elif data is not None:
        out["message_id"] = fallback_message_id(data)
        flags.add("no_message_id")
    reply_ids = message_ids(header_value(msg, "in-reply-to", flags))
    out["in_reply_to"] = reply_ids[0] if reply_ids else None
    out["references"] = message_ids(header_value(msg, "references", flags))
    subject = header_value(msg, "subject", flags)
    out["subject"] = subject
    out["normalised_subject"] = normalise_subject(subject)
    sender = addresses(msg, "from", flags)
    from_name, from_addr = sender[0] if sender else ("", "")
    out["from_name"], out["from_addr"] = from_name, from_addr
    out["reply_to"] = [a for _, a in addresses(msg, "reply-to", flags)]
    out["to"] = [a for _, a in addresses(msg, "to", flags)]
    out["cc"] = [a for _, a in addresses(msg, "cc", flags)]
    out["date"] = header_date(msg, flags)
    _collect_defects(msg, flags)
    if repeated_header(msg, ("from", "subject", "message-id", "date")):
        flags.add("malformed_headers")  # a repeated From/Subject/…: often spoofing
    _auto_flags(msg, from_addr, flags)

    # Body: text/plain first, HTML converted otherwise (or when the plain part is empty).
    plain, htmlp = pick_body(msg, flags)
    full_text = tidy_text(part_text(plain, flags)) if plain is not None else ""
    if plain is not None and htmlp is None and "content-type" not in msg and _LOOKS_HTML.match(full_text):
        flags.add("html_sniffed")
        htmlp, full_text = plain, ""
    if not full_text.strip() and htmlp is not None:
        markup = part_text(htmlp, flags)
        if len(markup) > MAX_HTML_CHARS:
            flags.add("text_truncated")
            markup = markup[:MAX_HTML_CHARS]
        full_text = html_to_text(markup, flags)
        out["html_converted"] = True
    if len(full_text) > MAX_TEXT_CHARS:
        flags.add("text_truncated")
        full_text = full_text[:MAX_TEXT_CHARS]
    out["full_text"] = full_text

    # Attachments, and an attached message (message/rfc822) as the forwarded original.
    attachments: list[Attachment] = []
    inner: ParsedEmail | None = None
    for index, leaf in enumerate(leaves(msg)):
        if leaf is plain or leaf is htmlp:
            continue
        maintype = leaf.get_content_maintype()
        disposition = leaf.get_content_disposition()
        try:
            filename = leaf.get_filename()
        except Exception:
            filename = None
        if maintype == "text" and disposition != "attachment" and not filename:
            continue  # an alternative rendering of the body, not an attachment
        attachments.append(_attachment(leaf, index, flags))
        if leaf.get_content_type() == "message/rfc822" and inner is None and depth < _MAX_DEPTH:
            payload = leaf.get_payload()
            inner_msg = payload[0] if isinstance(payload, list) and payload else payload
            if isinstance(inner_msg, Message):
                inner = _from_message(inner_msg, None, 0, Flags(), depth + 1)
    out["attachments"] = attachments

    split = split_body(full_text, from_name, from_addr)
    out["text"], out["quoted_text"] = split.visible, split.quoted
    forward = detect_forward(full_text, subject)
    if inner is not None and "bounce" not in flags:
        out.update(
            is_forward=True,
            original_sender=inner.from_addr or None,
            original_name=inner.from_name,
            original_subject=inner.subject,
            original_date=inner.date.isoformat() if inner.date else "",
            original_text=inner.text or inner.full_text,
        )
    elif forward is not None:
        note = split_body(forward.note, from_name, from_addr)
        body = split_body(forward.body, forward.sender_name, forward.sender or "")
        out.update(
            is_forward=True,
            text=note.visible,
            quoted_text=split.quoted,
            original_sender=forward.sender,
            original_name=forward.sender_name,
            original_subject=forward.subject,
            original_date=forward.date,
            original_text=body.visible or body.reply,
        )
    elif FORWARD_SUBJECT.match(subject):
        out["is_forward"] = True
        flags.add("forward_without_headers")
    if not full_text.strip() and inner is None:
        flags.add("no_text")
    elif not out["text"].strip() and not out.get("original_text", "").strip():
        flags.add("only_quoted")


_MASKED = ("subject", "normalised_subject", "text", "quoted_text", "full_text", "original_subject", "original_text")


def _finish(out: dict, flags: Flags) -> ParsedEmail:
    for key in _MASKED:
        if out.get(key):
            out[key] = mask_sensitive(out[key])
    try:
        out["thread_keys"] = thread_keys(
            message_id=out["message_id"],
            in_reply_to=out.get("in_reply_to"),
            references=out.get("references") or [],
            normalised_subject=out.get("normalised_subject", ""),
            counterpart=out.get("from_addr", ""),
        )
        return ParsedEmail(**out, flags=list(flags))
    except Exception as exc:
        flags.add("parse_error")
        flags.add(f"parse_error:{type(exc).__name__}")
        return ParsedEmail(message_id=out["message_id"], size=out.get("size", 0), flags=list(flags))
