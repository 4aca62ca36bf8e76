"""Regex extraction of the entities a support turn needs: order IDs, emails, amounts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Demo-shop style IDs (A-1042, ORD-77812) and long numeric order numbers (6+ digits).
ORDER_ID = re.compile(r"(?<![\w-])(?:[A-Z]{1,4}-\d{3,10}|#?\d{6,16})(?![\w-])", re.I)
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
AMOUNT = re.compile(
    r"(?:(?P<cur1>[$€£])\s?(?P<num1>\d{1,6}(?:[.,]\d{1,2})?)"
    r"|(?P<num2>\d{1,6}(?:[.,]\d{1,2})?)\s?(?P<cur2>usd|eur|gbp|dollars?|euros?|bucks))",
    re.I,
)
# Things that look like order numbers but are not: phone numbers, dates, masked values.
_NOT_ORDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Entities:
    order_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)

    @property
    def order_id(self) -> str | None:
        return self.order_ids[0] if self.order_ids else None


def extract(text: str) -> Entities:
    emails = [m.group(0) for m in EMAIL.finditer(text)]
    scrubbed = EMAIL.sub(" ", text)
    order_ids = []
    for m in ORDER_ID.finditer(scrubbed):
        value = m.group(0).lstrip("#").upper()
        if _NOT_ORDER.match(value) or value in order_ids:
            continue
        order_ids.append(value)
    amounts = []
    for m in AMOUNT.finditer(scrubbed):
        num = m.group("num1") or m.group("num2")
        amounts.append(float(num.replace(",", ".")))
    return Entities(order_ids=order_ids, emails=emails, amounts=amounts)


def is_bare_reference(text: str, entities: Entities) -> bool:
    """True when a message is essentially just an order ID or email ("A-1042", "it's A-1042")."""
    rest = ORDER_ID.sub(" ", EMAIL.sub(" ", text.lower()))
    words = re.findall(r"[a-z]+", rest)
    filler = {"it", "its", "s", "is", "the", "order", "number", "id", "my", "sure", "yes", "ok",
              "okay", "here", "you", "go", "thanks", "thank", "purchase", "email", "it's", "that", "was"}
    return bool(entities.order_ids or entities.emails) and all(w in filler for w in words)
