"""Chunking: 512–800 real tokens, ~80 tokens of overlap, heading-aware, stable ids."""

from __future__ import annotations

import random
import re
from datetime import datetime, timezone

import pytest

from bot.config import FIXTURES
from kb_loader.chunker import MAX_TOKENS, MIN_TOKENS, chunk_document
from kb_loader.encoder import load_bert, minilm_path
from kb_loader.loaders import ALL_CHANNELS, Document, load_folder

WORDS = ("parcel order refund carrier warehouse customer delivery invoice payment account address "
         "return label business days within after before we you it the a of to").split()


@pytest.fixture(scope="session")
def tokenizer():
    return load_bert(minilm_path(), name="all-MiniLM-L6-v2").tokenizer


def count(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def sentences(rng: random.Random, n: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 22))).capitalize() + "."
                    for _ in range(n))


def doc(body: str, **kw) -> Document:
    base = dict(doc_id="returns", title="Returns", url="kb://returns.md", source="returns.md",
                allowed_channels=ALL_CHANNELS, updated_at=datetime(2025, 1, 1, tzinfo=timezone.utc), text=body)
    base.update(kw)
    return Document(**base)


def overlap_tokens(tokenizer, a: str, b: str) -> int:
    for size in range(min(len(a), len(b)), 0, -1):
        if a.endswith(b[:size]):
            return count(tokenizer, b[:size])
    return 0


def test_long_section_chunks_within_bounds_with_overlap(tokenizer):
    rng = random.Random(7)
    body = "# Returns\n\n" + "\n\n".join(sentences(rng, 5) for _ in range(40))
    chunks = chunk_document(doc(body), tokenizer)
    assert len(chunks) >= 4
    for chunk in chunks:
        real = count(tokenizer, chunk.text)
        assert real == chunk.tokens  # counts are the tokenizer's own
        if chunk is not chunks[-1]:
            assert MIN_TOKENS <= real <= MAX_TOKENS
        assert chunk.section == "Returns"
    for a, b in zip(chunks, chunks[1:]):
        shared = overlap_tokens(tokenizer, a.text, b.text)
        assert 56 <= shared <= 104, shared  # ≈ 80 tokens, in whole sentences
        assert re.match(r"[A-Z]", b.text), "a chunk starts at a sentence"


def test_sections_are_carried_and_cuts_prefer_headings(tokenizer):
    rng = random.Random(3)
    body = ("# Returns\n\n" + sentences(rng, 3) + "\n\n## Damaged items\n\n"
            + "\n\n".join(sentences(rng, 4) for _ in range(16))
            + "\n\n## Wrong size\n\n" + "\n\n".join(sentences(rng, 4) for _ in range(9)))
    chunks = chunk_document(doc(body), tokenizer)
    sections = [c.section for c in chunks]
    assert "Returns > Damaged items" in sections and "Returns > Wrong size" in sections
    starts_at_heading = [c for c in chunks if c.text.startswith("## Wrong size")]
    assert starts_at_heading, "a chunk starts where the section starts"
    for chunk in chunks:
        assert not re.search(r"\n#+ [^\n]*$", chunk.text), "a chunk never ends on a heading"
        assert count(tokenizer, chunk.text) <= MAX_TOKENS
    assert starts_at_heading[0].context == "Returns > Wrong size"


def test_short_document_is_one_chunk(tokenizer):
    body = "# Refunds\n\nWe refund within 5-10 business days.\n\n## Store credit\n\nInstant."
    chunks = chunk_document(doc(body, title="Refunds"), tokenizer)
    assert len(chunks) == 1
    assert chunks[0].section == "Refunds" and chunks[0].tokens < MIN_TOKENS
    assert chunks[0].index_text.startswith("Refunds\n# Refunds")


def test_metadata_and_content_hash(tokenizer):
    base = doc("# Refunds\n\nWithin 5-10 business days.")
    [a] = chunk_document(base, tokenizer)
    [again] = chunk_document(base, tokenizer)
    [restricted] = chunk_document(doc(base.text, allowed_channels=("slack_channel",)), tokenizer)
    [edited] = chunk_document(doc("# Refunds\n\nWithin 3-5 business days."), tokenizer)
    assert (a.doc_id, a.url, a.source, a.updated_at) == ("returns", "kb://returns.md", "returns.md",
                                                         "2025-01-01T00:00:00+00:00")
    assert a.id == again.id and a.content_hash == again.content_hash
    assert len({a.content_hash, restricted.content_hash, edited.content_hash}) == 3
    assert re.fullmatch(r"[0-9a-f]{64}", a.content_hash)


def test_unbreakable_text_is_still_bounded(tokenizer):
    body = "# Log\n\n" + " ".join(f"token{i}" for i in range(3000))  # one huge "sentence"
    chunks = chunk_document(doc(body), tokenizer)
    assert len(chunks) > 3
    assert all(count(tokenizer, c.text) <= MAX_TOKENS for c in chunks)


def test_demo_kb_chunks(tokenizer):
    docs = load_folder(FIXTURES / "kb").documents
    chunks = [c for d in docs for c in chunk_document(d, tokenizer)]
    assert len({c.id for c in chunks}) == len(chunks)
    returns = [c for c in chunks if c.doc_id == "returns/returns"]
    assert len(returns) >= 2 and all(c.tokens <= MAX_TOKENS for c in returns)
