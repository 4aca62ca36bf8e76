"""Extractive answers that answer the question: routing of unsure questions to the KB, the
passage that answers, and the citation. Real runtime (SQLite, the demo KB, the MiniLM encoder),
and once the real `deskhand run` process against the Slack emulator."""

from __future__ import annotations

import asyncio
import pytest

from bot.answer_scoring import answer_correct
from bot.brain import passages
from bot.brain.rules import ASK_ORDER_ID, CLARIFY
from bot.config import FIXTURES, load_settings
from bot.contracts import Channel, MessageEnvelope
from bot.runtime import open_runtime
from deskhand_process import deskhand_run, run_env
from kb_loader.freshness import read_record
from test_slack_app import ACME, ALICE, answered, emu  # noqa: F401 - the emulator fixture

ISSUE_EXAMPLES = [  # (question, what the reply must state, the article it must cite)
    ("Do you take American Express?", "Visa, Mastercard and American Express", "payments/payment-methods"),
    ("how long do I have to pay a Klarna invoice?", "within 30 days of dispatch", "payments/payment-methods"),
    ("what payment methods do you accept?", "Visa, Mastercard and American Express", "payments/payment-methods"),
    ("how long does delivery take?", "Germany: 1–3 business days", "shipping/delivery-times"),
    ("how long do refunds take?", "5–10 business days", "returns/refunds"),
]


async def ask(rt, text: str, session: str):
    return await rt.orchestrator.handle(MessageEnvelope(
        tenant_id=rt.settings.default_tenant, channel=Channel.cli, user_id="U_TEST", session_id=session, text=text))


@pytest.fixture
async def rt(tmp_path):
    async with open_runtime(load_settings(home=tmp_path / "home", planner="rules")) as rt:
        await rt.ensure_kb(rt.settings.default_tenant)
        yield rt


async def test_the_issues_examples_state_the_fact_and_cite_its_article(rt):
    for i, (question, fact, doc_id) in enumerate(ISSUE_EXAMPLES):
        outcome = await ask(rt, question, f"s-{i}")
        assert answer_correct(outcome.reply, fact), (question, outcome.reply)
        assert [c.doc_id for c in outcome.citations] == [doc_id], (question, outcome.citations)


async def test_an_unsure_question_the_kb_answers_is_not_counted_as_a_clarification(rt):
    first = await ask(rt, "Do you take American Express?", "s-amex")
    assert first.plan.kb_answer_if_confident and first.citations
    # Had it counted, this second unsure question would get "want a human?" instead of its answer.
    second = await ask(rt, "can I pay cash on delivery?", "s-amex")
    assert answer_correct(second.reply, "We do not accept cash on delivery"), second.reply
    assert not second.offer_human


async def test_out_of_scope_is_searched_but_still_gets_the_clarifying_question(rt):
    for i, text in enumerate(["play some jazz music", "how long do wire transfers take"]):
        outcome = await ask(rt, text, f"s-oos-{i}")
        assert [r.tool for r in outcome.results] == ["search_kb"]
        assert outcome.reply == CLARIFY and outcome.citations == []
        assert outcome.plan.needs_clarification


async def test_a_request_question_gets_the_policy_and_still_the_order_number_question(rt):
    outcome = await ask(rt, "can i cancel my order for free?", "s-cancel")
    assert answer_correct(outcome.reply, "free of charge while its status is Received or Processing"), outcome.reply
    assert "Which order number" in outcome.reply
    assert [c.doc_id for c in outcome.citations] == ["orders/cancellation-fees"]
    follow = await ask(rt, "A-1017", "s-cancel")
    assert "create_ticket" in [r.tool for r in follow.results]


async def test_a_how_to_question_inside_an_order_request_gets_the_passage_and_the_order_question(rt):
    outcome = await ask(rt, "where is my order? how do i track it", "s-track-how")
    assert outcome.plan.intent == "track_order" and outcome.plan.awaiting == "order_id"
    assert [r.tool for r in outcome.results] == ["search_kb"]
    assert answer_correct(outcome.reply, "shipping confirmation email with a tracking link"), outcome.reply
    assert outcome.reply.endswith(ASK_ORDER_ID)
    assert [c.doc_id for c in outcome.citations] == ["orders/order-tracking"]
    follow = await ask(rt, "A-1042", "s-track-how")
    assert [r.tool for r in follow.results] == ["get_order_status"]


