"""Bytes and headers to text, without ever raising: charsets, HTML, header values.

The helpers record what they had to guess in a `Flags` list (see `mailbridge.parse` for the
meaning of each flag).
"""

from __future__ import annotations

import codecs
import html
import re
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

import html2text

MAX_HEADER_CHARS = 8192

_CHARSET_ALIASES = {
    "unknown-8bit": None,
    "x-unknown": None,
    "unknown": None,
    "default": None,
    "x-user-defined": None,
    "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "ansi_x3.4-1968": "ascii",
    "us-ascii": "ascii",
    "utf8": "utf-8",
}
HEADER_DEFECTS = {
    "MissingHeaderBodySeparatorDefect",
    "InvalidHeaderDefect",
    "HeaderMissingRequiredValue",
    "NonPrintableDefect",
    "InvalidDateDefect",
}

class Flags(list):
    """The flags of one parse: a list that keeps its first-seen order and no duplicates."""

    def add(self, flag: str) -> None:
        if flag not in self:
            self.append(flag)


def desurrogate(text: str) -> str:
    """Strings from `email` may carry surrogate escapes for undecodable bytes."""
    if not text:
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _escapes_only(text) else None
        if raw is None:
            text = text.encode("utf-8", "replace").decode("utf-8")
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("cp1252", "replace")
    return text.replace("\x00", "")


def _has_surrogates(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _escapes_only(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def decode_bytes(payload: bytes, charset: str | None, flags: Flags) -> str:
    """Declared charset, else UTF-8, else cp1252 with replacement; flags say which."""
    declared = (charset or "").strip().strip('"').lower() or None
    codec = _CHARSET_ALIASES.get(declared, declared) if declared else None
    if codec:
        try:
            codecs.lookup(codec)
        except LookupError:
            flags.add("undecodable_charset")
            flags.add(f"unknown_charset:{declared}"[:80])
            codec = None
    if codec:
        try:
            return payload.decode(codec)
        except UnicodeDecodeError:
            if codec != "ascii":
                flags.add("undecodable_charset")
        except Exception:  # codecs can raise odd things on garbage input
            flags.add("undecodable_charset")
    try:
        text = payload.decode("utf-8")
        if not payload.isascii():
            flags.add("charset_fallback:utf-8")
        return text
    except UnicodeDecodeError:
        flags.add("invalid_utf8")  # the same flag every door sets (bot/utf8.py)
        flags.add("charset_fallback:cp1252")
        return payload.decode("cp1252", "replace")


def html_to_text(markup: str, flags: Flags) -> str:
    conv = html2text.HTML2Text()
    conv.body_width = 0
    conv.ignore_images = True
    conv.ignore_links = True
    conv.ignore_emphasis = True
    conv.unicode_snob = True
    try:
        text = conv.handle(markup)
    except Exception:
        flags.add("html_error")
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", markup)
        text = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>", "\n", text)
        text = html.unescape(re.sub(r"<[^>]{0,2000}>", " ", text))
    # html2text escapes Markdown at line starts ("1\.", "\-", "\+"); this is plain text.
    text = re.sub(r"(?m)^(\s*)\\([-+#])", r"\1\2", text)
    text = re.sub(r"(?m)^(\s*\d+)\\\.", r"\1.", text)
    return tidy_text(text.replace("\xa0", " "))


def tidy_text(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def header_value(msg: Message, name: str, flags: Flags) -> str:
    raw = _raw_value(msg, name)
    if raw is None:
        return ""
    if len(raw) > MAX_HEADER_CHARS:
        # The stdlib's header parser is slow on huge folded headers; decode a prefix.
        flags.add("long_header")
        return _decode_raw(raw[:MAX_HEADER_CHARS].rsplit(None, 1)[0])
    if _has_surrogates(raw):
        # Raw 8-bit bytes in a header (no RFC 2047 encoding): guess UTF-8, then cp1252,
        # instead of the replacement characters the stdlib would give.
        return _decode_raw(raw)
    try:
        value = msg.get(name)
        if value is None:
            return ""
        for defect in getattr(value, "defects", ()) or ():
            if type(defect).__name__ in HEADER_DEFECTS:
                flags.add("malformed_headers")
        return desurrogate(str(value)).strip()
    except Exception:
        flags.add("malformed_headers")
        return raw_header(msg, name)


def _raw_value(msg: Message, name: str) -> str | None:
    try:
        for key, value in msg.raw_items():
            if key.lower() == name.lower():
                return str(value)
    except Exception:
        pass
    return None


def _decode_raw(value: str) -> str:
    try:
        return desurrogate(str(make_header(decode_header(value)))).strip()
    except Exception:
        return desurrogate(value).strip()


def repeated_header(msg: Message, names: tuple[str, ...]) -> bool:
    """Whether a header that must appear once (From, Subject, …) appears more than once."""
    try:
        found = [key.lower() for key, _ in msg.raw_items() if key.lower() in names]
    except Exception:
        return False
    return len(found) != len(set(found))


def raw_header(msg: Message, name: str) -> str:
    raw = _raw_value(msg, name)
    return "" if raw is None else _decode_raw(raw)


def addresses(msg: Message, name: str, flags: Flags) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    raw = _raw_value(msg, name)
    if raw is None:
        return []
    try:
        if len(raw) > MAX_HEADER_CHARS or _has_surrogates(raw):
            raise ValueError("header too long or not encoded; use the plain parser")
        value = msg.get(name)
        groups = getattr(value, "addresses", None)
        if groups is not None:
            pairs = [(a.display_name or "", a.addr_spec or "") for a in groups]
    except ValueError:
        pass
    except Exception:
        flags.add("malformed_headers")
    if not pairs:
        raw = header_value(msg, name, flags)
        if raw:
            try:
                pairs = getaddresses([raw])
            except Exception:
                pairs = []
    out = []
    for display, addr in pairs:
        addr = desurrogate(addr).strip().strip("<>").lower()
        if addr and "@" in addr:
            out.append((desurrogate(display).strip(), addr))
    return out


def header_date(msg: Message, flags: Flags) -> datetime | None:
    try:
        value = msg.get("date")
        when = getattr(value, "datetime", None)
        if when is None and value is not None:
            when = parsedate_to_datetime(str(value))
    except Exception:
        flags.add("malformed_headers")
        return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def leaves(msg: Message, depth: int = 0):
    """Every non-multipart part, not descending into attached messages."""
    if depth > 50:
        return
    if msg.get_content_maintype() == "multipart":
        payload = msg.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message):
                    yield from leaves(part, depth + 1)
            return
    yield msg


def part_text(part: Message, flags: Flags) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        flags.add("bad_encoding")
        payload = None
    if payload is None:
        raw = part.get_payload()
        if not isinstance(raw, str):
            return ""
        payload = raw.encode("utf-8", "surrogateescape")
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return desurrogate(decode_bytes(payload, charset, flags))


def pick_body(msg: Message, flags: Flags) -> tuple[Message | None, Message | None]:
    """(plain part, html part) of the body; either may be None."""
    plain = htmlp = None
    try:
        plain = msg.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
        htmlp = msg.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    except Exception:
        flags.add("malformed_mime")
    if plain is None and htmlp is None:
        for leaf in leaves(msg):
            ctype = leaf.get_content_type()
            if ctype in ("text/plain", "text/html") and leaf.get_content_disposition() != "attachment":
                if ctype == "text/plain" and plain is None:
                    plain = leaf
                elif ctype == "text/html" and htmlp is None:
                    htmlp = leaf
    return plain, htmlp
