"""Abuse: insults, threats, harassment and hate get the neutral reply and a human, flagged on
the turn; frustrated customers still get their answer. Turns run through the real runtime
(real SQLite, the demo shop), once with the LLM planner against a scripted model server, and
once on the real `deskhand run` process against the Slack emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.abuse import load, measure
from bot.abuse_turn import ACKNOWLEDGEMENT, NEUTRAL_REPLY, SELF_HARM_REPLY, THREAT_REPLY
from bot.brain.abuse import classify
from bot.brain.llm import LLMPlanner
from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope
from bot.reporting import build_report, render_text
from bot.runtime import open_runtime
from bot.slack import blocks as bk
from bot.slack_ids import message_id
from bot.store import Store
from deskhand_process import deskhand_run, run_env
from openai_server import OpenAIServer
from tests.test_slack_app import ACME, ALICE, answered, emu, settings  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT / "tests/data/abuse/labelled.jsonl"
BITEXT = ROOT / "bot/brain/data/bitext_intents.jsonl"
BITEXT_FALSE_POSITIVE_BOUND = 0.005  # at most 1 in 200 ordinary support messages flagged

NEUTRAL = {"insult": "you useless idiot, where is my order?",
           "harassment": "send me nudes",
           "hate": "go back to your country"}
HANDED = {"threat": "I know where you live and I'll find you", "self_harm": "I want to kill myself"}


@pytest.fixture
async def rt(tmp_path):
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", intent_semantic=False)
    async with open_runtime(settings) as runtime:
        yield runtime


async def ask(rt, text: str, session: str = "s-1"):
    env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U_ADA", session_id=session, text=text)
    outcome = await rt.orchestrator.handle(env)
    row = await rt.store.inbox_get(env.id)
    route = next(s for s in await rt.store.traces_for(outcome.correlation_id) if s["span"] == "ROUTE")
    return outcome, json.loads(row["flags"]), route["data"]


@pytest.mark.parametrize("category", sorted(NEUTRAL))
async def test_abuse_gets_the_neutral_reply_a_human_offered_and_the_flag(rt, category):
    outcome, flags, route = await ask(rt, NEUTRAL[category])
    assert outcome.reply == NEUTRAL_REPLY and outcome.offer_human and outcome.state == "DONE"
    assert outcome.plan.intent == "abuse" and outcome.plan.planner == "abuse_filter"
    assert flags == [f"abuse:{category}"] and route["abuse"] == category
    [ticket] = outcome.results  # a teammate sees it, though the customer is not told of it
    assert ticket.tool == "create_ticket" and ticket.ok
    # The offer stands: "yes" brings in a teammate.
    followed, _, _ = await ask(rt, "yes")
    assert followed.state == "HANDED_OFF"


@pytest.mark.parametrize("category", sorted(HANDED))
async def test_threats_and_self_harm_go_to_a_human_at_once(rt, category):
    outcome, flags, route = await ask(rt, HANDED[category])
    assert outcome.state == "HANDED_OFF"
    assert outcome.reply == (SELF_HARM_REPLY if category == "self_harm" else THREAT_REPLY)
    assert {r.tool for r in outcome.results if r.ok} == {"escalate_to_human", "create_ticket"}
    assert flags == [f"abuse:{category}"] and route["abuse"] == category
    session = await rt.store.session_get("s-1")
    assert session["status"] == "handed_off" and session["metadata"]["handoff_reason"] == f"abuse filter: {category}"


async def test_a_frustrated_customer_still_gets_the_answer(rt):
    outcome, flags, route = await ask(rt, "this is f***ing ridiculous, where is my order A-1042?")
    assert outcome.plan.intent == "track_order" and outcome.state == "DONE"
    assert outcome.reply.startswith(ACKNOWLEDGEMENT) and "Order A-1042 has shipped" in outcome.reply
    assert flags == [] and route["abuse"] is None and route["frustrated"] is True


@pytest.mark.parametrize("text", ["kill the order A-1042, I don't want it anymore", "this charge is a scam?",
                                  "I was hit by a delay on order A-1042", "I'll find the order number and come back"])
async def test_support_words_that_sound_violent_are_not_abuse(rt, text):
    outcome, flags, route = await ask(rt, text)
    assert outcome.plan.intent != "abuse" and outcome.reply != NEUTRAL_REPLY
    assert flags == [] and "abuse" not in route


async def test_the_llm_planner_never_sees_an_abusive_message(tmp_path):
    async with OpenAIServer() as server:  # an empty script: any request would be recorded as unscripted
        settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", planner="llm",
                                 openai_base_url=server.base_url, openai_api_key="test-key", intent_semantic=False)
        async with open_runtime(settings) as runtime:
            assert isinstance(runtime.orchestrator.planner, LLMPlanner)
            outcome, flags, _ = await ask(runtime, "shut up you stupid bot")
        assert server.requests == [] and server.unscripted == []
    assert outcome.reply == NEUTRAL_REPLY and flags == ["abuse:insult"]


async def test_the_report_counts_flagged_turns_by_category(rt):
    for text in (NEUTRAL["insult"], "you moron", NEUTRAL["hate"], "where is my order A-1042?"):
        await ask(rt, text, session=f"s-{text}")
    report = await build_report(rt.store)
    assert report["abuse"]["flagged"] == 3 and report["abuse"]["by_category"] == {"insult": 2, "hate": 1}
    assert "Abuse filter: 3 turns flagged" in render_text(report)


def test_the_filter_off_leaves_messages_to_the_planner(tmp_path):
    settings = load_settings(home=tmp_path / "home", abuse_filter=False)
    assert settings.abuse_filter is False  # DESKHAND_ABUSE_FILTER=0 turns it off; on by default
    assert load_settings(home=tmp_path / "home2").abuse_filter is True


@pytest.mark.parametrize("text, category", [
    ("you 1d10t", "insult"), ("f*** you", "insult"), ("you stuuupid bot", "insult"),
    ("I feel like an idiot, I forgot my password", None), ("my husband is an idiot, he ordered twice", None)])
def test_masked_spellings_count_and_self_deprecation_does_not(text, category):
    assert classify(text).category == category


def test_precision_recall_and_the_bitext_false_positive_rate():
    rows = load(LABELLED)
    assert len(rows) >= 150
    tuned = measure([r for r in rows if r.get("set") != "held_out"], load(BITEXT))
    for category, scores in tuned["per_category"].items():
        assert scores["support"] >= 10, category
        assert scores["precision"] >= 0.95 and scores["recall"] >= 0.85, (category, scores)
    assert tuned["frustrated_answered"] == 1.0  # every frustrated customer gets their answer
    assert tuned["bitext"] > 3000 and tuned["bitext_false_positive_rate"] <= BITEXT_FALSE_POSITIVE_BOUND
    # Rows the lexicon was never tuned on: what it flags is right, and nothing ordinary is
    # flagged; its recall there is low and stated in the README, not asserted.
    held_out = [r for r in rows if r.get("set") == "held_out"]
    figures = measure(held_out, [])
    assert len(held_out) >= 40 and figures["abusive"]["precision"] >= 0.95
    assert figures["frustrated_answered"] == 1.0
    assert not [r["text"] for r in held_out if r["label"] == "ok" and classify(r["text"]).abusive]


async def test_deskhand_run_answers_an_insult_in_a_dm_neutrally_with_a_human_offered(emu, settings, tmp_path):  # noqa: F811
    home = tmp_path / "run-home"
    env = run_env(emu, home, DESKHAND_TENANTS_FILE=str(settings.tenants_file))
    async with deskhand_run(env, tmp_path / "run.err"):
        dm = emu.dm(ACME, ALICE, "you stupid bot, you're useless")
        await emu.push_event(ACME, dm)
        reply = await emu.wait_for_call("chat.update", answered(dm["channel"]), timeout=60)
    store = Store(home / "deskhand.db")
    try:
        row = store.inbox_get(message_id(ACME, dm["channel"], dm["ts"]))
        route = next(s for s in store.traces_for(row["correlation_id"]) if s["span"] == "ROUTE")
    finally:
        store.close()
    assert "keep this conversation respectful" in reply.params["text"]
    buttons = [e for b in reply.params["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert any(e["action_id"] == bk.HANDOFF and e["text"]["text"] == "Talk to a human" for e in buttons)
    assert json.loads(row["flags"]) == ["abuse:insult"] and route["data"]["abuse"] == "insult"
