"""Which conversation an email belongs to.

An email joins a session through its ids first: its own Message-ID (a redelivery), then
In-Reply-To, then References from newest to oldest. Only when none of those is known, and the
message looks like a reply, does the fallback apply: the normalised subject plus the
counterpart's address. A fresh email ("Order status", no Re:, no references) always starts a
new session, so two unrelated questions with the same subject are never merged.

The store keeps a map from key to session id. For every message in a session, inbound and
outbound, it should record `thread_keys(...)` of that message; `resolve_thread` then finds the
session through the same keys. Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mailbridge.parse import ParsedEmail

# Reply and forward prefixes in the languages support mailboxes commonly see, with optional
# counters ("Re[2]:", "AW(3):"), and "[tags]" that lists and ticket systems add.
_PREFIX = re.compile(
    r"""^\s*(?:
        (?:re|fwd?|fw|aw|wg|sv|vs|vb|antw|doorst|rv|tr|enc|odp|ynt|res)
        \s*(?:\[\d+\]|\(\d+\))?\s*[:：]
      | \[[^\]]{0,80}\]
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_REPLY_PREFIX = re.compile(
    r"^\s*(?:\[[^\]]{0,80}\]\s*)*(?:re|aw|sv|vs|antw|rv|odp|ynt|res)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]",
    re.IGNORECASE,
)
_MSGID = re.compile(r"<[^<>\s]+>")


def normalise_subject(subject: str) -> str:
    """Strip Re:/Fwd:/AW:/WG:/SV:/[tags] (repeatedly) and collapse whitespace."""
    text = " ".join((subject or "").split())
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            return text
        text = stripped


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY_PREFIX.match(subject or ""))


def message_ids(value: str | None) -> list[str]:
    """Every `<id>` in a Message-ID/In-Reply-To/References value, in order, deduplicated.

    Some clients omit the angle brackets; a value without any bracketed id is split on
    whitespace and each token that contains an "@" is bracketed.
    """
    if not value:
        return []
    found = _MSGID.findall(value)
    if not found:
        found = [f"<{tok.strip('<>')}>" for tok in value.split() if "@" in tok]
    seen: dict[str, None] = {}
    for mid in found:
        seen.setdefault(mid, None)
    return list(seen)


def subject_key(normalised_subject: str, counterpart: str) -> str | None:
    """The fallback key: normalised subject plus the other party's address.

    None when either is empty: an empty subject is too common to thread on.
    """
    subject = normalised_subject.strip().casefold()
    addr = counterpart.strip().casefold()
    if not subject or not addr:
        return None
    digest = hashlib.sha256(f"{subject}\n{addr}".encode()).hexdigest()[:32]
    return f"subject:{digest}"


def thread_keys(
    *,
    message_id: str,
    in_reply_to: str | None,
    references: Iterable[str],
    normalised_subject: str,
    counterpart: str,
) -> list[str]:
    """Every key that identifies this message's thread: its ids, then the subject key."""
    keys: dict[str, None] = {}
    for mid in [message_id, in_reply_to, *reversed(list(references))]:
        if mid:
            keys.setdefault(mid, None)
    skey = subject_key(normalised_subject, counterpart)
    if skey:
        keys.setdefault(skey, None)
    return list(keys)


def resolve_thread(parsed: ParsedEmail, lookup: Callable[[str], str | None]) -> str:
    """The session this email belongs to.

    `lookup` maps a key (a message-id, or a `subject:` key) to an existing session id, or
    None. Ids are tried first (own id, In-Reply-To, References newest first); the subject key
    only for messages that look like replies. Without a hit: `new_session_id(parsed)`.
    """
    ids = [parsed.message_id, parsed.in_reply_to, *reversed(parsed.references)]
    for mid in ids:
        if mid:
            session = lookup(mid)
            if session:
                return session
    looks_like_reply = bool(parsed.in_reply_to or parsed.references) or is_reply_subject(parsed.subject)
    if looks_like_reply:
        skey = subject_key(parsed.normalised_subject, parsed.from_addr)
        if skey:
            session = lookup(skey)
            if session:
                return session
    return new_session_id(parsed)


def new_session_id(parsed: ParsedEmail) -> str:
    """A stable session id, "email:<hash>", from the root of the thread.

    The root is the first References id, else In-Reply-To, else the message's own id, so two
    replies in one unknown thread get the same id even if they arrive out of order.
    """
    root = (parsed.references[0] if parsed.references else None) or parsed.in_reply_to or parsed.message_id
    return "email:" + hashlib.sha256(root.encode("utf-8", "replace")).hexdigest()[:16]