async def test_a_bare_order_request_still_only_asks_for_the_order_number(rt):
    outcome = await ask(rt, "where is my order?", "s-track-bare")
    assert outcome.results == [] and outcome.reply == ASK_ORDER_ID and outcome.citations == []


async def test_a_question_inside_a_confident_request_needs_half_its_words_in_the_hit(rt):
    # "already" and "still" are not in the article: 2 of 4 content words, below the unsure
    # questions' mark but enough inside a request the classifier is sure of.
    outcome = await ask(rt, "my order already shipped, can I still cancel it?", "s-cancel-shipped")
    assert outcome.plan.intent == "cancel_order" and outcome.plan.awaiting == "order_id"
    assert answer_correct(outcome.reply, "A shipped order can no longer be cancelled"), outcome.reply
    assert outcome.reply.endswith(ASK_ORDER_ID)


# ------------------------------------------------------------------ the passage picker


PAYMENT_METHODS = (FIXTURES / "kb" / "payments" / "payment-methods.md").read_text().split("---\n", 2)[2]


def test_a_signpost_stands_for_the_sections_it_announces():
    digests = [c for c in passages.candidates(PAYMENT_METHODS) if c.anchor]
    assert digests, "the 'following payment methods' sentence has no digest"
    text = digests[0].text
    assert "- Cards: Visa, Mastercard and American Express" in text
    assert "- Klarna: pay in 30 days: Pay by invoice within 30 days of dispatch" in text


def test_lists_are_candidates_whole_with_the_sentence_that_introduces_them():
    text = "## How long\n\nIt takes a while, depending on the bank:\n\n- PayPal: 1 day\n- cards: 5 days\n"
    lists = [c.text for c in passages.candidates(text) if c.sentences == 0]
    assert lists == ["It takes a while, depending on the bank:\n- PayPal: 1 day\n- cards: 5 days"]


def test_a_signpost_lower_in_its_section_does_not_stand_for_the_sections_below():
    text = ("## Items we keep\n\n- gift cards;\n- engraved items.\n\nThe law still applies to these, as "
            "explained below.\n\n## Damaged items\n\nSend us a photo.\n")
    assert not [c for c in passages.candidates(text) if c.anchor]
    opening = "## Items\n\nWe keep the items below.\n\n## Damaged items\n\nSend us a photo.\n"
    assert [c for c in passages.candidates(opening) if c.anchor]


def test_a_sentence_leaning_on_the_one_before_does_not_open_the_answer():
    hit = {"text": "## Tracking\n\nParcels leave daily.\n\nWe email you a tracking link when it leaves. "
                   "Customers also find the link in their account.\n", "citation": {"section": "Tracking"}}
    pick = passages.best_passage("how do i get the link", [hit])
    assert pick is not None and pick.text.startswith("We email you a tracking link"), pick


def test_a_third_of_the_words_suffice_only_for_a_score_far_above_out_of_scope():
    def pick(score, coverage, cosine=0.6):
        return passages.Pick(text="x", score=score, cosine=cosine, hit=0, coverage=coverage)
    assert pick(passages.HIGH_SCORE + 0.01, 1 / 3).confident
    assert not pick(passages.HIGH_SCORE - 0.01, 1 / 3).confident
    assert not pick(0.9, 0.25).confident
    assert not pick(1.0, 1 / 3, cosine=0.0).confident  # lexical alone: the best scores ~1 anyway


async def test_a_question_answered_in_other_words_gets_the_fact(rt):
    outcome = await ask(rt, "Is Klarna available for orders to Switzerland?", "s-klarna-ch")
    assert outcome.plan.kb_answer_if_confident
    assert answer_correct(outcome.reply, "only offered for deliveries to Germany, Austria"), outcome.reply
    assert [c.doc_id for c in outcome.citations] == ["payments/payment-methods"]


