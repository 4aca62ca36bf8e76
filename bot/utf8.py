"""Text that was not valid UTF-8, repaired at the door: U+FFFD for every bad byte, and a flag.

Invalid bytes reach Deskhand as lone surrogates (argv and `os.fsdecode` use surrogateescape;
JSON may carry `\\udcff`) or as raw bytes (stdin, files). Either way the text is repaired once,
where a `MessageEnvelope`'s text is validated (bot/contracts.py), which records
`metadata["invalid_utf8"] = True`, so the planner, the store and the tokenizer only ever see
encodable text.
"""

from __future__ import annotations

import codecs

REPLACEMENT = "\ufffd"


def has_surrogates(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def repair_text(text: str) -> tuple[str, bool]:
    """(`text` with each undecodable byte or lone surrogate as U+FFFD, whether any was found)."""
    if not has_surrogates(text):
        return text, False
    raw = text.encode("utf-8", _ERRORS)  # the bytes argv or a file really held
    return raw.decode("utf-8", "replace"), True


def _escaped_bytes(error: UnicodeError) -> tuple[bytes, int]:
    # Surrogate escapes (U+DC80..U+DCFF) go back to the byte they stand for; any other lone
    # surrogate (from JSON, say) becomes one U+FFFD.
    if not isinstance(error, UnicodeEncodeError):
        raise error
    out = bytearray()
    for char in error.object[error.start:error.end]:
        code = ord(char)
        out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else REPLACEMENT.encode()
    return bytes(out), error.end


_ERRORS = "deskhand.utf8"
codecs.register_error(_ERRORS, _escaped_bytes)


def decode_bytes(data: bytes) -> str:
    """Bytes to text, keeping invalid bytes as surrogate escapes for `repair_text` to flag."""
    return data.decode("utf-8", "surrogateescape")


def decode_replacing(data: bytes) -> tuple[str, bool]:
    """Bytes to text with U+FFFD for invalid bytes, and whether there were any."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True
