"""Per-tenant storage: a Chroma collection (vectors) and a bm25s index (words) over one chunk set.

Every entry of the collection is one passage of a chunk, with id `<chunk id>#<n>` and that
passage's vector. Entry `#0` also carries the chunk: its full text as the document and all of
its metadata. So vector search runs over passages with no filter at all, and a chunk is
fetched by id. (Chroma `where` filters cost 100–200 ms per query at 10,000 chunks on the
target machine, against ~3 ms for a plain query, so the hot path uses none: channel filtering
happens on the in-memory chunk catalogue that the BM25 index keeps anyway, with a filtered
Chroma query as the fallback.)

Vectors are always computed by Deskhand's encoder and passed in. No Chroma embedding function
is ever attached (`embedding_function=None`), so Chroma never loads or downloads its default
model. Chroma holds the source of truth (text, metadata, vectors). After a reload the BM25
index is updated from the chunks that reload added and deleted (kb_loader/lexical.py says
what that saves); whenever the saved index does not hold exactly the chunks Chroma held before
the change, it is rebuilt from Chroma instead, so the two cannot drift apart.

Writes go to Chroma in batches of its own maximum (`client.get_max_batch_size()`, 5,461 rows
here), not one call per article.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np

from kb_loader.chunker import Chunk, Passage, index_text
from kb_loader.freshness import safe_name
from kb_loader.lexical import Corpus, LexicalIndex
from kb_loader.loaders import ALL_CHANNELS

RRF_K = 60
#: Pseudo-channel for a caller whose channel is not a Deskhand channel: it sees only chunks
#: that every channel may see.
PUBLIC = "all"
_PAGE = 2000  # rows per Chroma get call
LAYOUT = 3  # bump when the collection's entry layout changes: old collections are rebuilt


def open_chroma(path: Path) -> chromadb.ClientAPI:
    """The one way Deskhand opens Chroma: the same settings every time (Chroma refuses a
    second client on one path with different settings), telemetry off."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(
        path=str(path), settings=chromadb.Settings(anonymized_telemetry=False, allow_reset=False)
    )


def collection_name(tenant_id: str) -> str:
    # Chroma names: 3-512 of [A-Za-z0-9._-], starting and ending alphanumeric.
    digest = hashlib.sha1(tenant_id.encode()).hexdigest()[:8]
    return f"kb-{safe_name(tenant_id)}-{digest}"


def _channel_flags(channels: Sequence[str]) -> dict[str, bool]:
    # One boolean per channel, so Chroma can filter with a plain equality `where`.
    flags = {f"ch_{channel}": channel in channels for channel in ALL_CHANNELS}
    flags[f"ch_{PUBLIC}"] = set(ALL_CHANNELS) <= set(channels)
    return flags


def entry_id(chunk_id: str, n: int = 0) -> str:
    return f"{chunk_id}#{n}"


def split_entry_id(entry: str) -> tuple[str, int]:
    chunk_id, _, n = entry.rpartition("#")
    return chunk_id, int(n)


def chunk_metadata(chunk: Chunk, embed_hash: str) -> dict[str, Any]:
    return {
        "n": 0, "chunk_id": chunk.id, "doc_id": chunk.doc_id, "title": chunk.title,
        "section": chunk.section, "source": chunk.source, "url": chunk.url, "updated_at": chunk.updated_at,
        "allowed_channels": ",".join(chunk.allowed_channels), "ordinal": chunk.ordinal,
        "tokens": chunk.tokens, "content_hash": chunk.content_hash, "embed_hash": embed_hash,
        "passages": json.dumps([[p.start, p.end, p.section] for p in chunk.passages]),
        **_channel_flags(chunk.allowed_channels),
    }


def passages_of(meta: dict[str, Any]) -> list[Passage]:
    return [Passage(s, e, sec) for s, e, sec in json.loads(meta.get("passages") or "[]")]


def embed_hash(chunk: Chunk, encoder_name: str) -> str:
    """Changes exactly when the chunk's vectors would: its passage texts or the encoder."""
    return hashlib.sha256("\x00".join([encoder_name, *chunk.passage_texts()]).encode()).hexdigest()


@dataclass
class Stored:
    ids: list[str]
    documents: list[str]
    metadatas: list[dict[str, Any]]


