"""Masking of card numbers, secrets and passwords (and, in logs, email addresses).

This is the one place that knows what must never be stored, logged, embedded or sent to a
model. `MessageEnvelope.text` runs `mask_sensitive` as a validator, and the structlog
pipeline runs it over every log event (see `bot.logs.Redact`).
"""

from __future__ import annotations

import re
from typing import Any

CARD_MASK = "[card]"
SECRET_MASK = "[secret]"
PASSWORD_MASK = "[password]"
EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"

# 12–19 digits, optionally grouped by single spaces or dashes. Card schemes start with 1–6
# (UATP, Mastercard 2-series, Amex/Diners/JCB, Visa, Mastercard/Maestro, Discover/UnionPay);
# the Luhn check below decides.
_CARD = re.compile(r"(?<![\w-])[1-6](?:[ -]?\d){11,18}(?![\w-])")

# Each secret pattern with the literal(s) it cannot match without. Every log value and
# stored string is masked, and a substring test is far cheaper than a regex scan, so a
# pattern only runs on text that contains its marker.
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")  # AWS access key IDs
_SECRETS: list[tuple[str, re.Pattern[str]]] = [
    ("-----BEGIN", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)),
    ("xox", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}")),  # Slack bot/user/legacy tokens
    ("xapp-", re.compile(r"\bxapp-[A-Za-z0-9-]{8,}")),  # Slack app-level tokens
    ("sk-", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}")),  # OpenAI / Anthropic style keys
    ("AKIA", _AWS_KEY),
    ("ASIA", _AWS_KEY),
    ("gh", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),  # GitHub tokens
    ("eyJ", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),  # JWTs
]
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*")

# "password: hunter2", "my pwd is hunter2", "passcode=1234"
_PASSWORD = re.compile(
    r"(?i)\b(pass(?:word|wd|code|phrase)?|pwd)\b(\s*(?:is|was|=|:)\s*)(\S+)"
)

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<!\w)(?!\d{4}-\d{2}-\d{2}(?!\d))\+?\d[\d ().-]{7,}\d(?!\w)")


_WITHOUT_DIGITS = str.maketrans("", "", "0123456789")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    raw = match.group(0)
    digits = re.sub(r"[ -]", "", raw)
    # Mixed separators ("4111 1111-1111 1111") are unusual for cards but common in prose
    # lists of numbers; we still mask them if the digits pass Luhn, erring on safety.
    # A leading 1 is only UATP, which is always 15 digits.
    if digits[0] == "1" and len(digits) != 15:
        return raw
    if 12 <= len(digits) <= 19 and luhn_valid(digits):
        return CARD_MASK
    return raw


def mask_sensitive(text: str) -> str:
    """Mask card numbers (Luhn-checked), secrets/tokens and passwords."""
    if not text:
        return text
    for marker, pattern in _SECRETS:
        if marker in text:
            text = pattern.sub(SECRET_MASK, text)
    lowered = text.lower()
    if "bearer" in lowered:
        text = _BEARER.sub(SECRET_MASK, text)
    if "pass" in lowered or "pwd" in lowered:
        text = _PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{PASSWORD_MASK}", text)
    if not text.isascii() or len(text) - len(text.translate(_WITHOUT_DIGITS)) >= 12:
        text = _CARD.sub(_mask_card, text)  # a card has at least 12 digits
    return text


def card_spans(text: str) -> list[tuple[int, int]]:
    """`(start, end)` of every Luhn-valid card number in text (bot/brain/pii.py)."""
    return [m.span() for m in _CARD.finditer(text) if _mask_card(m) == CARD_MASK]


def find_cards(text: str) -> list[str]:
    """Every Luhn-valid card number in text (for tests and audits)."""
    return [m.group(0) for m in _CARD.finditer(text) if _mask_card(m) == CARD_MASK]


def mask_pii(text: str) -> str:
    """Stronger masking for tenants that forbid sending PII to third-party models:
    also masks email addresses and phone numbers."""
    text = mask_sensitive(text)
    text = _EMAIL.sub(EMAIL_MASK, text)
    return _PHONE.sub(PHONE_MASK, text)


def redact_value(value: Any, mask=mask_sensitive) -> Any:
    """Recursively mask strings inside dicts/lists/tuples (for stored JSON; logs pass
    `mask_for_log`)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: redact_value(v, mask) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v, mask) for v in value)
    return value


def _partial_email(match: re.Match[str]) -> str:
    # The first letter and the domain are enough to tell two customers' lines apart, or to
    # see that a mail came from the expected provider, without naming anyone.
    local, _, domain = match.group(0).rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_for_log(text: str) -> str:
    """`mask_sensitive`, plus email addresses shortened to `a***@example.com`: no log line
    may name a customer. Stored text keeps addresses (a reply must reach the customer)."""
    text = mask_sensitive(text)
    if "@" in text:  # the cheap test first: almost no log value holds an address
        text = _EMAIL.sub(_partial_email, text)
    return text


def redact_log_value(value: Any) -> Any:
    return redact_value(value, mask_for_log)
