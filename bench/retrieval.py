"""Retrieval bench: recall@1, recall@3 and MRR@10 of BM25-only, vector-only and hybrid search.

Runs the real pipeline (loader, chunker, encoder, Chroma, bm25s) in a temporary directory:
each corpus document becomes a Markdown file with front matter, the folder is reloaded into
a fresh index, and every query is searched three ways. Metrics are per document: a ranked
chunk list is collapsed to the first chunk of each document.

    .venv/bin/python bench/retrieval.py \\
        --corpus ../shared/data/retrieval/stackfaq_corpus.jsonl \\
        --queries ../shared/data/retrieval/stackfaq_queries_dev.jsonl

Prints one JSON object per method on its own line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import structlog
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for JSON

from bot.config import Settings  # noqa: E402
from kb_loader import retrieval  # noqa: E402
from kb_loader.kb import KnowledgeBase  # noqa: E402

TENANT = "bench"


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_corpus(docs: list[dict], folder: Path) -> None:
    for doc in docs:
        title = doc.get("title") or doc["doc_id"]
        front = yaml.safe_dump({"id": doc["doc_id"], "title": title}, allow_unicode=True)
        body = f"---\n{front}---\n# {title}\n\n{doc['text']}\n"
        (folder / f"{doc['doc_id']}.md").write_text(body, encoding="utf-8")


def doc_ranking(kb: KnowledgeBase, chunk_ids: list[str]) -> list[str]:
    if not chunk_ids:
        return []
    rows = kb.index(TENANT).stored(ids=chunk_ids)
    doc_of = {i: m["doc_id"] for i, m in zip(rows.ids, rows.metadatas)}
    seen: list[str] = []
    for chunk_id in chunk_ids:
        d = doc_of.get(chunk_id)
        if d is not None and d not in seen:
            seen.append(d)
    return seen


def metrics(rankings: list[list[str]], relevant: list[set[str]]) -> dict[str, float]:
    r1 = r3 = mrr = 0.0
    for ranked, rel in zip(rankings, relevant):
        r1 += bool(rel & set(ranked[:1]))
        r3 += bool(rel & set(ranked[:3]))
        mrr += next((1.0 / (k + 1) for k, d in enumerate(ranked[:10]) if d in rel), 0.0)
    n = max(1, len(rankings))
    return {"recall@1": round(r1 / n, 4), "recall@3": round(r3 / n, 4), "mrr@10": round(mrr / n, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N queries")
    ap.add_argument("--rerank", choices=retrieval.RERANKS, default=retrieval.DEFAULT_RERANK)
    ap.add_argument("--vector-weight", type=float, default=retrieval.VECTOR_WEIGHT)
    ap.add_argument("--lexical-weight", type=float, default=retrieval.LEXICAL_WEIGHT)
    args = ap.parse_args()

    docs = read_jsonl(args.corpus)
    queries = read_jsonl(args.queries)
    if args.limit:
        queries = queries[: args.limit]
    relevant = [set(q["relevant_doc_ids"]) for q in queries]

    with tempfile.TemporaryDirectory(prefix="deskhand-bench-") as tmp:
        corpus_dir = Path(tmp) / "corpus"
        corpus_dir.mkdir()
        write_corpus(docs, corpus_dir)
        settings = Settings(home=Path(tmp) / "home", kb_dir=corpus_dir)
        kb = KnowledgeBase.from_settings(settings)
        kb.encoder.encode(["warm up"])  # load the model outside the timings

        t0 = time.perf_counter()
        report = kb.reload(TENANT)
        index_s = time.perf_counter() - t0
        if report.errors:
            print(json.dumps({"load_errors": [e.model_dump() for e in report.errors]}), file=sys.stderr)
        idx = kb.index(TENANT)
        common = {"queries": len(queries), "docs": report.docs, "chunks": report.chunks,
                  "index_s": round(index_s, 2)}

        t0 = time.perf_counter()
        query_vectors = kb.encoder.encode([q["text"] for q in queries])
        encode_ms = (time.perf_counter() - t0) * 1000 / max(1, len(queries))

        results = {}
        t0 = time.perf_counter()
        runs = [retrieval.lexical_only(idx, q["text"], None, 10) for q in queries]
        results["bm25"] = (runs, (time.perf_counter() - t0) * 1000 / len(queries))

        t0 = time.perf_counter()
        runs = [retrieval.vector_only(idx, v, None, 10) for v in query_vectors]
        results["vector"] = (runs, (time.perf_counter() - t0) * 1000 / len(queries) + encode_ms)

        t0 = time.perf_counter()
        runs = [retrieval.hybrid(idx, q["text"], v, None, rerank=args.rerank,
                                 vector_weight=args.vector_weight, lexical_weight=args.lexical_weight).ids
                for q, v in zip(queries, query_vectors)]
        results["hybrid"] = (runs, (time.perf_counter() - t0) * 1000 / len(queries) + encode_ms)

        for method, (runs, per_query_ms) in results.items():
            ranked = [doc_ranking(kb, r) for r in runs]
            row = {"method": method, **metrics(ranked, relevant), **common,
                   "per_query_ms": round(per_query_ms, 2)}
            if method == "hybrid":
                row["rerank"] = args.rerank
                row["weights"] = [args.vector_weight, args.lexical_weight]
            print(json.dumps(row))

        # The full KnowledgeBase.search path (encode, both searches, fusion, citations).
        t0 = time.perf_counter()
        for q in queries[:100]:
            kb.search(TENANT, q["text"])
        n = min(100, len(queries))
        print(json.dumps({"method": "kb.search", "per_query_ms": round((time.perf_counter() - t0) * 1000 / n, 2),
                          "queries": n}))


if __name__ == "__main__":
    main()
