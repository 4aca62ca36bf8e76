"""The lexical side of retrieval: a bm25s index over the same chunks as the vector index.

Words are lower-cased, English stop words dropped, and suffixes trimmed by a small stemmer
(plurals, -ed, -ing) so "refunds", "refunded" and "refund" meet. The index and a sidecar
(`chunks.json`: chunk ids, doc ids, allowed channels) are saved side by side and swapped into
place as a whole, so a reader never sees half of a save.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from kb_loader.loaders import ALL_CHANNELS

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(STOPWORDS_EN)


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
class LexicalIndex:
    ids: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    channels: list[list[str]] = field(default_factory=list)
    retriever: bm25s.BM25 | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    _positions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, ids: list[str], texts: list[str], doc_ids: list[str], channels: list[list[str]]) -> LexicalIndex:
        index = cls(list(ids), list(doc_ids), [list(c) for c in channels])
        if ids:
            index.retriever = bm25s.BM25()
            # An empty token list is valid (bm25s adds an empty-token placeholder).
            index.retriever.index([tokens(t) for t in texts], show_progress=False)
        index._build_masks()
        return index

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
        sidecar = {"ids": self.ids, "doc_ids": self.doc_ids, "channels": self.channels}
        (staging / "chunks.json").write_text(json.dumps(sidecar))
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex | None:
        folder = Path(folder)
        try:
            sidecar = json.loads((folder / "chunks.json").read_text())
        except (OSError, ValueError):
            return None
        index = cls(sidecar["ids"], sidecar["doc_ids"], sidecar["channels"])
        if index.ids:
            try:
                index.retriever = bm25s.BM25.load(str(folder / "bm25"), show_progress=False, verbosity=0)
            except (OSError, ValueError, KeyError):
                return None
        index._build_masks()
        return index
