"""Hybrid search over the demo KB: right articles, valid citations, channel filtering."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import chromadb
import pytest

from bot.config import FIXTURES, Settings
from bot.contracts import Channel
from kb_loader import KnowledgeBase
from kb_loader.encoder import load_bert, minilm_path
from kb_loader.index import collection_name, passages_of

TENANT = "T_DEMO"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> KnowledgeBase:
    home = tmp_path_factory.mktemp("kb-demo")
    kb = KnowledgeBase(Settings(home=home, kb_dir=FIXTURES / "kb"),
                       encoder=load_bert(minilm_path(), name="all-MiniLM-L6-v2"))
    report = kb.reload(TENANT)
    assert report.errors == [] and report.docs >= 15
    return kb


@pytest.mark.parametrize(("query", "doc_id"), [
    ("what is your refund policy", "returns/refunds"),
    ("how long until the refund reaches my credit card", "returns/refunds"),
    ("is there a cancellation fee?", "orders/cancellation-fees"),
    ("what shipping options do you have", "shipping/delivery-options"),
    ("how long does delivery take", "shipping/delivery-times"),
    ("I need an invoice for my order", "payments/invoices"),
    ("I forgot my password", "account/passwords"),
    ("unsubscribe me from the newsletter", "account/newsletter"),
    ("how do I create an account", "account/accounts"),
    ("my card payment was declined", "payments/payment-issues"),
    ("the item arrived broken", "returns/returns"),
    ("what's your phone number", "support/contact-us"),
])
def test_finds_the_right_article(demo, query, doc_id):
    hits = demo.search(TENANT, query, channel=Channel.slack_dm)
    assert 1 <= len(hits) <= 3
    assert hits[0].citation.doc_id == doc_id, [h.citation.doc_id for h in hits]
    # The bot answers from the KB only above this floor.
    assert hits[0].relevance >= demo.settings.kb_relevance_floor


def test_off_topic_questions_score_low(demo):
    hits = demo.search(TENANT, "how much has the dow jones changed today", channel="slack_dm")
    assert all(h.relevance < demo.settings.kb_relevance_floor for h in hits)


def test_citations_are_returned_chunks(demo):
    hits = demo.search(TENANT, "can I return a personalised item?", channel="email")
    stored = demo.index(TENANT).stored(ids=[h.chunk_id for h in hits], with_documents=True)
    by_id = dict(zip(stored.ids, zip(stored.metadatas, stored.documents)))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for hit in hits:
        meta, text = by_id[hit.chunk_id]
        assert hit.text == text
        assert hit.citation.doc_id == meta["doc_id"]
        # The section is the matching passage's (within the chunk), else the chunk's.
        assert hit.citation.section in {meta["section"], *(p.section for p in passages_of(meta))}
        assert hit.citation.title == meta["title"] and hit.citation.url == meta["url"]
        assert hit.citation.snippet and hit.citation.snippet in hit.passage and hit.passage in hit.text
        assert 0.0 <= hit.relevance <= 1.0


def test_snippet_points_at_the_matching_passage(demo):
    [hit, *_] = demo.search(TENANT, "how long is the password reset link valid", channel="slack_dm")
    assert "60" in hit.citation.snippet
    assert hit.citation.section == "Recovering your password > Forgot your password?"
    assert hit.passage.startswith("## Forgot your password?")


@pytest.mark.parametrize(("channel", "visible"), [
    ("slack_channel", True), ("slack_thread", True), (None, True),
    ("slack_dm", False), ("email", False), ("cli", False), ("approval", False),
])
def test_allowed_channels_filter_results(demo, channel, visible):
    hits = demo.search(TENANT, "who approves refunds over 250 EUR and goodwill credit", channel=channel, top_k=3)
    internal = [h for h in hits if h.citation.doc_id == "internal/refund-approvals"]
    assert bool(internal) is visible
    if visible:
        assert hits[0].citation.doc_id == "internal/refund-approvals"


def test_no_chroma_embedding_function_and_no_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))

    def forbidden(self, texts):
        raise AssertionError("Chroma's default embedding function must never run")

    monkeypatch.setattr(chromadb.api.types.DefaultEmbeddingFunction, "__call__", forbidden)
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    (kb_dir / "a.md").write_text("# Gift cards\n\nGift cards never expire.\n")
    kb = KnowledgeBase(Settings(home=tmp_path / "home", kb_dir=kb_dir),
                       encoder=load_bert(minilm_path(), name="all-MiniLM-L6-v2"))
    kb.reload("T1")
    assert kb.search("T1", "do gift cards expire")[0].citation.doc_id == "a"
    col = kb.client.get_collection(collection_name("T1"), embedding_function=None)
    # No function is attached: Chroma records none ("legacy" is its name for that).
    assert col.configuration_json.get("embedding_function") in (None, {"type": "legacy"})
    assert not (tmp_path / "user" / ".cache").exists()
    assert not any(Path(p).name == "onnx_models" for p, _, _ in os.walk(tmp_path))


def test_concurrent_searches(demo):
    queries = ["refund time", "delivery options", "delete my account", "invoice download"] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda q: demo.search(TENANT, q, channel="slack_dm"), queries))
    for q, hits in zip(queries, results):
        assert hits and hits == results[queries.index(q)]


def test_empty_query_and_unknown_tenant(demo):
    assert demo.search(TENANT, "   ") == []
    assert demo.search("T_NOBODY", "refunds") == []
    assert demo.is_available("T_NOBODY") is False


async def test_a_kb_answer_quotes_the_section_that_matched(demo, tmp_path):
    from bot.contracts import MessageEnvelope
    from bot.runtime import open_runtime

    async with open_runtime(Settings(home=tmp_path / "home", kb_dir=FIXTURES / "kb")) as rt:
        rt.kb = demo
        outcome = await rt.orchestrator.handle(MessageEnvelope(
            tenant_id=TENANT, channel=Channel.slack_dm, user_id="U_ADA", session_id="s-kb",
            text="how long is the password reset link valid?"))

    assert "valid for 60 minutes" in outcome.reply
    assert "The reset email did not arrive" not in outcome.reply  # the chunk's next section
    assert not outcome.reply.lstrip().startswith("#")
    assert outcome.citations[0].section == "Recovering your password > Forgot your password?"
