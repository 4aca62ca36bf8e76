"""Grounding by meaning: every form of a fact in a reply must come from a tool result or a
cited passage (bot/facts.py, bot/guards.py). Sources are real: the demo shop's SQLite
backend and the demo KB's own Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.brain.drafting import GREETING, HANDED_OFF, NOT_CERTAIN, OFFER_HUMAN, SAFE_FAILURE, THANKS, Draft
from bot.brain.rules import ASK_ORDER_ID, CLARIFY
from bot.contracts import Channel, Citation, MessageEnvelope, ToolResult
from bot.error_replies import reply_for
from bot.hands.errors import SYSTEM_NAMES, HandError, error_class, kinds_under
from bot.facts import extract_facts
from bot.guards import facts_in, guard_reply, ungrounded_facts

ROOT = Path(__file__).resolve().parent.parent
REFUNDS_MD = (ROOT / "fixtures/kb/returns/refunds.md").read_text()
REFUNDS = Citation(doc_id="returns/refunds", title="Refunds", section="Shipping costs")
SHIPPING = Citation(doc_id="shipping/delivery-options", title="Delivery options", section="Pickup")

ORDER = {"found": True, "order_id": "A-1042", "orders": [{
    "order_id": "A-1042", "status": "shipped", "total": 129.99, "currency": "USD", "placed_at": "2026-11-14",
    "carrier": "UPS", "tracking_number": "1Z999AA10123456784", "shipped_at": "2026-11-16",
    "eta": "2026-12-25", "delivered_at": None,
    "refunds": [{"refund_id": "RF-4001", "amount": 50.0, "status": "issued", "created_at": "2026-11-20"}]}]}
TICKET = {"ticket_id": "TCK-1001", "status": "open", "subject": "Damaged lamp"}


def order_result(data=None) -> ToolResult:
    return ToolResult(tool="get_order_status", ok=True, data=data or ORDER)


def kb_result(*hits: tuple[Citation, str]) -> ToolResult:
    return ToolResult(tool="search_kb", ok=True, data={"hits": [
        {"citation": c.model_dump(), "text": text, "passage": text, "score": 1.0, "relevance": 0.9}
        for c, text in hits]})


# -- every form, grounded by the same fact in another form ---------------------------------
GROUNDED_BY_THE_ORDER = [
    "It should arrive on December 25.", "It should arrive by 25 Dec 2026.", "ETA: 12/25/2026.",
    "It should arrive by 2026-12-25.", "Expect it Dec 25th.", "It arrives on the 25th of December, 2026.",
    "We refunded $50.", "We refunded 50 USD.", "We refunded 50.00.", "We refunded USD 50.00.",
    "The total was $129.99.", "Refund RF-4001 is issued.", "Tracking: 1Z999AA10123456784.",
    "Tracking: 1Z 999 AA1 0123456784.", "Order #a-1042 has shipped.", "It shipped on November 16th.",
    "It arrives Dec. 25, 2026.", "ETA 25-Dec-2026.", "We refunded US$50.",
]


@pytest.mark.parametrize("reply", GROUNDED_BY_THE_ORDER)
def test_a_fact_in_any_form_is_grounded_by_the_tool_result(reply):
    assert facts_in(reply), f"no fact read in {reply!r}"
    assert ungrounded_facts(reply, [order_result()]) == set()


INVENTED = [
    ("It should arrive on December 26.", "December 26"), ("It should arrive by 24 Dec 2026.", "24 Dec 2026"),
    ("ETA: 12/25/2027.", "12/25/2027"), ("We refunded $60.", "$60"), ("We refunded €50.", "€50"),
    ("We refunded 50,00 €.", "50,00 €"), ("We refunded 49.99.", "49.99"), ("Refund RF-4002 is issued.", "RF-4002"),
    ("Tracking: 1Z999AA10123456799.", "1Z999AA10123456799"), ("Order A-104 has shipped.", "A-104"),
    ("You get 15% off.", "15%"), ("You get 15 percent off.", "15 percent"),
    ("Returns are accepted within 14 days.", "14 days"), ("Refunds take 3-5 business days.", "3-5 business days"),
    ("We answer within 48 hours.", "48 hours"), ("It takes two weeks.", "two weeks"),
    ("Your ticket is TCK-1002.", "TCK-1002"),
]


@pytest.mark.parametrize(("reply", "fact"), INVENTED)
def test_an_invented_fact_in_any_form_is_caught(reply, fact):
    assert ungrounded_facts(reply, [order_result(), ToolResult(tool="create_ticket", ok=True, data=TICKET)]) == {fact}


def test_money_keeps_its_currency_but_a_bare_amount_matches_any():
    kb = [kb_result((REFUNDS, "The handling fee is 4.95 EUR, and free from 150 EUR."))]
    cited = [REFUNDS]
    assert ungrounded_facts("The fee is €4.95.", kb, cited) == set()
    assert ungrounded_facts("The fee is 4,95 €.", kb, cited) == set()
    assert ungrounded_facts("The fee is 4.95.", kb, cited) == set()
    assert ungrounded_facts("The fee is $4.95.", kb, cited) == {"$4.95"}
    assert ungrounded_facts("It is free from 1,500 EUR.", kb, cited) == {"1,500 EUR"}
    # A number in tool data carries the currency field beside it.
    assert ungrounded_facts("The total was €129.99.", [order_result()]) == {"€129.99"}


def test_durations_compare_by_length_and_kind_of_day():
    kb = [kb_result((REFUNDS, "Bank transfer: 3–5 business days. We keep it for 14 days, then two days more."))]
    for same in ("3 to 5 working days", "3-5 business days", "within 5 business days", "two weeks", "48 hours",
                 "a 14-day window"):
        assert ungrounded_facts(f"It is {same}.", kb, [REFUNDS]) == set(), same
    assert ungrounded_facts("It is 3-5 days.", kb, [REFUNDS]) == {"3-5 days"}  # calendar days, not business
    assert ungrounded_facts("It is 3 business days.", kb, [REFUNDS]) == {"3 business days"}  # the lower end
    assert ungrounded_facts("It is 14 business days.", kb, [REFUNDS]) == {"14 business days"}


def test_a_date_in_a_passage_without_a_year_grounds_any_year():
    kb = [kb_result((SHIPPING, "Orders placed by 20 December arrive before Christmas."))]
    assert ungrounded_facts("Order by December 20, 2026.", kb, [SHIPPING]) == set()
    assert ungrounded_facts("Order by 21 December.", kb, [SHIPPING]) == {"21 December"}


def test_ambiguous_slash_dates_are_read_both_ways():
    placed = order_result({"found": True, "order_id": "A-1",
                           "orders": [{"order_id": "A-1", "placed_at": "2026-02-01"}]})
    assert ungrounded_facts("Placed on 01/02/2026.", [placed]) == set()  # 1 February, European
    assert ungrounded_facts("Placed on 02/01/2026.", [placed]) == set()  # February 1, US
    assert ungrounded_facts("Placed on 01.02.2026.", [placed]) == set()  # dots: day first only
    assert ungrounded_facts("Placed on 02.01.2026.", [placed]) == {"02.01.2026"}


# -- cited passages -------------------------------------------------------------------------
def test_within_14_days_copied_from_the_refund_article_passes_only_when_cited():
    passage = REFUNDS_MD.split("## Shipping costs", 1)[1].split("##", 1)[0].strip()
    results = [kb_result((REFUNDS, passage), (SHIPPING, "Orders not collected within 30 days are cancelled."))]
    draft = Draft(text=passage, citations=[REFUNDS])
    assert "14 days" in facts_in(passage)
    assert guard_reply(draft, results) == (draft, set())
    # The same words, but the reply cites only the other article: nothing vouches for "14 days".
    uncited = Draft(text=passage, citations=[SHIPPING])
    guarded, missing = guard_reply(uncited, results)
    assert missing == {"14 days"} and guarded.text == NOT_CERTAIN and guarded.offer_human


def test_every_fact_in_the_demo_refund_article_is_read_and_grounded_by_its_own_text():
    facts = {f.text for f in extract_facts(REFUNDS_MD)}
    assert {"30-day", "three business days", "5–10 business days", "1–3 business days", "2 business days",
            "3–5 business days", "10 business days", "14 days"} <= facts
    assert ungrounded_facts(REFUNDS_MD, [kb_result((REFUNDS, REFUNDS_MD))], [REFUNDS]) == set()


# -- the guard keeps what is right today ------------------------------------------------------
def test_an_invented_date_or_amount_becomes_not_certain_with_a_human_offered():
    for reply in ("Your order arrives December 26.", "You'll get $60 back."):
        guarded, missing = guard_reply(Draft(text=reply, pending_action_id="pa-1"), [order_result()])
        assert missing and guarded.text == NOT_CERTAIN and guarded.offer_human and OFFER_HUMAN in guarded.text
        assert guarded.pending_action_id == "pa-1"


# Every customer reply an error can get, for each system it can name.
ERROR_REPLIES = sorted({reply_for(error_class(kind)("", system=system))
                        for kind in kinds_under(HandError) for system in [*SYSTEM_NAMES, None]})
CONVERSATIONAL = [GREETING, THANKS, HANDED_OFF, SAFE_FAILURE, NOT_CERTAIN, CLARIFY, ASK_ORDER_ID,
                  *ERROR_REPLIES, "I can help with that in 2 minutes.", "Give me a minute or two.",
                  "You have 3 items in 2 orders.", "We're open 24/7.", "Step 1: open the app.",
                  "You may want to check your spam folder.", "I'll get back to you in a day or two.",
                  "Option 2 is the quickest.", "Call us between 9:00 and 17:00.",
                  "I'm 100% sure we can sort this out.", "Have a great day!", "It only takes a few days."]


@pytest.mark.parametrize("reply", CONVERSATIONAL)
def test_conversational_wording_is_not_read_as_a_fact(reply):
    assert facts_in(reply) == set()


async def test_the_offline_drafter_stays_grounded_for_every_demo_order(runtime):
    """The template drafter against the real demo shop: no reply the guard has to replace."""
    shop = json.loads((ROOT / "fixtures/shop.json").read_text())
    for i, order in enumerate(shop["orders"]):
        user = next(c["slack_user"] for c in shop["customers"] if c["email"] == order["email"])
        outcome = await runtime.orchestrator.handle(MessageEnvelope(
            tenant_id="T_DEMO", channel=Channel.slack_dm, user_id=user, session_id=f"s-{i}",
            text=f"where is my order {order['order_id']}?"))
        assert order["order_id"] in outcome.reply and outcome.reply != NOT_CERTAIN, outcome.reply
        assert ungrounded_facts(outcome.reply, outcome.results, outcome.citations) == set()
