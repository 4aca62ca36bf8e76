"""Personal data kept from a model: found, replaced by per-turn placeholders, restored.

Where a tenant's policy keeps PII from the model (`allow_pii_to_model: false`, the
default), every string the LLM planner sends passes `PiiVault.mask`: each email, phone
number, IBAN, SSN, IP address, card, person name and street address becomes a placeholder
such as `[email_1]`. The same value gets the same placeholder for the whole turn (plan,
history and draft share one vault), so the model can still say "look up [email_1]". Plan
args and the drafted reply pass `PiiVault.restore` before the Hands or the customer see
them, so a lookup gets the real address and the customer reads real values.

How each kind is found (bench/pii.py measures them):
- identifiers with their own libraries: IBANs by country format and mod-97 checksum
  (python-stdnum), phone numbers by Google's libphonenumber (`phonenumbers`'s matcher, run
  once per region in `phone_regions`; numbers written with `+` are found in any region),
  IP addresses validated by the standard library's `ipaddress`, cards by Luhn
  (bot/redact.py), SSNs by the SSA's rules (no 000/666/9xx area, no 00 group, no 0000);
- names and addresses by patterns and gazetteers in bot/brain/pii_names.py.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import phonenumbers
from stdnum import iban as stdnum_iban

from bot.brain.pii_names import find_addresses, find_names
from bot.brain.pii_regions import DEFAULT_PHONE_REGIONS
from bot.redact import card_spans

KINDS = ("email", "phone", "iban", "ssn", "ip", "card", "name", "address")

# The local part takes RFC 5322's atext; the domain needs a dot (a reachable address).
_EMAIL = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]+@(?:[\w-]+\.)+(?:[A-Za-z]{2,}|xn--[\w-]+)"
                    r"(?![\w-])")
# Country code, check digits, then 11–30 letters/digits, optionally in groups of four.
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}\b")
_SSN = re.compile(r"(?<![\w.-])(\d{3})([-. ]?)(\d{2})(\2)(\d{4})(?![\w-]|\.\d)")
_SSN_CUE = re.compile(r"(?i)\b(?:ssn|social security|ss#|tax id|itin)\b")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})"
                   r"(?:%\w+)?(?:/\d{1,3})?(?![\w:]|\.\d)")
_PHONE_GROUPING = re.compile(r"\d[ ().-]+\d")
_PLACEHOLDER = re.compile(r"\[(" + "|".join(KINDS) + r")_(\d+)\]")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str
    text: str
    key: str  # the normalised value: one placeholder per key and kind in a turn


def _ssn_valid(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _emails(text: str) -> list[Span]:
    return [Span(m.start(), m.end(), "email", m.group(), m.group().lower()) for m in _EMAIL.finditer(text)]


def _ibans(text: str) -> list[Span]:
    out = []
    for m in _IBAN.finditer(text):
        raw = m.group()
        # The pattern may run into a following word or number: the longest prefix that
        # passes the checksum is the IBAN.
        for end in range(len(raw), 14, -1):
            # The mod-97 checksum and the country's length and format; not the national check
            # digits, which python-stdnum gets wrong for some valid Belgian IBANs.
            if raw[end - 1].isalnum() and stdnum_iban.is_valid(raw[:end], check_country=False):
                out.append(Span(m.start(), m.start() + end, "iban", raw[:end], stdnum_iban.compact(raw[:end])))
                break
    return out


def _looks_like_a_phone(raw: str, number: phonenumbers.PhoneNumber) -> bool:
    # libphonenumber calls numbers in unassigned or fictional ranges (the UK's 07700 900xxx,
    # the US's 555) invalid, but customers (and test data) write them: a possible number of
    # ten digits or more, written the way phones are (a "+", or grouped), counts too.
    if phonenumbers.is_valid_number(number):
        return True
    digits = sum(c.isdigit() for c in raw)
    return digits >= 10 and (raw.startswith("+") or bool(_PHONE_GROUPING.search(raw)))


def _phones(text: str, regions: tuple[str, ...]) -> list[Span]:
    out: list[Span] = []
    if sum(c.isdigit() for c in text) < 5:  # the shortest national numbers have five digits
        return out
    for region in regions or DEFAULT_PHONE_REGIONS:
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
            if _looks_like_a_phone(m.raw_string, m.number):
                key = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
                out.append(Span(m.start, m.end, "phone", m.raw_string, key))
    return out


def _ssns(text: str) -> list[Span]:
    out = []
    for m in _SSN.finditer(text):
        area, sep1, group, sep2, serial = m.groups()
        if not _ssn_valid(area, group, serial):
            continue
        # Nine bare digits are an SSN only where the text says so; otherwise they are far
        # more often an order, account or tracking number.
        if not sep1 and not _SSN_CUE.search(text[max(0, m.start() - 40):m.start()]):
            continue
        out.append(Span(m.start(), m.end(), "ssn", m.group(), area + group + serial))
    return out


def _ips(text: str) -> list[Span]:
    out = []
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            raw = m.group()
            try:
                bare = raw.split("%")[0]  # an IPv6 zone ("%eth0") is not part of the address
                address = ipaddress.ip_interface(bare) if "/" in raw else ipaddress.ip_address(bare)
            except ValueError:
                continue
            if raw.count(":") >= 2 and not any(c.isdigit() for c in raw.replace(":", "")) and raw != "::":
                continue  # letters and colons only ("a:b:c") is not an address anyone means
            out.append(Span(m.start(), m.end(), "ip", raw, str(address)))
    return out


def _cards(text: str) -> list[Span]:
    return [Span(s, e, "card", text[s:e], re.sub(r"\D", "", text[s:e])) for s, e in card_spans(text)]


def find_pii(text: str, phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> list[Span]:
    """Every PII span in text, left to right, without overlaps (identifiers first: an
    email's local part is never also a name, a card is never also a phone)."""
    if not text:
        return []
    found: list[Span] = []
    for group in (_emails(text) + _ibans(text) + _cards(text), _ssns(text) + _ips(text),
                  _phones(text, phone_regions), find_addresses(text), find_names(text)):
        for span in sorted(group, key=lambda s: (s.start, -(s.end - s.start))):
            if all(span.end <= f.start or span.start >= f.end for f in found):
                found.append(span)
    return sorted(found, key=lambda s: s.start)


class PiiVault:
    """The placeholders of one turn: `mask` replaces values, `restore` puts them back."""

    def __init__(self, phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS):
        self.phone_regions = tuple(phone_regions)
        self._placeholder: dict[tuple[str, str], str] = {}
        self._value: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def placeholder_for(self, span: Span) -> str:
        key = (span.kind, span.key)
        if key not in self._placeholder:
            self._counts[span.kind] = self._counts.get(span.kind, 0) + 1
            token = f"[{span.kind}_{self._counts[span.kind]}]"
            self._placeholder[key] = token
            self._value[token] = span.text
        return self._placeholder[key]

    def mask(self, text: str) -> str:
        if not text:
            return text
        out, last = [], 0
        for span in find_pii(text, self.phone_regions):
            out.extend((text[last:span.start], self.placeholder_for(span)))
            last = span.end
        out.append(text[last:])
        return "".join(out)

    def restore(self, text: str) -> str:
        if not text or "[" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self._value.get(m.group(0), m.group(0)), text)

    def restore_value(self, value: Any) -> Any:
        """`restore` through dicts and lists (a plan's args)."""
        if isinstance(value, str):
            return self.restore(value)
        if isinstance(value, dict):
            return {k: self.restore_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.restore_value(v) for v in value]
        return value

    def __len__(self) -> int:
        return len(self._value)
