"""Hybrid retrieval: vector top 8 + BM25 top 8, fused by reciprocal rank, re-ranked to 3.

Both sides search only chunks allowed in the caller's channel. The vector side matches the
query against passages (sections of at most 200 tokens) and scores each chunk by its best
passage; the BM25 side scores whole chunks. Their top-8 lists are fused by reciprocal-rank
fusion (k=60) into a candidate set of at most 16 chunks. Every candidate then has both scores
(bm25s scores every chunk, and a BM25-only candidate's passages are compared with the query),
and the set is re-ranked by a blend of the two, each min-max scaled over the candidates:

    score = 0.8 * cosine' + 0.2 * bm25'

Plain RRF ranks a chunk that only one side found below one both sides found, whatever the
margins; on the StackFAQ dev set that cost recall against vector search alone. The blend keeps
the margins and lets BM25 lift exact-term matches. `bench/retrieval.py --rerank …` compares
the variants; the figures are in kb_loader/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bot.contracts import Citation
from kb_loader.index import RRF_K, TenantIndex, passages_of, rrf
from kb_loader.lexical import tokens
from kb_loader.models import KBHit

CANDIDATES = 8
SNIPPET_CHARS = 240
RERANKS = ("rrf", "rerank", "blend", "cosine")
DEFAULT_RERANK = "blend"
VECTOR_WEIGHT = 4.0  # blend: alpha = 4 / (4 + 1) = 0.8
LEXICAL_WEIGHT = 1.0


@dataclass
class Ranked:
    ids: list[str]
    scores: dict[str, float]
    cosine: dict[str, float]  # of the chunk's best passage
    best_passage: dict[str, int]


def vector_only(index: TenantIndex, query_vector: np.ndarray, channel: str | None, k: int) -> list[str]:
    return [i for i, _, _ in index.vector_search(query_vector, k, channel)]


def lexical_only(index: TenantIndex, query: str, channel: str | None, k: int) -> list[str]:
    return [i for i, _ in index.lexical.search(query, k, channel)]


def hybrid(
    index: TenantIndex, query: str, query_vector: np.ndarray, channel: str | None, *,
    candidates: int = CANDIDATES, rerank: str = DEFAULT_RERANK,
    vector_weight: float = VECTOR_WEIGHT, lexical_weight: float = LEXICAL_WEIGHT,
) -> Ranked:
    """All fused candidates, best first, with their scores and cosines."""
    vec = index.vector_search(query_vector, candidates, channel)
    lexical = index.lexical
    bm25 = lexical.score_all(query, channel)
    lex = lexical.top(bm25, candidates)
    vec_ids = [i for i, _, _ in vec]
    fused = rrf([vec_ids, [i for i, _ in lex]], k=RRF_K)
    if not fused:
        return Ranked([], {}, {}, {})
    cosine = {i: cos for i, cos, _ in vec}
    best_passage = {i: n for i, _, n in vec}
    missing = [i for i in fused if i not in cosine]
    if missing:
        # Chunks only BM25 found: score their passages against the query too.
        q = np.asarray(query_vector, np.float32)
        for chunk_id, vectors in index.passage_vectors(missing).items():
            sims = vectors @ q
            best_passage[chunk_id] = int(np.argmax(sims))
            cosine[chunk_id] = float(sims[best_passage[chunk_id]])
    ids = [i for i in fused if i in cosine]
    if rerank == "rrf":
        weighted = rrf([vec_ids, [i for i, _ in lex]], k=RRF_K, weights=[vector_weight, lexical_weight])
        scores = {i: weighted[i] for i in ids}
    elif rerank == "cosine":
        scores = {i: cosine[i] for i in ids}
    elif rerank == "rerank":
        lexical_score = {}
        for i in ids:
            pos = lexical.position(i)
            lexical_score[i] = float(bm25[pos]) if bm25 is not None and pos is not None else 0.0
        by_cos = sorted(ids, key=lambda i: -cosine[i])
        by_lex = sorted(ids, key=lambda i: -lexical_score[i])
        scores = rrf([by_cos, by_lex], k=RRF_K, weights=[vector_weight, lexical_weight])
    elif rerank == "blend":
        lexical_score = {}
        for i in ids:
            pos = lexical.position(i)
            lexical_score[i] = float(bm25[pos]) if bm25 is not None and pos is not None else 0.0
        alpha = vector_weight / (vector_weight + lexical_weight)
        cos_n, lex_n = _minmax(cosine, ids), _minmax(lexical_score, ids)
        scores = {i: alpha * cos_n[i] + (1 - alpha) * lex_n[i] for i in ids}
    else:
        raise ValueError(f"unknown rerank {rerank!r}; one of {RERANKS}")
    order = sorted(ids, key=lambda i: (-scores[i], -cosine[i]))
    return Ranked(order, scores, cosine, best_passage)


def _minmax(values: dict[str, float], ids: list[str]) -> dict[str, float]:
    lo = min(values[i] for i in ids)
    hi = max(values[i] for i in ids)
    span = hi - lo
    return {i: (values[i] - lo) / span if span > 0 else 1.0 for i in ids}


def to_hits(index: TenantIndex, ranked: Ranked, query: str, top_k: int, channel: str | None) -> list[KBHit]:
    chosen = ranked.ids[: max(0, top_k)]
    if not chosen:
        return []
    rows = index.stored(ids=chosen, with_documents=True)
    by_id = {i: (m, d) for i, m, d in zip(rows.ids, rows.metadatas, rows.documents)}
    hits = []
    for chunk_id in chosen:
        if chunk_id not in by_id:
            continue  # deleted by a concurrent reload
        meta, text = by_id[chunk_id]
        if channel and meta.get(f"ch_{channel}") is not True:
            continue  # never return a chunk the channel may not see
        passages = passages_of(meta)
        n = ranked.best_passage.get(chunk_id, 0)
        span = passages[n] if 0 <= n < len(passages) else None
        citation = Citation(
            doc_id=meta["doc_id"], title=meta["title"], url=meta["url"],
            # The section of the passage that matched, which is what the answer draws on.
            section=span.section if span and span.section else meta["section"],
            snippet=snippet(text[span.start : span.end] if span else text, query),
        )
        hits.append(KBHit(
            citation=citation, score=round(ranked.scores[chunk_id], 6),
            relevance=float(min(1.0, max(0.0, ranked.cosine[chunk_id]))), text=text,
            passage=(text[span.start : span.end] if span else text).strip(), chunk_id=chunk_id,
        ))
    return hits


_SPAN = re.compile(r"[^\n]+?(?:[.!?](?=\s)|$)", re.M)


def snippet(text: str, query: str, limit: int = SNIPPET_CHARS) -> str:
    """A verbatim excerpt of `text`: the sentence sharing the most words with the query, plus
    what follows it, up to `limit` characters (cut at a word boundary)."""
    wanted = set(tokens(query))
    best_start, best_score = 0, -1
    for m in _SPAN.finditer(text):
        span = m.group(0).strip()
        if not span or span.startswith("#"):
            continue
        score = len(wanted & set(tokens(span)))
        if score > best_score:
            best_start, best_score = m.start() + (len(m.group(0)) - len(m.group(0).lstrip())), score
    excerpt = text[best_start : best_start + limit]
    if best_start + limit < len(text) and " " in excerpt:
        excerpt = excerpt[: excerpt.rfind(" ")]
    return excerpt.strip()
