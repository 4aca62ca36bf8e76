"""Drafting: the reply, composed only from tool results and citations.

Every fact in a draft (an order ID, a date, an amount) is copied from a `ToolResult`; the
output guard (bot/guards.py) checks that this stays true for any planner's wording. A failed
tool is worded by its error's type (bot/error_replies.py), naming the system that failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.brain import policy
from bot.brain.passages import best_passage
from bot.contracts import BrainPlan, Citation, ToolResult
from bot.error_replies import customer_reply
from bot.hands.errors import KBIndexing, NotFound, error_from_result

OFFER_HUMAN = "Would you like me to bring in a teammate? Just say yes."
NOT_CERTAIN = "I'm not certain about that, so I'd rather not guess. " + OFFER_HUMAN
SORRY = "Sorry, something went wrong on our side while I was looking into this."
SAFE_FAILURE = f"{SORRY} I've opened a ticket so a teammate will follow up with you."
GREETING = ("Hi! I'm Deskhand. I can check on an order, explain our shipping, returns and payment "
            "policies, start a refund, or get you a human. What can I do for you?")
THANKS = "You're welcome! Is there anything else I can help with?"
HANDED_OFF = "I've passed this conversation to a teammate, who will reply here shortly."

STATUS_PHRASES = {
    "pending": "has been received and is waiting for payment confirmation",
    "processing": "is being packed",
    "shipped": "has shipped",
    "out_for_delivery": "is out for delivery",
    "delivered": "was delivered",
    "delayed": "is delayed in transit",
    "cancelled": "was cancelled",
    "returned": "was returned to us",
    "refunded": "was refunded",
}


@dataclass
class Draft:
    text: str
    citations: list[Citation] = field(default_factory=list)
    offer_human: bool = False
    pending_action_id: str | None = None
    handed_off: bool = False


def describe_order(o: dict) -> str:
    parts = [f"Order {o['order_id']} {STATUS_PHRASES.get(o['status'], 'is ' + o['status'])}"]
    if o.get("delivered_at"):
        parts[0] += f" on {o['delivered_at']}"
    sentence = parts[0] + "."
    if o.get("carrier") and o.get("shipped_at") and not o.get("delivered_at"):
        sentence += f" It left us with {o['carrier']} on {o['shipped_at']} (tracking {o['tracking_number']})"
        sentence += f" and should arrive by {o['eta']}." if o.get("eta") else "."
    for r in o.get("refunds", []):
        sentence += f" Refund {r['refund_id']} of {r['amount']:.2f} {o.get('currency', 'USD')} is {r['status']}."
    return sentence


def _kb_answer(result: ToolResult, floor: float, question: str, encoder=None,
               require_confident: bool = False, inside_request: bool = False) -> Draft | None:
    """The passage of the hits that best answers the question, citing the article it is from;
    None when no hit clears the floor (or, when asked, the passage is not a confident answer)."""
    hits = [h for h in (result.data or {}).get("hits", []) if h["relevance"] >= floor]
    if not hits:
        return None
    pick = best_passage(question, hits, encoder) if question else None
    if pick is None:
        if require_confident:
            return None
        return Draft(text=_section_start(hits[0]), citations=[Citation(**hits[0]["citation"])])
    if require_confident and not (pick.answers_request if inside_request else pick.confident):
        return None
    return Draft(text=pick.text, citations=[Citation(**hits[pick.hit]["citation"])])


def _section_start(hit: dict) -> str:
    """The matched section without its heading lines, cut to 700 characters."""
    lines = (hit.get("passage") or hit["text"]).strip().splitlines()
    while lines and (lines[0].lstrip().startswith("#") or not lines[0].strip()):
        lines.pop(0)
    passage = "\n".join(lines).strip() or hit["text"].strip()
    if len(passage) > 700:
        cut = passage[:700]
        passage = cut[: cut.rfind(". ") + 1] if ". " in cut else cut + "…"
    return passage


def _kb_query(plan: BrainPlan) -> str:
    return next((str(s.args.get("query", "")) for s in plan.steps if s.tool == "search_kb"), "")


def compose(plan: BrainPlan, results: list[ToolResult], *, kb_floor: float, encoder=None) -> Draft:
    """The reply. `encoder` (the KB's sentence encoder) scores passages against the question;
    without it the lexical score alone picks them."""
    if plan.kb_answer_if_confident:
        r = next((r for r in results if r.tool == "search_kb" and r.ok), None)
        answer = _kb_answer(r, kb_floor, _kb_query(plan), encoder, require_confident=True,
                            inside_request=bool(plan.awaiting)) if r else None
        if answer and plan.awaiting:  # the answer, and still the question that fills the request
            answer.text = f"{answer.text}\n\n{plan.clarification_question}"
        if answer:
            return answer
    if plan.needs_clarification:
        return Draft(text=plan.clarification_question or "Could you tell me a bit more?")
    if plan.offer_human:
        return Draft(text="I'm not sure I can help with that one. " + OFFER_HUMAN, offer_human=True)
    if plan.intent == "greeting" and not results:
        return Draft(text=GREETING)
    if plan.intent == "thanks" and not results:
        return Draft(text=THANKS)
    if plan.final_answer and not results:
        return Draft(text=plan.final_answer, citations=plan.citations)

    by_tool = {r.tool: r for r in results}
    lines: list[str] = []
    draft = Draft(text="")

    if (r := by_tool.get("escalate_to_human")) and r.ok:
        # Handed off because a system failed: say which one (a help-centre miss is no reason).
        failed = [customer_reply(f) for f in results
                  if not f.ok and f.tool not in ("escalate_to_human", "search_kb")]
        return Draft(text=" ".join([*failed, HANDED_OFF]), handed_off=True)

    if r := by_tool.get("get_order_status"):
        if not r.ok:
            lines.append(customer_reply(r))
            draft.offer_human = True
        elif not r.data["found"]:
            ref = r.data.get("order_id")
            lines.append(f"I couldn't find an order {ref}. Could you double-check the number?" if ref
                         else "I couldn't find any orders for your address.")
        else:
            lines.extend(describe_order(o) for o in r.data["orders"][:3])

    if r := by_tool.get("process_refund"):
        if r.ok and (r.pending_action_id or r.data.get("shadow")):  # a shadow proposal reads the same
            d = r.data
            lines.append(f"I've asked a teammate to approve a refund of {d['amount']:.2f} for order "
                         f"{d['order_id']}. You'll hear back here as soon as it's reviewed.")
            draft.pending_action_id = r.pending_action_id
        elif r.ok:
            lines.append(f"Refund {r.data['refund_id']} of {r.data['amount']:.2f} is {r.data['status']}.")
        else:
            lines.append(customer_reply(r))
            draft.offer_human = not isinstance(error_from_result(r), NotFound)  # a typo needs no teammate

    if r := by_tool.get("create_ticket"):
        if r.ok:
            lines.append(f"I've opened ticket {r.data['ticket_id']} ({r.data['subject']}). "
                         "A teammate will follow up with you.")
        else:
            lines.append(customer_reply(r))
            draft.offer_human = True

    if r := by_tool.get("search_kb"):
        # Beside a ticket the message was a request ("I want to make a complaint"), not a
        # question a sentence answers: the section that matched explains what happens next.
        question = "" if lines else _kb_query(plan)
        answer = _kb_answer(r, kb_floor, question, encoder) if r.ok else None
        if answer:
            prefix = "Meanwhile, from our help centre: " if lines else ""
            lines.append(prefix + answer.text)
            draft.citations = answer.citations
        elif not lines:
            if r.ok:
                lines.append(NOT_CERTAIN)
            elif isinstance(error_from_result(r), KBIndexing):  # a question, not a failure: a human can answer
                lines.append(customer_reply(r) + " " + OFFER_HUMAN)
            else:
                lines.append(customer_reply(r) + " " + NOT_CERTAIN)
            draft.offer_human = True

    if not lines:
        lines.append(NOT_CERTAIN)
        draft.offer_human = True
    elif draft.offer_human and OFFER_HUMAN not in " ".join(lines):
        lines.append(OFFER_HUMAN)
    draft.text = " ".join(lines)
    return draft


def failure_reply(ticket: ToolResult | None) -> str:
    """The reply of a turn that failed. It says a ticket was opened only when one was; when
    opening it failed too, it says which system failed and offers a teammate instead."""
    if ticket is not None and ticket.ok:
        return SAFE_FAILURE
    why = f" {customer_reply(ticket)}" if ticket is not None else ""
    return f"{SORRY}{why} {OFFER_HUMAN}"


__all__ = ["Draft", "compose", "failure_reply", "policy"]
