"""What a turn does with an abusive message, decided in ROUTE before any planner runs.

The classifier is bot/brain/abuse.py. Running it in the orchestrator's ROUTE state covers
both planners (rules and LLM) and keeps the message away from the model altogether.

- insult, harassment, hate: the neutral reply with a human offered ("Talk to a human" in
  Slack, "just say yes" everywhere), and a ticket so a teammate sees it;
- threat, self_harm: the conversation goes to a human at once, with an urgent ticket: a
  person has to judge a risk to someone's safety;
- every flagged turn carries `abuse:<category>` in its inbox row's flags and `abuse` in its
  ROUTE span, so `deskhand report` counts it and `deskhand trace` shows it;
- a frustrated customer who is not abusive gets their answer, opened with a short
  acknowledgement.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from bot.brain.abuse import HARASSMENT, HATE, INSULT, SELF_HARM, THREAT, AbuseVerdict
from bot.brain.drafting import OFFER_HUMAN, Draft
from bot.contracts import BrainPlan, MessageEnvelope, PlanStep, ToolResult

ABUSE_INTENT = "abuse"
FLAG_PREFIX = "abuse:"

NEUTRAL_REPLY = ("I'm here to help with orders, refunds and questions about our service, and I'd like to "
                 "keep this conversation respectful. Tell me what you need and I'll look into it. "
                 + OFFER_HUMAN)
THREAT_REPLY = ("I can't continue this conversation myself, so I've passed it to a teammate, who will "
                "reply here.")
SELF_HARM_REPLY = ("I'm really sorry you're feeling like this. I've asked a teammate to join this "
                   "conversation now. If you might act on these thoughts or are in danger, please call "
                   "your local emergency number or a crisis line straight away; you don't have to go "
                   "through this alone.")
ACKNOWLEDGEMENT = "Sorry about the trouble."
_ALREADY_SORRY = ("sorry", "i'm sorry", "i am sorry", "i apologi", "apologies")

_TICKET_PRIORITY = {INSULT: "normal", HARASSMENT: "high", HATE: "high", THREAT: "urgent", SELF_HARM: "urgent"}


def abuse_plan(verdict: AbuseVerdict, envelope: MessageEnvelope, allowed: set[str]) -> BrainPlan:
    """The plan for a flagged message: a ticket, and for a threat or self-harm the handoff."""
    category = verdict.category or INSULT
    excerpt = envelope.text[:4000]
    steps = []
    if verdict.hand_off and "escalate_to_human" in allowed:
        steps.append(PlanStep(tool="escalate_to_human", args={
            "reason": f"abuse filter: {category}", "transcript_excerpt": excerpt}))
    if "create_ticket" in allowed:
        # One ticket per conversation and category (create_ticket is idempotent per subject).
        steps.append(PlanStep(tool="create_ticket", args={
            "email": envelope.metadata.get("verified_email") or "",
            "subject": f"Message flagged by the abuse filter: {category}",
            "body": excerpt, "priority": _TICKET_PRIORITY[category]}))
    return BrainPlan(intent=ABUSE_INTENT, confidence=1.0, steps=steps, offer_human=True, planner="abuse_filter")


def abuse_draft(verdict: AbuseVerdict, results: list[ToolResult]) -> Draft:
    """The reply: never the planner's, never the model's."""
    handed_off = any(r.tool == "escalate_to_human" and r.ok for r in results)
    if handed_off:
        return Draft(text=SELF_HARM_REPLY if verdict.category == SELF_HARM else THREAT_REPLY, handed_off=True)
    if verdict.category == SELF_HARM:  # the handoff failed or is not allowed: still offer a person
        return Draft(text=SELF_HARM_REPLY.replace("I've asked a teammate to join this conversation now.",
                                                  OFFER_HUMAN), offer_human=True)
    return Draft(text=NEUTRAL_REPLY, offer_human=True)


def acknowledge(draft: Draft, verdict: AbuseVerdict | None) -> Draft:
    """A frustrated customer's answer, opened with one short acknowledgement."""
    if verdict is None or verdict.abusive or not verdict.frustrated or draft.handed_off:
        return draft
    if draft.text.strip().lower().startswith(_ALREADY_SORRY):
        return draft
    draft.text = f"{ACKNOWLEDGEMENT} {draft.text}"
    return draft


async def flag_inbox(store, inbox_id: str, category: str) -> None:
    """Add `abuse:<category>` to the inbox row's flags (kept with any the surface set)."""
    row = await store.inbox_get(inbox_id)
    if row is None:
        return
    flags = [f for f in json.loads(row.get("flags") or "[]") if not str(f).startswith(FLAG_PREFIX)]
    await store.inbox_update(inbox_id, flags=json.dumps([*flags, FLAG_PREFIX + category]))


def abuse_flag(flags_json: str | None) -> str | None:
    """The abuse category in an inbox row's flags, or None."""
    for flag in json.loads(flags_json or "[]"):
        if str(flag).startswith(FLAG_PREFIX):
            return str(flag)[len(FLAG_PREFIX):]
    return None


async def build_abuse_report(store, *, tenant: str | None = None, since: datetime | None = None, latest: int = 5) -> dict:
    """`deskhand report`'s abuse section: flagged turns by category and the latest few."""
    by_category: Counter[str] = Counter()
    flagged: list[dict] = []
    rows = await store.report_flagged_inbox_rows(tenant, since, FLAG_PREFIX)
    for inbox_id, session_id, received_at, flags, correlation_id in rows:
        category = abuse_flag(flags)
        if category:
            by_category[category] += 1
            flagged.append({"inbox_id": inbox_id, "session_id": session_id, "received_at": received_at,
                            "category": category, "correlation_id": correlation_id})
    return {"flagged": sum(by_category.values()), "by_category": dict(by_category.most_common()),
            "latest": flagged[:latest]}


def render_abuse_lines(section: dict, table) -> list[str]:
    lines = ["", f"Abuse filter: {section['flagged']} turns flagged"]
    lines += table(["category", "turns"], [[k, v] for k, v in section["by_category"].items()])
    if section["latest"]:
        lines += ["", "Latest flagged (see `deskhand trace <correlation id>`):"] + table(
            ["received", "category", "session", "correlation id"],
            [[r["received_at"][:19], r["category"], r["session_id"], r["correlation_id"] or "-"]
             for r in section["latest"]])
    return lines


__all__ = ["ABUSE_INTENT", "build_abuse_report", "render_abuse_lines", "NEUTRAL_REPLY", "THREAT_REPLY", "SELF_HARM_REPLY", "ACKNOWLEDGEMENT",
           "abuse_plan", "abuse_draft", "acknowledge", "flag_inbox", "abuse_flag"]