def test_without_the_question_words_in_the_article_a_pick_is_not_confident():
    hit = {"text": PAYMENT_METHODS, "citation": {"section": "Payment methods"}}
    pick = passages.best_passage("how long do wire transfers take", [hit])
    assert pick is not None and pick.coverage <= passages.CONFIDENT_COVERAGE and not pick.confident
    pick = passages.best_passage("do you take american express", [hit])
    assert pick is not None and pick.confident and "American Express" in pick.text


def test_a_table_row_is_read_as_a_sentence_and_the_table_quoted_whole():
    text = ("## Shipping costs\n\n| Service | Cost | Free from |\n|---|---|---|\n"
            "| Standard delivery | 4.95 EUR | orders of 50 EUR or more |\n| Express delivery | 9.95 EUR | never free |\n")
    tables = [c for c in passages.candidates(text) if c.sentences == 0]
    assert [c.anchor for c in tables] == ["Standard delivery: Cost 4.95 EUR, Free from orders of 50 EUR or more.",
                                          "Express delivery: Cost 9.95 EUR, Free from never free."]
    assert all(c.text.startswith("| Service | Cost | Free from |") and "9.95 EUR" in c.text for c in tables)


async def test_a_price_in_a_table_beats_the_sentence_about_the_exception(rt):
    # The shipping-costs table states the price; the sentence after it is about outside the EU.
    outcome = await ask(rt, "how much is shipping?", "s-shipping-cost")
    assert answer_correct(outcome.reply, "4.95 EUR"), outcome.reply
    assert [c.doc_id for c in outcome.citations] == ["shipping/shipping-policy"]


async def test_a_question_for_a_contact_detail_is_answered_and_a_request_for_a_person_handed_off(rt):
    outcome = await ask(rt, "what's your phone number", "s-phone")
    assert outcome.plan.intent == "contact_customer_service"
    assert answer_correct(outcome.reply, "+49 30 1234 5678"), outcome.reply
    assert [c.doc_id for c in outcome.citations] == ["support/contact-us"]
    assert outcome.state != "HANDED_OFF"
    person = await ask(rt, "how do I contact customer service", "s-contact")
    assert [r.tool for r in person.results] == ["escalate_to_human"]


# ------------------------------------------------------------------ deskhand run


async def test_deskhand_run_answers_an_unsure_kb_question_with_the_cited_fact(emu, tmp_path):  # noqa: F811
    home = tmp_path / "run-home"
    env = run_env(emu, home, DESKHAND_KB_DIR=str(FIXTURES / "kb"))
    async with deskhand_run(env, tmp_path / "run.err"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        while not ((r := read_record(home, ACME)) and r.chunks > 0):
            assert loop.time() < deadline, "the KB's first build"
            await asyncio.sleep(0.05)
        dm = emu.dm(ACME, ALICE, "Do you take American Express?")
        await emu.push_event(ACME, dm)
        call = await emu.wait_for_call("chat.update", answered(dm["channel"]), timeout=90)
    shown = call.params["text"] + str(call.params.get("blocks", ""))
    assert "American Express" in call.params["text"] and "Could you tell me a bit more" not in shown
    assert "Payment methods" in shown  # the citation: the article's title


async def test_a_message_is_encoded_once_for_the_classifier_the_search_and_the_drafter(rt):
    encoder = rt.orchestrator.planner.classifier.encoder
    await ask(rt, "Do you take American Express?", "s-once-warm")  # the passages' vectors, once
    before = encoder.queries.computed
    outcome = await ask(rt, "do you take american express", "s-once")
    assert [r.tool for r in outcome.results] == ["search_kb"] and outcome.citations
    assert encoder.queries.computed - before == 1


async def test_the_help_centre_search_is_not_rate_limited_like_a_remote_backend(rt):
    # The KB is local: a busy tenant's questions (or the nightly eval, run back to back) must
    # not hit the 20/s limit that protects a shop's API.
    from bot.contracts import PlanStep

    ctx = rt.hand_context(tenant_id=rt.settings.default_tenant, session_id="s-rate", user_id="U_TEST",
                          channel="cli", correlation_id="rate")
    results = [await rt.executor.run(PlanStep(tool="search_kb", args={"query": f"refund question {i}"}), ctx)
               for i in range(60)]
    assert [r.error_kind for r in results if not r.ok] == []
