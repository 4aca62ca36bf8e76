"""Guards around a turn: the prompt firewall on the way in, grounding on the way out.

Masking of cards and secrets happens in the envelope type itself (bot/contracts.py); this
module scores prompt injection and checks that every fact in a reply (an ID, a date, an
amount, a percentage, a duration, in whatever form it is written: see bot/facts.py) came
from a tool result or a passage the reply cites.
"""

from __future__ import annotations

import re

from bot.brain.drafting import NOT_CERTAIN, Draft
from bot.contracts import Citation, ToolResult
from bot.facts import extract_facts, sources_of, ungrounded

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
    """The facts in `text`, as written."""
    return {f.text for f in extract_facts(text)}


def ungrounded_facts(reply: str, results: list[ToolResult],
                     citations: list[Citation] | None = None) -> set[str]:
    """Facts in `reply` that no tool result, and no cited KB passage, states in any form.
    `citations` None counts every KB hit; a list counts only the hits it names."""
    return {f.text for f in ungrounded(reply, sources_of(results, citations))}


def guard_reply(draft: Draft, results: list[ToolResult]) -> tuple[Draft, set[str]]:
    missing = ungrounded_facts(draft.text, results, draft.citations)
    if not missing:
        return draft, missing
    return Draft(text=NOT_CERTAIN, offer_human=True, pending_action_id=draft.pending_action_id), missing
