"""Reloads: incremental by content hash, deletes, broken files, freshness, scheduling."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import Settings
from kb_loader import KnowledgeBase, ReloadError, schedule_reloads
from kb_loader.encoder import load_bert, minilm_path
from kb_loader.freshness import record_path
from kb_loader.lexical import LexicalIndex
from kb_loader.scheduler import reload_in_thread

T = "T1"

ARTICLES = {
    "refunds.md": "---\ntitle: Refunds\nurl: https://help.example/refunds\n---\n# Refunds\n\n"
                  "Refunds reach your original payment method within 5-10 business days.\n\n"
                  "## Store credit\n\nStore credit is added at once and never expires.\n",
    "shipping/times.md": "# Delivery times\n\nGermany takes one to three business days. "
                         "Austria takes two to four.\n",
    "gifts.txt": "Gift cards\n\nGift cards are delivered by email and cannot be refunded. "
                 "Zebraquartz is their secret ingredient.\n",
}


class CountingEncoder:
    """The real encoder, recording every text it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.tokenizer = inner.name, inner.tokenizer
        self.max_seq_length = inner.max_seq_length
        self.texts: list[str] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.encode(texts)


@pytest.fixture
def kb_dir(tmp_path) -> Path:
    root = tmp_path / "kb"
    for rel, text in ARTICLES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def encoder():
    return CountingEncoder(load_bert(minilm_path(), name="all-MiniLM-L6-v2"))


@pytest.fixture
def kb(tmp_path, kb_dir, encoder) -> KnowledgeBase:
    return KnowledgeBase(Settings(home=tmp_path / "home", kb_dir=kb_dir), encoder=encoder)


def chunk_doc_ids(kb: KnowledgeBase) -> list[str]:
    return sorted(m["doc_id"] for m in kb.index(T).stored().metadatas)


def test_reload_is_incremental(kb, kb_dir, encoder):
    stages = []
    first = kb.reload(T, progress=lambda stage, done, total: stages.append(stage))
    assert first.added == ["gifts", "refunds", "shipping/times"] and first.chunks == 3
    # One text per passage: the refunds chunk has two sections, so two passages.
    assert first.chunks_embedded == 3 and len(encoder.texts) == 4
    assert sum(t.startswith("Refunds") for t in encoder.texts) == 2
    assert {"load", "chunk", "embed", "index"} <= set(stages)

    encoder.texts.clear()
    again = kb.reload(T)
    assert again.unchanged == ["gifts", "refunds", "shipping/times"] and again.chunks_embedded == 0
    assert encoder.texts == []

    (kb_dir / "shipping/times.md").write_text(ARTICLES["shipping/times.md"].replace("two to four", "two to five"))
    edited = kb.reload(T)
    assert edited.updated == ["shipping/times"] and edited.unchanged == ["gifts", "refunds"]
    assert edited.chunks_embedded == 1 and edited.chunks_deleted == 1
    assert len(encoder.texts) == 1 and "two to five" in encoder.texts[0]
    assert kb.search(T, "how long to Austria")[0].text.endswith("two to five.")


def test_metadata_only_change_reuses_the_vector(kb, kb_dir, encoder):
    kb.reload(T)
    encoder.texts.clear()
    path = kb_dir / "refunds.md"
    path.write_text(path.read_text().replace("https://help.example/refunds", "https://help.example/refunds-v2"))
    report = kb.reload(T)
    assert report.updated == ["refunds"] and report.chunks_reused == 1 and report.chunks_embedded == 0
    assert encoder.texts == []
    assert kb.search(T, "refund")[0].citation.url == "https://help.example/refunds-v2"


def test_deleted_document_leaves_both_indexes(kb, kb_dir):
    kb.reload(T)
    assert kb.search(T, "zebraquartz")[0].citation.doc_id == "gifts"
    (kb_dir / "gifts.txt").unlink()
    report = kb.reload(T)
    assert report.removed == ["gifts"] and report.chunks_deleted == 1
    assert "gifts" not in chunk_doc_ids(kb)
    idx = kb.index(T)
    assert "gifts" not in idx.lexical.doc_ids and idx.lexical.search("zebraquartz", 8) == []
    on_disk = LexicalIndex.load(idx.lexical_dir)
    assert on_disk is not None and "gifts" not in on_disk.doc_ids and len(on_disk) == 2
    assert all(h.citation.doc_id != "gifts" for h in kb.search(T, "zebraquartz gift cards"))


