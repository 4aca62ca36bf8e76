"""Guards around a turn: the prompt firewall on the way in, grounding on the way out.

Masking of cards and secrets happens in the envelope type itself (bot/contracts.py); this
module scores prompt injection and checks that every order ID, date and amount in a reply
came from a tool result.
"""

from __future__ import annotations

import json
import re

from bot.brain.drafting import NOT_CERTAIN, Draft
from bot.brain.extract import ORDER_ID
from bot.contracts import ToolResult

_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_AMOUNT = re.compile(r"(?<![\w.])\d{1,6}\.\d{2}(?!\d)")

INJECTION_PATTERNS = [
    (re.compile(r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|all|earlier)\b.{0,30}\b(instructions?|rules|prompts?|directions)", re.I), 0.6),
    (re.compile(r"\b(system prompt|developer mode|jailbreak|DAN\b|do anything now)", re.I), 0.5),
    (re.compile(r"\b(you are now|act as|pretend (to be|you are)|roleplay as)\b", re.I), 0.3),
    (re.compile(r"\b(reveal|print|show|repeat|leak)\b.{0,30}\b(prompt|instructions|system message|secret|api key)", re.I), 0.5),
    (re.compile(r"\b(approve|issue|process)\b.{0,30}\brefund\b.{0,40}\b(without|no)\b.{0,20}\b(approval|review|checks?)", re.I), 0.5),
    (re.compile(r"(^|\n)\s*(system|assistant)\s*:", re.I), 0.3),
    (re.compile(r"</?(system|instructions?|prompt)>", re.I), 0.4),
]


def injection_score(text: str) -> float:
    """0..1: how much a message looks like an attempt to steer the model. Recorded on the
    turn; it never grants anything, because policy and schemas decide what the Hands do."""
    return round(min(1.0, sum(w for p, w in INJECTION_PATTERNS if p.search(text))), 2)


def facts_in(text: str) -> set[str]:
    found = {m.group(0).lstrip("#").upper() for m in ORDER_ID.finditer(text)}
    found |= set(_DATE.findall(text))
    found |= set(_AMOUNT.findall(text))
    return found


def ungrounded_facts(reply: str, results: list[ToolResult]) -> set[str]:
    """Order IDs, dates and amounts in `reply` that no tool result contains."""
    corpus = " ".join(json.dumps(r.data, default=str) for r in results if r.data).upper()
    numbers = {f"{float(n):.2f}" for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", corpus)}
    missing = set()
    for fact in facts_in(reply):
        if fact.upper() in corpus or fact in numbers:
            continue
        missing.add(fact)
    return missing


def guard_reply(draft: Draft, results: list[ToolResult]) -> tuple[Draft, set[str]]:
    missing = ungrounded_facts(draft.text, results)
    if not missing:
        return draft, missing
    return Draft(text=NOT_CERTAIN, offer_human=True, pending_action_id=draft.pending_action_id), missing
