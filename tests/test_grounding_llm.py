"""A model's wording against the grounding guard: the LLM planner drafts over real HTTP with
the scripted OpenAI-compatible server (tests/openai_server.py), the demo shop answers, and
the guard (bot/guards.py, bot/facts.py) decides. Last, the same on the real `deskhand run`
process against the Slack emulator."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.brain.drafting import NOT_CERTAIN, OFFER_HUMAN
from bot.brain.llm import LLMPlanner
from bot.config import load_settings
from bot.contracts import Channel, Citation, MessageEnvelope
from bot.hands.context import HandContext
from bot.hands.registry import default_registry, hand
from bot.hands.tools.search_kb import KbHit, KbResults, SearchKbArgs
from bot.runtime import open_runtime
from bot.slack import blocks as bk
from deskhand_process import deskhand_run, run_env
from openai_server import OpenAIServer, error_reply, forced_function, plan_reply, text_reply
from slack_emulator import SlackEmulator, Workspace

ROOT = Path(__file__).resolve().parent.parent
REFUNDS_MD = (ROOT / "fixtures/kb/returns/refunds.md").read_text()
SHIPPING_COSTS = REFUNDS_MD.split("## Shipping costs", 1)[1].split("##")[0].strip()  # has "within 14 days"
TRACK = {"intent": "track_order", "confidence": 0.9,
         "steps": [{"tool": "get_order_status", "args": {"order_id": "A-1042"}}]}  # demo shop: ETA 2026-11-24
ASK_KB = {"intent": "check_refund_policy", "confidence": 0.9,
          "steps": [{"tool": "search_kb", "args": {"query": "is shipping refunded"}}]}


class Router:
    """Plan requests and reply (draft) requests answered from separate queues."""

    def __init__(self, plans: list, replies: list):
        self.queues = {"BrainPlan": list(plans), "Reply": list(replies)}

    def __call__(self, body: dict, index: int):
        if body.get("max_tokens") == 1:  # the start-up reachability ping, not a turn
            return text_reply("pong")
        drafting = "writing the reply" in json.dumps(body["messages"])
        name = forced_function(body) or ("Reply" if drafting else "BrainPlan")
        queue = self.queues[name]
        return queue.pop(0) if queue else error_reply(500, f"no scripted {name} left")


@hand(side_effect="read", name="search_kb")
async def refund_article(ctx: HandContext, args: SearchKbArgs) -> KbResults:
    """Search the help centre and return up to 3 passages with their citations."""
    return KbResults(hits=[KbHit(
        citation=Citation(doc_id="returns/refunds", title="Refunds", section="Shipping costs"),
        text=SHIPPING_COSTS, passage=SHIPPING_COSTS, score=1.0, relevance=0.9)])


def refund_registry():
    registry = default_registry()
    registry.unregister("search_kb")
    registry.register(refund_article)
    return registry


@pytest.fixture
async def server():
    async with OpenAIServer() as s:
        yield s


@asynccontextmanager
async def llm_runtime(tmp_path: Path, server: OpenAIServer, registry=None):
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", planner="llm",
                             openai_base_url=server.base_url, openai_api_key="test-key",
                             llm_small_model="small", llm_large_model="large", llm_fallback_model="small")
    async with open_runtime(settings, registry=registry) as rt:
        assert isinstance(rt.orchestrator.planner, LLMPlanner)
        yield rt


def envelope(text: str) -> MessageEnvelope:
    return MessageEnvelope(tenant_id="T_DEMO", channel=Channel.slack_dm, user_id="U_ADA", session_id="s-1",
                           text=text)


async def ask(tmp_path, server, plan: dict, reply: dict, question: str, registry=None):
    server.set_script(Router([plan_reply(plan)], [plan_reply(reply)]))
    async with llm_runtime(tmp_path, server, registry) as rt:
        return await rt.orchestrator.handle(envelope(question))


async def test_the_eta_in_words_is_grounded_by_the_shops_iso_date(tmp_path, server):
    text = "Order A-1042 has shipped with UPS and should arrive by November 24th (tracking 1Z999AA10123456784)."
    outcome = await ask(tmp_path, server, TRACK, {"text": text}, "where is my order A-1042?")
    assert outcome.reply == text and not outcome.offer_human


@pytest.mark.parametrize("invented", [
    "Order A-1042 should arrive on December 25.",
    "Order A-1042 has shipped, and we'll refund you $50 for the wait.",
    "Order A-1042 has shipped; use code SORRY for 15% off your next order.",
])
async def test_an_invented_date_amount_or_percentage_in_a_draft_becomes_not_certain(tmp_path, server, invented):
    outcome = await ask(tmp_path, server, TRACK, {"text": invented}, "where is my order A-1042?")
    assert outcome.state == "DONE"
    assert outcome.reply == NOT_CERTAIN and OFFER_HUMAN in outcome.reply and outcome.offer_human


async def test_a_duration_copied_from_the_cited_refund_article_passes(tmp_path, server):
    registry = refund_registry()
    text = "If you send the whole order back within 14 days of delivery, we refund the standard shipping too."
    outcome = await ask(tmp_path, server, ASK_KB, {"text": text, "citations": ["kb1"]}, "is shipping refunded?",
                        registry)
    assert outcome.reply == text and [c.doc_id for c in outcome.citations] == ["returns/refunds"]


async def test_an_invented_duration_beside_a_cited_passage_becomes_not_certain(tmp_path, server):
    registry = refund_registry()
    text = "Send it back within two weeks and you'll have the shipping refunded within 48 hours."
    outcome = await ask(tmp_path, server, ASK_KB, {"text": text, "citations": ["kb1"]}, "is shipping refunded?",
                        registry)
    # "two weeks" is the article's 14 days; "48 hours" is nowhere in it.
    assert outcome.reply == NOT_CERTAIN and outcome.offer_human


# -- the real `deskhand run` ----------------------------------------------------------------
ACME, ALICE = "T0ACME0001", "U0ALICE01"


async def test_deskhand_run_with_a_model_that_invents_a_date_offers_a_human(tmp_path, server):
    server.set_script(Router(
        plans=[plan_reply(TRACK), plan_reply(TRACK)],
        replies=[plan_reply({"text": "Order A-1042 arrives on 24 Nov 2026."}),  # the shop's ETA, reworded
                 plan_reply({"text": "Order A-1042 arrives on 25 Dec 2026."})]))  # invented
    acme = Workspace(ACME, name="Acme")
    acme.add_user(ALICE, "alice", email="ada@example.com")
    async with SlackEmulator([acme]) as emu:
        env = run_env(emu, tmp_path / "home", DESKHAND_PLANNER="llm", DESKHAND_OPENAI_BASE_URL=server.base_url,
                      DESKHAND_OPENAI_API_KEY="test-key", DESKHAND_LLM_SMALL_MODEL="small",
                      DESKHAND_LLM_LARGE_MODEL="large", DESKHAND_LLM_FALLBACK_MODEL="small")
        async with deskhand_run(env, tmp_path / "run.err"):
            replies = []
            for _ in range(2):
                dm = emu.dm(ACME, ALICE, "where is my order A-1042?")
                await emu.push_event(ACME, dm)
                call = await emu.wait_for_call(
                    "chat.update", lambda c: c.params["channel"] == dm["channel"] and c.params["text"] != bk.PLACEHOLDER
                    and c.params["text"] not in replies, timeout=60)
                replies.append(call.params["text"])
    asked = [forced_function(r) for r in server.requests]
    assert "24 Nov 2026" in replies[0], (asked, replies)
    assert "25 Dec" not in replies[1], (asked, replies)
    assert "not certain" in replies[1] and "teammate" in replies[1], (asked, replies)
