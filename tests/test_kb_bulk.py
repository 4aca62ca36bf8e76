"""Bulk indexing: reloads embed on a pool of threads, queries on their own thread; BM25 is
updated from the chunks a reload changed, with the same scores as a rebuild."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import yaml

from bot.config import FIXTURES, Settings
from kb_loader import KnowledgeBase
from kb_loader.bulk import THREAD_PREFIX, BulkEmbedder
from kb_loader.encoder import BertEncoder, minilm_path
from kb_loader.lexical import Corpus, LexicalIndex

T = "T_BULK"
QUESTIONS = [q["question"] for q in yaml.safe_load((FIXTURES / "kb_questions.yml").read_text())]


class ThreadNotingBert(BertEncoder):
    """The real numpy encoder, noting the thread each `encode` call runs on."""

    def __init__(self) -> None:
        super().__init__(minilm_path(), name="all-MiniLM-L6-v2")
        self.threads: list[str] = []
        self._noted = threading.Lock()

    def encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        with self._noted:
            self.threads.append(threading.current_thread().name)
        return super().encode(texts, bulk=bulk)


class FlagNotingEncoder:
    """The real numpy encoder behind an encoder of another kind (as the onnxruntime one is),
    noting the `bulk` flag of every call."""

    def __init__(self, inner: BertEncoder):
        self.inner = inner
        self.name, self.tokenizer = inner.name, inner.tokenizer
        self.flags: list[bool] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def encode(self, texts: list[str], *, bulk: bool = False) -> np.ndarray:
        self.flags.append(bulk)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def encoder() -> ThreadNotingBert:
    return ThreadNotingBert()


def demo_kb(home, encoder, workers: int) -> KnowledgeBase:
    kb = KnowledgeBase(Settings(home=home, kb_dir=FIXTURES / "kb"), encoder=encoder, bulk_workers=workers)
    report = kb.reload(T)
    assert report.errors == [] and report.chunks_embedded == report.chunks > 15
    return kb


def bulk_threads_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_bulk_reload_finds_what_the_serial_one_finds(tmp_path, encoder):
    encoder.threads.clear()
    serial = demo_kb(tmp_path / "serial", encoder, workers=1)
    assert set(encoder.threads) == {threading.current_thread().name}

    encoder.threads.clear()
    bulk = demo_kb(tmp_path / "bulk", encoder, workers=2)
    assert encoder.threads and all(name.startswith(THREAD_PREFIX) for name in encoder.threads)
    assert len(set(encoder.threads)) == 2  # both workers embedded
    assert bulk_threads_alive() == []  # the pool lives only as long as the reload

    ids = serial.index(T).stored().ids
    a, b = serial.index(T).passage_vectors(ids), bulk.index(T).passage_vectors(ids)
    assert all(np.allclose(a[i], b[i], atol=1e-6) for i in ids)
    for question in QUESTIONS:
        got = [(h.chunk_id, round(h.relevance, 4)) for h in bulk.search(T, question, channel="slack_dm")]
        assert got == [(h.chunk_id, round(h.relevance, 4)) for h in serial.search(T, question, channel="slack_dm")]


def test_a_query_encodes_on_its_own_thread(tmp_path, encoder):
    kb = demo_kb(tmp_path / "home", encoder, workers=2)
    encoder.threads.clear()
    hits = kb.search(T, "do you take american express?", channel="slack_dm")
    assert hits[0].citation.doc_id == "payments/payment-methods"
    assert encoder.threads == [threading.current_thread().name]
    assert bulk_threads_alive() == []


def test_other_encoders_are_asked_for_bulk_only_by_reloads(tmp_path, encoder):
    flagged = FlagNotingEncoder(encoder)
    kb = demo_kb(tmp_path / "home", flagged, workers=2)
    assert flagged.flags and all(flagged.flags)
    flagged.flags.clear()
    assert kb.search(T, "can I pay with apple pay", channel="slack_dm")
    assert flagged.flags == [False]


def test_batches_are_length_sorted_and_within_the_token_budget(encoder):
    texts = [" ".join(["refund"] * n) for n in (300, 3, 40, 3, 120, 7, 40)]
    embedder = BulkEmbedder(encoder, workers=2)
    batches = embedder.batches(texts)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(texts)))
    lengths = [min(n + 2, encoder.max_seq_length) for n in (300, 3, 40, 3, 120, 7, 40)]
    assert [lengths[i] for i in order] == sorted(lengths)
    assert all(len(b) * max(lengths[i] for i in b) <= encoder.batch_tokens or len(b) == 1 for b in batches)
    # Same vectors as one plain encode call, in input order.
    assert np.allclose(embedder.embed(texts), encoder.encode(texts), atol=1e-6)


def test_changing_one_article_updates_both_indexes(tmp_path, encoder):
    folder = tmp_path / "kb"
    folder.mkdir()
    for n in range(6):
        (folder / f"topic{n}.md").write_text(f"# Topic {n}\n\nTopic {n} covers parcel number {n} and its label.\n")
    (folder / "gifts.md").write_text("# Gift cards\n\nGift cards are wrapped in zebraquartz paper.\n")
    kb = KnowledgeBase(Settings(home=tmp_path / "home", kb_dir=folder), encoder=encoder, bulk_workers=2)
    kb.reload(T)
    idx = kb.index(T)
    assert idx.lexical.search("zebraquartz", 3)[0][0] in idx.stored().ids

    (folder / "gifts.md").write_text("# Gift cards\n\nGift cards are wrapped in marmalite foil.\n")
    report = kb.reload(T)
    assert report.updated == ["gifts"] and report.chunks_embedded == 1 and report.chunks_deleted == 1

    assert idx.lexical.search("zebraquartz", 3) == []
    [(chunk_id, _)] = idx.lexical.search("marmalite", 3)
    [stored] = idx.stored(ids=[chunk_id], with_documents=True).documents
    assert "marmalite foil" in stored and "zebraquartz" not in stored
    vector = encoder.encode(["wrapped in marmalite foil"])[0]
    assert idx.vector_search(vector, 1, None)[0][0] == chunk_id
    assert not any("zebraquartz" in h.text for h in kb.search(T, "zebraquartz paper"))
    assert "marmalite" in kb.search(T, "what are gift cards wrapped in")[0].text

    # The update scores exactly as a rebuild from Chroma would.
    updated = idx.lexical
    rebuilt = idx.rebuild_lexical()
    for query in ("marmalite foil", "parcel label", "topic 3", "gift cards"):
        a = dict(zip(updated.ids, updated.score_all(query)))
        b = dict(zip(rebuilt.ids, rebuilt.score_all(query)))
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-5 for k in a), query


def test_an_index_saved_without_its_corpus_is_rebuilt_once(tmp_path, encoder):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("# Lockers\n\nParcel lockers keep a parcel for seven days.\n")
    kb = KnowledgeBase(Settings(home=tmp_path / "home", kb_dir=folder), encoder=encoder, bulk_workers=1)
    kb.reload(T)
    idx = kb.index(T)
    (idx.lexical_dir / "corpus.npz").unlink()  # as an index saved before corpora were kept

    (folder / "b.md").write_text("# Vouchers\n\nA voucher code is valid for one year.\n")
    kb.reload(T)
    assert [d for _, d in sorted(zip(idx.lexical.ids, idx.lexical.doc_ids))] == sorted(["a", "b"])
    assert idx.lexical.search("voucher", 1) and idx.lexical.search("locker", 1)
    saved = LexicalIndex.load(idx.lexical_dir, with_corpus=True)
    assert saved is not None and saved.corpus is not None and len(saved.corpus) == 2


def test_corpus_drops_and_adds_documents_and_forgets_unused_terms(tmp_path):
    index = LexicalIndex.build(["a", "b", "c"], ["refund parcel", "parcel label", "voucher code"],
                               ["A", "B", "C"], [["email"], ["email"], ["email"]])
    later = index.updated({"c"}, ["d"], ["label printer"], ["D"], [["email"]])
    assert later.ids == ["a", "b", "d"] and later.doc_ids == ["A", "B", "D"]
    assert later.corpus is not None and "voucher" not in later.corpus.terms and "printer" in later.corpus.terms
    fresh = LexicalIndex.build(["a", "b", "d"], ["refund parcel", "parcel label", "label printer"],
                               ["A", "B", "D"], [["email"]] * 3)
    for query in ("parcel", "label printer", "refund", "voucher"):
        assert np.allclose(later.score_all(query), fresh.score_all(query))

    later.save(tmp_path / "lex")
    loaded = LexicalIndex.load(tmp_path / "lex", with_corpus=True)
    assert loaded is not None and loaded.corpus is not None
    assert loaded.corpus.terms == later.corpus.terms and np.array_equal(loaded.corpus.flat, later.corpus.flat)
    assert LexicalIndex.load(tmp_path / "lex").corpus is None  # a search never reads it
    assert len(Corpus.of(["", "the a of"])) == 2  # documents with no terms still count