def test_broken_file_is_reported_and_the_rest_indexed(kb, kb_dir):
    (kb_dir / "broken.md").write_bytes(b"# Caf\x00 \xff\xfe\n")
    report = kb.reload(T)
    assert [(e.source, "binary" in e.error) for e in report.errors] == [("broken.md", True)]
    assert report.docs == 3 and kb.is_available(T)
    assert kb.status(T).errors[0].source == "broken.md"

    # A file that was indexed and then breaks keeps its last good version.
    (kb_dir / "refunds.md").write_text("---\ntitle: [unclosed\n---\n")
    report = kb.reload(T)
    assert report.kept == ["refunds"] and report.removed == []
    assert "refunds" in chunk_doc_ids(kb)


def test_empty_or_missing_index_is_unavailable(kb, tmp_path):
    status = kb.status(T)
    assert not status.available and status.reason == "never_loaded" and not kb.is_available(T)

    empty = tmp_path / "empty"
    empty.mkdir()
    report = kb.reload(T, empty)
    assert report.docs == 0 and report.chunks == 0
    assert kb.status(T).reason == "empty" and not kb.is_available(T)

    with pytest.raises(ReloadError):
        kb.reload(T, tmp_path / "no-such-folder")


def test_missing_folder_leaves_the_index_alone(kb, tmp_path):
    kb.reload(T)
    with pytest.raises(ReloadError):
        kb.reload(T, tmp_path / "unmounted")
    assert kb.is_available(T) and len(chunk_doc_ids(kb)) == 3


def test_stale_index_is_unavailable(kb, tmp_path, kb_dir, encoder):
    kb.reload(T)
    assert kb.is_available(T)
    path = record_path(kb.home, T)
    record = json.loads(path.read_text())
    record["last_reload_at"] = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat()
    path.write_text(json.dumps(record))
    status = kb.status(T)
    assert not status.available and status.reason == "stale" and status.age_hours > 24 * 7
    lenient = KnowledgeBase(Settings(home=kb.home, kb_dir=kb_dir, kb_stale_hours=24 * 30), encoder=encoder)
    assert lenient.is_available(T)


def test_index_survives_a_new_process(kb, tmp_path, kb_dir, encoder):
    kb.reload(T)
    fresh = KnowledgeBase(Settings(home=kb.home, kb_dir=kb_dir), encoder=encoder)
    assert fresh.search(T, "store credit expiry")[0].citation.doc_id == "refunds"
    assert fresh.status(T).chunks == 3


def test_tenants_are_isolated(kb):
    kb.reload(T)
    assert kb.search("T2", "refunds") == []
    assert not kb.is_available("T2")
    assert kb.index("../evil").lexical_dir.parent == kb.home / "bm25"


async def test_scheduled_reloads(kb, kb_dir):
    scheduler = AsyncIOScheduler()
    jobs = schedule_reloads(scheduler, kb, [T, "T2"], interval_minutes=30)
    assert [j.id for j in jobs] == ["kb-reload:T1", "kb-reload:T2"]
    scheduler.start()
    try:
        job = scheduler.get_job("kb-reload:T1")
        assert job.next_run_time is not None and job.trigger.interval == timedelta(minutes=30)
    finally:
        scheduler.shutdown(wait=False)
    await reload_in_thread(kb, T)
    assert kb.is_available(T)
    await reload_in_thread(kb, T, kb_dir / "missing")  # logged, never raised


def test_restricted_neighbours_fall_back_to_a_filtered_query(kb, kb_dir):
    for n in range(6):
        (kb_dir / f"internal-{n}.md").write_text(
            f"---\nallowed_channels: [slack_channel]\n---\n# Gift card fraud {n}\n\n"
            f"Gift cards bought with stolen cards, pattern {n}: block the gift card code.\n")
    kb.reload(T)
    idx = kb.index(T)
    query = kb.encoder.encode(["gift card codes"])[0]
    def doc(chunk_id: str) -> str:
        return idx.lexical.doc_ids[idx.lexical.position(chunk_id)]

    # The four nearest passages (all a k=1 search fetches) are internal ...
    assert all(doc(c).startswith("internal-") for c, _, _ in idx.vector_search(query, 4, None))
    # ... yet a DM still gets its best public chunk, through Chroma's filtered query.
    [(chunk_id, _, _)] = idx.vector_search(query, 1, "slack_dm")
    assert doc(chunk_id) == "gifts"


def test_a_reload_by_another_instance_is_seen(kb, kb_dir, encoder):
    kb.reload(T)
    assert kb.search(T, "zebraquartz", channel="email")[0].citation.doc_id == "gifts"
    (kb_dir / "vouchers.md").write_text("# Vouchers\n\nVouchers carry a Flamingoquill watermark.\n")
    other = KnowledgeBase(Settings(home=kb.home, kb_dir=kb_dir), encoder=encoder)  # e.g. the CLI
    assert other.reload(T).added == ["vouchers"]
    assert kb.search(T, "flamingoquill watermark", channel="email")[0].citation.doc_id == "vouchers"
