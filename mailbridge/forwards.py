"""Forwarded mail: who wrote the original, and what it said.

A support teammate forwards a customer's email to the support inbox; Deskhand must answer
the customer's question and know who the customer is. This module finds the forwarded
message inside a body and reads its header block:

- Gmail and Thunderbird: "---------- Forwarded message ---------" then From/Date/Subject/To;
- Apple Mail: "Begin forwarded message:" then From/Subject/Date/To;
- Outlook: "-----Original Message-----" or a "____" separator, or a bare
  From/Sent/To/Subject block. Outlook uses the same layout for replies, so a block like this
  counts as a forward only when the subject says so (FW:, Fwd:, WG:, TR:, RV:, …).

`message/rfc822` attachments are handled in `mailbridge.parse`, which parses the attached
message itself. With nested forwards the outermost block wins: it is the message the
forwarder received, which is the one Deskhand should answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailbridge.quotes import header_block_at, header_line, scan_body

FORWARD_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,80}\]\s*)*(?:fwd?|fw|wg|tr|rv|enc|vs|vb|doorst)\s*(?:\[\d+\]|\(\d+\))?\s*:",
    re.IGNORECASE,
)
_ADDR = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass(frozen=True)
class ForwardInfo:
    kind: str  # "gmail", "apple", "outlook"
    note: str  # what the forwarder wrote above the forwarded message
    sender: str | None  # the original sender's address, lower-cased
    sender_name: str
    subject: str
    date: str
    to: str
    body: str  # the forwarded message's body, as it appears below its headers


def split_address(value: str) -> tuple[str, str | None]:
    """("Jane Customer", "jane@example.com") from the forms forwarded headers use:
    `Jane <jane@x>`, `Jane [mailto:jane@x]`, `"Customer, Jane" <jane@x>`, `jane@x`, `Jane`."""
    value = (value or "").strip()
    m = _ADDR.search(value)
    addr = m.group(0).strip(".").lower() if m else None
    name = re.sub(r"\[mailto:[^\]]*\]|<[^>]*>|\(mailto:[^)]*\)", " ", value)
    if addr:
        name = re.sub(re.escape(addr), " ", name, flags=re.IGNORECASE)
    name = re.sub(r"\bon behalf of\b.*$", " ", name, flags=re.IGNORECASE)
    name = " ".join(name.replace('"', " ").replace("'", " ").strip(" ,;:<>[]()").split())
    return name, addr


def _read_header_block(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    """Headers of a forwarded message starting at or after `start`; returns (headers, end)."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    headers: dict[str, str] = {}
    last_role: str | None = None
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            # Apple Mail sometimes leaves a blank line inside the block; carry on only if
            # another header follows directly.
            if headers and i + 1 < len(lines) and header_line(lines[i + 1]):
                i += 1
                continue
            break
        found = header_line(line)
        if found:
            role, value = found
            last_role = role
            # The first of each role wins ("Date" and "Sent" share a role).
            headers.setdefault(role, value.strip())
        elif last_role and headers and (line[:1].isspace() or last_role == "to"):
            headers[last_role] = f"{headers[last_role]} {line.strip()}".strip()
        else:
            break
        i += 1
    return headers, i


def detect_forward(text: str, subject: str = "") -> ForwardInfo | None:
    """The outermost forwarded message in a plain-text body, or None."""
    scan = scan_body(text)
    if scan.cut is None or scan.cut_kind not in {"forward", "apple_forward", "original", "headers"}:
        return None
    lines = scan.lines
    if scan.cut_kind in {"original", "headers"} and not FORWARD_SUBJECT.match(subject or ""):
        return None  # Outlook's reply layout, not a forward
    start = scan.cut
    # Skip the marker or separator line itself, unless the block starts right here.
    if header_block_at(lines, start) is None:
        start += 1
    headers, end = _read_header_block(lines, start)
    kind = {"forward": "gmail", "apple_forward": "apple"}.get(scan.cut_kind or "", "outlook")
    name, addr = split_address(headers.get("from", ""))
    note_lines = [ln for k, ln in enumerate(lines[: scan.cut]) if k not in scan.dropped]
    return ForwardInfo(
        kind=kind,
        note="\n".join(note_lines).strip(),
        sender=addr,
        sender_name=name,
        subject=headers.get("subject", "").strip(),
        date=headers.get("sent", "").strip(),
        to=headers.get("to", "").strip(),
        body="\n".join(lines[end:]).strip("\n"),
    )