class TenantIndex:
    """One tenant's collection and BM25 index. Searches may run concurrently with each other
    and with a reload; the BM25 object is swapped whole after a reload."""

    def __init__(self, client: chromadb.ClientAPI, home: Path, tenant_id: str, encoder_name: str, dim: int):
        self.client = client
        self.tenant_id = tenant_id
        self.encoder_name = encoder_name
        self.dim = dim
        self.lexical_dir = Path(home) / "bm25" / safe_name(tenant_id)
        self._collection = None
        self._lexical: LexicalIndex | None = None
        self._stamp: int | None = None
        self._lock = threading.Lock()

    @property
    def collection(self):
        if self._collection is None:
            with self._lock:
                if self._collection is None:
                    self._collection = self._open_collection()
        return self._collection

    def _open_collection(self):
        name = collection_name(self.tenant_id)
        meta = {"tenant_id": self.tenant_id, "encoder": self.encoder_name, "dim": self.dim, "layout": LAYOUT}
        col = self.client.get_or_create_collection(
            name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}, metadata=meta
        )
        existing = col.metadata or {}
        if any(existing.get(k) != meta[k] for k in ("encoder", "dim", "layout")):
            # Vectors from another encoder are not comparable: start this tenant afresh.
            self.client.delete_collection(name)
            col = self.client.create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}, metadata=meta
            )
        return col

    def count(self) -> int:
        """Number of chunks (entry #0 of each)."""
        return len(self.collection.get(where={"n": 0}, include=[])["ids"])

    def stored(self, *, with_documents: bool = False, ids: Sequence[str] | None = None) -> Stored:
        """Chunks (text and metadata): all of them, or those with these ids, in no set order."""
        include = ["metadatas"] + (["documents"] if with_documents else [])
        out = Stored([], [], [])
        if ids is not None:
            pages: Iterable = (
                {"ids": [entry_id(c) for c in ids[i : i + _PAGE]]} for i in range(0, len(ids), _PAGE))
        else:
            pages = ({"where": {"n": 0}, "limit": _PAGE, "offset": off}
                     for off in range(0, self.collection.count(), _PAGE))
        for page in pages:
            got = self.collection.get(include=include, **page)
            if not got["ids"]:
                if ids is None:
                    break
                continue
            out.ids.extend(split_entry_id(e)[0] for e in got["ids"])
            out.metadatas.extend(got["metadatas"] or [])
            if with_documents:
                out.documents.extend(got["documents"] or [])
        return out

    def passage_vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Each chunk's passage vectors, (n, dim), in passage order."""
        found: dict[str, dict[int, np.ndarray]] = {}
        for i in range(0, len(chunk_ids), _PAGE):
            got = self.collection.get(where={"chunk_id": {"$in": list(chunk_ids[i : i + _PAGE])}},
                                      include=["embeddings"])
            for entry, vec in zip(got["ids"], got["embeddings"] if got["ids"] else []):
                chunk_id, n = split_entry_id(entry)
                found.setdefault(chunk_id, {})[n] = np.asarray(vec, dtype=np.float32)
        return {c: np.vstack([v[k] for k in sorted(v)]) for c, v in found.items()}

    def write_batch(self) -> int:
        """Rows per Chroma upsert: the most the client takes in one call."""
        return max(1, int(self.client.get_max_batch_size()))

    def add(self, chunks: Sequence[Chunk], hashes: Sequence[str], passage_vectors: Sequence[np.ndarray]) -> None:
        """Upsert chunks with their passage vectors (one (n_passages, dim) array per chunk),
        in batches of `write_batch()` rows."""
        batch = self.write_batch()
        ids: list[str] = []
        docs: list[str] = []
        metas: list[dict[str, Any]] = []
        vecs: list[np.ndarray] = []

        def flush() -> None:
            if ids:
                self.collection.upsert(ids=ids[:batch], documents=docs[:batch], metadatas=metas[:batch],
                                       embeddings=np.vstack(vecs[:batch]))
                del ids[:batch], docs[:batch], metas[:batch], vecs[:batch]

        for chunk, h, pv in zip(chunks, hashes, passage_vectors):
            flags = _channel_flags(chunk.allowed_channels)
            for n, text in enumerate(chunk.passage_texts()):
                ids.append(entry_id(chunk.id, n))
                if n == 0:
                    docs.append(chunk.text)
                    metas.append(chunk_metadata(chunk, h))
                else:
                    docs.append(text)
                    metas.append({"n": n, "chunk_id": chunk.id, "doc_id": chunk.doc_id, **flags})
                vecs.append(pv[n][None, :])
            if len(ids) >= batch:
                flush()
        while ids:
            flush()

    def delete(self, chunk_ids: Sequence[str]) -> None:
        """Delete chunks, all their passages included."""
        for i in range(0, len(chunk_ids), _PAGE):
            self.collection.delete(where={"chunk_id": {"$in": list(chunk_ids[i : i + _PAGE])}})

    # --- lexical ------------------------------------------------------------------------

    @property
    def lexical(self) -> LexicalIndex:
        """The BM25 index, which is also the catalogue of chunk ids, doc ids and channels."""
        stamp = self._lexical_stamp()
        current = self._lexical
        if current is None or stamp != self._stamp:
            # First use, or another process (the CLI) saved a newer one.
            loaded = LexicalIndex.load(self.lexical_dir)
            if loaded is not None and (current is not None or len(loaded) == self.count()):
                self._lexical, self._stamp = loaded, stamp
            elif self.collection.count():
                self.rebuild_lexical()
            else:
                self._lexical, self._stamp = LexicalIndex(), stamp  # nothing indexed yet
            current = self._lexical
        assert current is not None
        return current

    def _lexical_stamp(self) -> int | None:
        try:
            return (self.lexical_dir / "chunks.json").stat().st_mtime_ns
        except OSError:
            return None

    def rebuild_lexical(self) -> LexicalIndex:
        rows = self.stored(with_documents=True)
        texts = [index_text(m["title"], m["section"], d) for m, d in zip(rows.metadatas, rows.documents)]
        channels = [str(m["allowed_channels"]).split(",") for m in rows.metadatas]
        fresh = LexicalIndex.build(rows.ids, texts, [m["doc_id"] for m in rows.metadatas], channels)
        self.set_lexical(fresh)
        return fresh

    def update_lexical(self, before: set[str], added: Sequence[Chunk], removed: Sequence[str]) -> LexicalIndex:
        """Bring the BM25 index in line after Chroma gained `added` and lost `removed`,
        tokenizing only the added chunks. `before` is the chunk ids Chroma held before: a
        saved index (or token corpus) that does not hold exactly those is rebuilt instead."""
        if before:
            base = LexicalIndex.load(self.lexical_dir, with_corpus=True)
        else:  # the first load: nothing to read back
            base = LexicalIndex(corpus=Corpus())
        if base is None or base.corpus is None or len(base.corpus) != len(base) or set(base.ids) != before:
            return self.rebuild_lexical()
        fresh = base.updated(set(removed), [c.id for c in added], [c.index_text for c in added],
                             [c.doc_id for c in added], [c.allowed_channels for c in added])
        self.set_lexical(fresh)
        return fresh

    def set_lexical(self, lexical: LexicalIndex) -> None:
        """Save `lexical` (with its token corpus) and search it from now on (without)."""
        lexical.save(self.lexical_dir)
        self._lexical, self._stamp = lexical.searchable(), self._lexical_stamp()

    # --- search -------------------------------------------------------------------------

    def vector_search(self, query_vector: np.ndarray, k: int, channel: str | None) -> list[tuple[str, float, int]]:
        """Top `k` chunks that `channel` may see, by their best passage:
        (chunk id, cosine, passage number), best first."""
        q = [np.asarray(query_vector, dtype=np.float32)]
        fetch = k * 4  # several passages of one chunk may rank high
        got = self.collection.query(query_embeddings=q, n_results=fetch, include=["distances"])
        best = self._best_per_chunk(got, channel, self.lexical)
        if channel is not None and len(best) < k and len(got["ids"][0]) == fetch:
            # Most of the nearest passages are hidden from this channel: ask Chroma to filter.
            got = self.collection.query(query_embeddings=q, n_results=fetch, where={f"ch_{channel}": True},
                                        include=["distances"])
            best = self._best_per_chunk(got, None, None)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:k]
        return [(chunk_id, cos, n) for chunk_id, (cos, n) in ranked]

    @staticmethod
    def _best_per_chunk(got: dict, channel: str | None, catalogue: LexicalIndex | None) -> dict[str, tuple[float, int]]:
        best: dict[str, tuple[float, int]] = {}
        for entry, dist in zip(got["ids"][0], got["distances"][0]):
            chunk_id, n = split_entry_id(entry)
            if chunk_id in best:
                continue
            if channel is not None and catalogue is not None and not catalogue.allows(chunk_id, channel):
                continue
            best[chunk_id] = (1.0 - float(dist), n)
        return best


def rrf(rankings: Sequence[Sequence[str]], k: int = RRF_K, weights: Sequence[float] | None = None) -> dict[str, float]:
    """Reciprocal-rank fusion: each list adds weight / (k + rank) to the ids it holds."""
    fused: dict[str, float] = {}
    for n, ranking in enumerate(rankings):
        w = 1.0 if weights is None else weights[n]
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + w / (k + rank)
    return fused
