"""The lexical side of retrieval: a bm25s index over the same chunks as the vector index.

Words are lower-cased, English stop words dropped, and suffixes trimmed by a small stemmer
(plurals, -ed, -ing) so "refunds", "refunded" and "refund" meet. The index and a sidecar
(`chunks.json`: chunk ids, doc ids, allowed channels) are saved side by side and swapped into
place as a whole, so a reader never sees half of a save.

bm25s cannot add or remove documents: IDF and the mean document length are corpus-wide, so
every score changes with the corpus. What a reload can avoid is reading every chunk back and
tokenizing it again. So the save also keeps each chunk's tokens (`corpus.npz`, a `Corpus`: term
ids into a term list), and `LexicalIndex.updated` drops and adds chunks there, tokenizes only
the new ones, and rebuilds the bm25s matrix from the ids: at 10,000 chunks, 0.26 s (80-token
chunks) and 0.57 s (600-token chunks) against 2.5 s and 2.8 s for a rebuild that reads every
chunk back from Chroma (`bench/index.py`). A search never reads the corpus.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from kb_loader.loaders import ALL_CHANNELS

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(STOPWORDS_EN)


@functools.lru_cache(maxsize=1 << 16)  # support text repeats its words: most calls are hits
def stem(word: str) -> str:
    """Porter's first step (plurals, -ed, -ing, final y) plus final -e and -ll: enough to join
    the inflections in support articles. Applied alike to chunks and queries."""
    if len(word) <= 2 or word.isdigit():
        return word
    if word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ies"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2 and re.search(r"[aeiou]", word[: -len(suffix)]):
            word = word[: -len(suffix)]
            if word.endswith(("at", "bl", "iz")):
                word += "e"
            elif len(word) > 2 and word[-1] == word[-2] and word[-1] not in "lsz" and word[-1] not in "aeiou":
                word = word[:-1]
            elif re.fullmatch(r"[^aeiou]*[aeiou][^aeiouwxy]", word):
                word += "e"
            break
    if word.endswith("y") and len(word) > 2 and re.search(r"[aeiou]", word[:-1]):
        word = word[:-1] + "i"
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]  # subscribe / subscribed, invoice / invoices
    if len(word) > 4 and word.endswith("ll"):
        word = word[:-1]  # cancel / cancelled
    return word


def tokens(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and (len(w) > 1 or w.isdigit())]


@dataclass
class Corpus:
    """Every chunk's tokens, as ids into `terms`: chunk n's are `flat[offsets[n]:offsets[n + 1]]`."""

    terms: list[str] = field(default_factory=list)
    flat: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))

    @classmethod
    def of(cls, texts: Sequence[str]) -> Corpus:
        return cls().extended([tokens(t) for t in texts])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def extended(self, token_lists: Sequence[list[str]]) -> Corpus:
        """This corpus with these documents added at the end."""
        terms = list(self.terms)
        term_id = {t: i for i, t in enumerate(terms)}
        new_ids: list[int] = []
        for words in token_lists:
            for word in words:
                i = term_id.get(word)
                if i is None:
                    i = term_id[word] = len(terms)
                    terms.append(word)
                new_ids.append(i)
        lengths = np.fromiter((len(w) for w in token_lists), dtype=np.int64, count=len(token_lists))
        flat = np.concatenate([self.flat, np.asarray(new_ids, dtype=np.int32)])
        offsets = np.concatenate([self.offsets, self.offsets[-1] + np.cumsum(lengths)])
        return Corpus(terms, flat, offsets)

    def kept(self, keep: np.ndarray) -> Corpus:
        """Only the documents where the boolean array `keep` is true, terms no document
        uses any more dropped."""
        lengths = np.diff(self.offsets)
        flat = self.flat[np.repeat(keep, lengths)]
        offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
        used = np.bincount(flat, minlength=len(self.terms)) > 0
        if used.all():
            return Corpus(list(self.terms), flat, offsets)
        renumber = np.cumsum(used, dtype=np.int64) - 1
        terms = [t for t, u in zip(self.terms, used) if u]
        return Corpus(terms, renumber[flat].astype(np.int32), offsets)

    def bm25(self) -> bm25s.BM25:
        retriever = bm25s.BM25()
        docs = [d.tolist() for d in np.split(self.flat, self.offsets[1:-1])]
        # The (ids, vocabulary) form: bm25s takes the ids as they are, no re-tokenizing. An
        # empty document is valid; a query never holds the empty token bm25s appends.
        retriever.index((docs, {t: i for i, t in enumerate(self.terms)}), show_progress=False)
        return retriever

    def save(self, path: Path) -> None:
        # Terms are [a-z0-9]+, so a newline joins them without escaping.
        np.savez(path, flat=self.flat, offsets=self.offsets,
                 terms=np.frombuffer("\n".join(self.terms).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path: Path) -> Corpus | None:
        try:
            with np.load(path) as saved:
                raw = saved["terms"].tobytes().decode()
                return cls(raw.split("\n") if raw else [], saved["flat"], saved["offsets"])
        except (OSError, ValueError, KeyError):
            return None


@dataclass
class LexicalIndex:
    ids: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    channels: list[list[str]] = field(default_factory=list)
    retriever: bm25s.BM25 | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    _positions: dict[str, int] = field(default_factory=dict)
    #: The chunks' tokens, for `updated`; None on an index loaded for searching.
    corpus: Corpus | None = None

    @classmethod
    def build(cls, ids: list[str], texts: list[str], doc_ids: list[str], channels: list[list[str]]) -> LexicalIndex:
        return cls._of(list(ids), list(doc_ids), [list(c) for c in channels], Corpus.of(texts))

    @classmethod
    def _of(cls, ids: list[str], doc_ids: list[str], channels: list[list[str]], corpus: Corpus) -> LexicalIndex:
        index = cls(ids, doc_ids, channels, corpus=corpus)
        if ids and corpus.terms:
            index.retriever = corpus.bm25()
        index._build_masks()
        return index

    def updated(self, removed: set[str], ids: Sequence[str], texts: Sequence[str], doc_ids: Sequence[str],
                channels: Sequence[Sequence[str]]) -> LexicalIndex:
        """A new index without the chunks in `removed` and with these added; only the added
        texts are tokenized. Needs `corpus` (see `load(..., with_corpus=True)`)."""
        if self.corpus is None or len(self.corpus) != len(self.ids):
            raise ValueError("this index has no corpus to update")
        keep = np.array([c not in removed for c in self.ids], dtype=bool)
        corpus = self.corpus.kept(keep).extended([tokens(t) for t in texts])
        kept = np.flatnonzero(keep)
        return self._of([self.ids[i] for i in kept] + list(ids), [self.doc_ids[i] for i in kept] + list(doc_ids),
                        [self.channels[i] for i in kept] + [list(c) for c in channels], corpus)

    def searchable(self) -> LexicalIndex:
        """The same index without its corpus, which only `updated` needs."""
        return dataclasses.replace(self, corpus=None)

    def position(self, chunk_id: str) -> int | None:
        return self._positions.get(chunk_id)

    def allows(self, chunk_id: str, channel: str) -> bool:
        """Whether `channel` may see this chunk; False for a chunk it does not know."""
        pos = self._positions.get(chunk_id)
        mask = self.masks.get(channel)
        return pos is not None and mask is not None and bool(mask[pos])

    def _build_masks(self) -> None:
        self._positions = {chunk_id: i for i, chunk_id in enumerate(self.ids)}
        names = {c for chans in self.channels for c in chans}
        self.masks = {
            name: np.array([name in chans for chans in self.channels], dtype=np.float32) for name in names
        }
        # "all": chunks every channel may see (for callers outside the known channels).
        self.masks["all"] = np.array([set(ALL_CHANNELS) <= set(c) for c in self.channels], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def score_all(self, query: str, channel: str | None = None) -> np.ndarray | None:
        """BM25 scores of every chunk for `query` (zero where `channel` is not allowed)."""
        if self.retriever is None or not self.ids:
            return None
        words = tokens(query)
        if not words:
            return np.zeros(len(self.ids), dtype=np.float32)
        mask = None
        if channel is not None:
            mask = self.masks.get(channel)
            if mask is None:
                return np.zeros(len(self.ids), dtype=np.float32)
        return self.retriever.get_scores(words, weight_mask=mask)

    def top(self, scores: np.ndarray | None, k: int) -> list[tuple[str, float]]:
        """The `k` best (chunk id, score) with a positive score, best first."""
        if scores is None or not len(scores):
            return []
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def search(self, query: str, k: int, channel: str | None = None) -> list[tuple[str, float]]:
        """The top `k` chunk ids with a positive BM25 score, allowed in `channel` if given."""
        return self.top(self.score_all(query, channel), k)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(folder.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        if self.retriever is not None:
            self.retriever.save(str(staging / "bm25"), show_progress=False)
        if self.corpus is not None:
            self.corpus.save(staging / "corpus.npz")
        sidecar = {"ids": self.ids, "doc_ids": self.doc_ids, "channels": self.channels}
        (staging / "chunks.json").write_text(json.dumps(sidecar))
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path, *, with_corpus: bool = False) -> LexicalIndex | None:
        """The saved index, or None if there is none or it is damaged. `with_corpus` also
        reads the chunks' tokens (absent from an index saved without them)."""
        folder = Path(folder)
        try:
            sidecar = json.loads((folder / "chunks.json").read_text())
        except (OSError, ValueError):
            return None
        index = cls(sidecar["ids"], sidecar["doc_ids"], sidecar["channels"])
        if index.ids and (folder / "bm25").exists():  # absent when no chunk had a single term
            try:
                index.retriever = bm25s.BM25.load(str(folder / "bm25"), show_progress=False, verbosity=0)
            except (OSError, ValueError, KeyError):
                return None
        if with_corpus:
            index.corpus = Corpus.load(folder / "corpus.npz")
        index._build_masks()
        return index
