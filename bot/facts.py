"""Facts in text, in every form a reply may write them, and in one normalised form each.

The output guard (bot/guards.py) checks that every fact in a reply also occurs in a tool
result or a cited passage. A fact is compared by meaning, not spelling: "December 25",
"25 Dec 2026", "12/25/2026" and "2026-12-25" are one date; "$50", "50 USD" and "50.00"
one amount. What counts as the same fact:

- IDs (orders A-1042, refunds RF-4001, tickets TCK-1001 / HD-1, tracking numbers such as
  UPS 1Z…, long digit runs): the same characters, ignoring case, spaces and a leading "#".
- Dates: the same day and month. A year on both sides must agree; a side without a year
  matches any. "01/02/2026" is read both ways (US and European), "25.12.2026" one way.
- Money: the same value to the cent. A currency on both sides must agree ("$50" does not
  match "50 EUR"); a bare number ("64.00", or a tool's `total: 64.0`) matches any. A
  number in tool data takes the `currency` field of its nearest enclosing object.
- Percentages: the same value ("15%" = "15 percent" = "fifteen per cent").
- Durations: the same span in the same kind of time. Hours, days and weeks are one scale
  ("two weeks" = "14 days", "48 hours" = "2 days"); business (working) days are another
  ("5 days" is not "5 business days"); months and years are their own. A range must match
  a range ("3-5 business days" = "3 to 5 working days"); a single value also matches the
  upper end of a range ("within 10 business days" against "5–10 business days").

Not facts, so never flagged: durations in minutes or seconds ("in 2 minutes" is a way of
speaking, not a policy), "100% sure", bare integers and counts, durations without a number
("a few days", "a week"), times of day, weekdays, relative days ("tomorrow"), and dates
without a year written with slashes ("25/12" reads too much like "24/7").
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bot.contracts import Citation, ToolResult

Key = tuple[Any, ...]

WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())} | {
    "thirty": 30, "forty": 40, "forty-eight": 48, "fifty": 50, "sixty": 60, "ninety": 90}
_NUM = r"(?:\d+(?:[.,]\d+)?|" + "|".join(sorted(WORD_NUMBERS, key=len, reverse=True)) + r")"

_MONTHS = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8,
           "sep": 9, "oct": 10, "nov": 11, "dec": 12}
_MONTH = (r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?(?!\d)"
_YEAR = r"(?:,?\s+(?P<year>\d{4})(?!\d))?"

_ISO_DATE = re.compile(r"(?<!\d)(?P<year>\d{4})[-/](?P<month>\d{1,2})[-/](?P<day>\d{1,2})(?!\d)")
_SLASH_DATE = re.compile(r"(?<![\d/])(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<year>\d{4})(?![\d/])")
_DOT_DATE = re.compile(r"(?<![\d.])(?P<day>\d{1,2})\.(?P<month>\d{1,2})\.(?P<year>\d{4})(?![\d])")
_MONTH_FIRST = re.compile(rf"\b{_MONTH}\s+{_DAY}{_YEAR}", re.I)
# "25 Dec 2026", "the 25th of December", "25-Dec-2026"
_DAY_FIRST = re.compile(
    rf"\b(?:the\s+)?{_DAY}(?:\s+of\s+|[\s-]+){_MONTH}(?![a-z])(?:-(?P<dyear>\d{{4}})(?!\d)|{_YEAR})", re.I)

_AMOUNT = r"\d{1,3}(?:[,.\u00a0 ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_CODES = {"$": "USD", "us$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD", "€": "EUR", "eur": "EUR",
          "euro": "EUR", "euros": "EUR", "£": "GBP", "gbp": "GBP"}
_MONEY_BEFORE = re.compile(rf"(?<![\w.])(?P<cur>US\$|[$€£]|USD|EUR|GBP)\s?(?P<n>{_AMOUNT})(?![\d])", re.I)
_MONEY_AFTER = re.compile(
    rf"(?<![\w.,])(?P<n>{_AMOUNT})\s?(?P<cur>[$€£]|usd\b|eur\b|gbp\b|dollars?\b|euros?\b)", re.I)
_MONEY_BARE = re.compile(r"(?<![\w.,])\d{1,6}\.\d{2}(?!\.?\d)")  # "64.00": an amount without a currency

_PERCENT = re.compile(  # not "100% sure": a way of speaking
    rf"(?<![\w.])(?P<n>{_NUM})\s*(?:%|per\s?cent\b)(?!\s*(?:sure|certain|confident)\b)", re.I)
_DURATION = re.compile(
    rf"(?<![\w.])(?P<a>{_NUM})(?:\s*(?:-|–|—|\bto\b|\band\b)\s*(?P<b>{_NUM}))?[\s-]+"
    r"(?P<biz>(?:business|working)[\s-]+)?(?P<unit>hours?|days?|weeks?|months?|years?)\b", re.I)
_MINUTES = {"hour": 60, "day": 1440, "week": 10080}  # one scale; business days, months, years apart

_UPS = re.compile(r"(?<![\w-])1Z(?:\s?[0-9A-Z]){16}(?![\w-])")
_PREFIXED_ID = re.compile(r"(?<![\w-])[A-Z]{1,5}-(?=[A-Z0-9]*\d)[A-Z0-9]{1,12}(?![\w-])")
_ORDER_ID = re.compile(r"(?<![\w-])[a-z]{1,4}-\d{3,10}(?![\w-])", re.I)  # "a-1042" as a customer types it
_CODE_ID = re.compile(r"(?<![\w-])(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{10,35}(?![\w-])")
_DIGIT_ID = re.compile(r"(?<![\w.,-])#?\d{6,30}(?![\w-])")


@dataclass(frozen=True)
class Fact:
    """One fact as written, and the normalised keys a source must hold one of to ground it."""

    kind: str  # id | date | money | percent | duration
    text: str
    accepts: frozenset[Key]


def _number(word: str) -> float:
    word = word.lower()
    return float(WORD_NUMBERS[word]) if word in WORD_NUMBERS else float(word.replace(",", "."))


def _amount(text: str) -> float:
    """'1,500' → 1500, '64,00' → 64.0, '1.299,95' → 1299.95: a separator followed by one or
    two final digits is the decimal mark, any other is a thousands separator."""
    text = text.replace("\u00a0", "").replace(" ", "")
    m = re.search(r"[.,](\d{1,2})$", text)
    whole, cents = (text[: m.start()], m.group(1)) if m else (text, "0")
    return round(float(re.sub(r"[.,]", "", whole) + "." + cents), 2)


def _valid(month: int, day: int, year: int | None) -> bool:
    try:
        dt.date(year or 2000, month, day)  # 2000: a leap year, so 29 February stands without one
    except ValueError:
        return False
    return year is None or 1900 <= year <= 2200


class _Scan:
    """Matches pattern by pattern; each match blanks its span so a later, looser pattern
    (a bare amount, a digit run) does not read the same characters again."""

    def __init__(self, text: str):
        self.text = text
        self.lower = text.lower()
        self.has_digit = any(c.isdigit() for c in text)
        self.facts: list[tuple[str, str, tuple]] = []  # kind, as written, normalised value(s)

    def each(self, pattern: re.Pattern[str], *needles: str, digit: bool = True):
        # A pattern runs only on text holding what it cannot match without (a digit, a
        # currency sign, a unit): most replies skip most patterns, which keeps the guard fast.
        if (digit and not self.has_digit) or (needles and not any(n in self.lower for n in needles)):
            return
        for m in list(pattern.finditer(self.text)):
            yield m
            self.text = self.text[: m.start()] + " " * (m.end() - m.start()) + self.text[m.end():]

    def add(self, kind: str, m: re.Match[str], *values) -> None:
        written = m.group(0).strip()
        self.facts.append((kind, written.rstrip(".") if kind == "date" else written, values))


def _scan(text: str) -> list[tuple[str, str, tuple]]:
    s = _Scan(text)
    for m in s.each(_UPS, "1z"):
        s.add("id", m, m.group(0))
    for m in s.each(_ISO_DATE, "-", "/"):
        s.add("date", m, (int(m["month"]), int(m["day"]), int(m["year"])))
    for m in s.each(_SLASH_DATE, "/"):
        a, b, year = int(m["a"]), int(m["b"]), int(m["year"])
        s.add("date", m, (a, b, year), (b, a, year))  # 01/02/2026: January 2 (US) or 1 February
    for m in s.each(_DOT_DATE, "."):
        s.add("date", m, (int(m["month"]), int(m["day"]), int(m["year"])))
    for pattern in (_MONTH_FIRST, _DAY_FIRST):
        for m in s.each(pattern, *_MONTHS):
            written_year = m["year"] or m.groupdict().get("dyear")
            year = int(written_year) if written_year else None
            s.add("date", m, (_MONTHS[m["mon"][:3].lower()], int(m["day"]), year))
    for pattern, needles in ((_PREFIXED_ID, ("-",)), (_ORDER_ID, ("-",)), (_CODE_ID, ())):
        for m in s.each(pattern, *needles):
            s.add("id", m, m.group(0))
    for pattern in (_MONEY_BEFORE, _MONEY_AFTER):
        for m in s.each(pattern, "$", "€", "£", "usd", "eur", "gbp", "dollar"):
            s.add("money", m, _amount(m["n"]), _CODES[m["cur"].lower()])
    for m in s.each(_MONEY_BARE, "."):
        s.add("money", m, _amount(m.group(0)), None)
    for m in s.each(_PERCENT, "%", "cent", digit=False):
        s.add("percent", m, _number(m["n"]))
    for m in s.each(_DURATION, "hour", "day", "week", "month", "year", digit=False):
        unit = m["unit"].lower().rstrip("s")
        low = _number(m["a"])
        high = _number(m["b"]) if m["b"] else low
        if m["biz"]:
            scale, unit = 1.0, "business_day"
        elif unit in _MINUTES:
            scale, unit = float(_MINUTES[unit]), "minute"
        else:
            scale = 1.0
        s.add("duration", m, low * scale, high * scale, unit)
    for m in s.each(_DIGIT_ID):
        s.add("id", m, m.group(0))
    return [f for f in s.facts if f[0] != "date" or any(_valid(*v) for v in f[2])]


def _id_key(raw: str) -> str:
    return re.sub(r"[\s#]", "", raw).upper()


def extract_facts(text: str) -> list[Fact]:
    """Every fact in `text`, each with the source keys that would ground it."""
    facts = []
    for kind, written, values in _scan(text):
        if kind == "id":
            accepts = {("id", _id_key(values[0]))}
        elif kind == "date":  # with a year: that year, or a source without one; without: any year
            accepts = {("date", m, d, y if y else "*") for m, d, y in values if _valid(m, d, y)}
            accepts |= {("date", m, d, None) for m, d, y in values if y and _valid(m, d, y)}
        elif kind == "money":
            value, currency = values
            accepts = {("money", value, currency), ("money", value, None)} if currency else {("money", value, "*")}
        elif kind == "percent":
            accepts = {("percent", values[0])}
        else:
            accepts = {("duration", *values)}
        facts.append(Fact(kind, written, frozenset(accepts)))
    return facts


@lru_cache(maxsize=4096)  # KB chunks and tool values recur from turn to turn
def _source_keys_of_text(text: str) -> frozenset[Key]:
    keys: set[Key] = set()
    for kind, _, values in _scan(text):
        if kind == "id":
            keys.add(("id", _id_key(values[0])))
        elif kind == "date":
            for m, d, y in values:
                keys |= {("date", m, d, y), ("date", m, d, "*")}
        elif kind == "money":
            keys |= {("money", values[0], values[1]), ("money", values[0], "*")}
        elif kind == "percent":
            keys.add(("percent", values[0]))
        else:
            low, high, unit = values
            keys |= {("duration", low, high, unit), ("duration", high, high, unit)}
    return frozenset(keys)


@dataclass
class Sources:
    """What a reply may state: the keys of every fact in the sources, and their text (for
    IDs written inside longer strings)."""

    keys: set[Key]
    text: str  # upper case

    def grounds(self, fact: Fact) -> bool:
        if fact.accepts & self.keys:
            return True
        # An ID inside a longer token of a source ("ORDER:A-1042/2"), but not a prefix of
        # another ID: "A-104" is not grounded by "A-1042".
        key = re.escape(_id_key(fact.text))
        return fact.kind == "id" and re.search(rf"(?<![A-Z0-9]){key}(?![A-Z0-9])", self.text) is not None


def _walk(value: Any, currency: str | None, texts: list[str], keys: set[Key], numbers: list[str]) -> None:
    if isinstance(value, dict):
        code = value.get("currency")
        currency = code.upper() if isinstance(code, str) else currency
        for item in value.values():
            _walk(item, currency, texts, keys, numbers)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _walk(item, currency, texts, keys, numbers)
    elif isinstance(value, str):
        texts.append(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        # A number, not text: its currency is the field beside it, not "any".
        amount = round(float(value), 2)
        keys |= {("money", amount, currency), ("money", amount, "*")}
        numbers.append(str(value))
    elif value is not None:
        texts.append(json.dumps(value, default=str))


def _cited(hit: dict, citations: list[Citation] | None) -> bool:
    if citations is None:
        return True
    c = hit.get("citation") or {}
    return any(c.get("doc_id") == x.doc_id and c.get("section", "") == x.section for x in citations)


def sources_of(results: list[ToolResult], citations: list[Citation] | None = None) -> Sources:
    """The facts a reply may state: every tool result, and of search_kb only the hits the
    reply cites (`citations`; None counts every hit)."""
    texts: list[str] = []
    numbers: list[str] = []
    keys: set[Key] = set()
    for r in results:
        if not r.data:
            continue
        if r.tool == "search_kb":
            for hit in r.data.get("hits", []):
                if _cited(hit, citations):
                    snippet = (hit.get("citation") or {}).get("snippet", "")
                    texts += [hit.get("text", ""), hit.get("passage", ""), snippet]
        else:
            _walk(r.data, None, texts, keys, numbers)
    for text in texts:
        if text:
            keys |= _source_keys_of_text(text)
    return Sources(keys=keys, text="\n".join(texts + numbers).upper())


def ungrounded(reply: str, sources: Sources) -> list[Fact]:
    return [f for f in extract_facts(reply) if not sources.grounds(f)]
