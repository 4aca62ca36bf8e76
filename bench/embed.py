"""Encoder and indexing bench: sentences per second, query latency, and a 10,000-chunk reload.

Everything runs in a temporary directory on generated support-style text:

    .venv/bin/python bench/embed.py                      # defaults below
    .venv/bin/python bench/embed.py --chunks 10000 --chunk-words 60 --long-chunks 200

Prints one JSON object per measurement:

- `encode`: sentences/s for short sentences (8–25 words), batched and length-sorted;
- `query`: latency of encoding one query (p50/p95 ms);
- `index`: a full `KnowledgeBase.reload` of `--chunks` one-chunk documents of about
  `--chunk-words` words (load, chunk, embed, Chroma + BM25), then hybrid search latency on it;
- `index_long`: the same for `--long-chunks` documents of 512–800 tokens, which the encoder
  embeds as several 256-token windows each, to show the cost of full-size chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for JSON

from bot.config import Settings  # noqa: E402
from kb_loader.encoder import get_encoder  # noqa: E402
from kb_loader.kb import KnowledgeBase  # noqa: E402

VOCAB = (
    "order parcel refund return delivery carrier invoice payment card account password address "
    "shipping express standard pickup locker warehouse label customs voucher gift newsletter "
    "subscription discount basket checkout confirmation tracking damaged missing wrong size colour "
    "exchange credit bank transfer receipt business days week weekend store Berlin Germany Austria "
    "France customer support team agent chat email phone reply ticket status cancel fee charge "
    "the a an of to in on for with within after before your our we you it is are can will may not"
).split()


def sentence(rng: random.Random, lo: int = 8, hi: int = 25) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def paragraph(rng: random.Random, words: int) -> str:
    out, n = [], 0
    while n < words:
        s = sentence(rng)
        out.append(s)
        n += s.count(" ") + 1
    return " ".join(out)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_encoder(encoder, rng: random.Random, n: int) -> None:
    texts = [sentence(rng) for _ in range(n)]
    encoder.encode(texts[:8])
    t0 = time.perf_counter()
    encoder.encode(texts)
    dt = time.perf_counter() - t0
    print(json.dumps({"bench": "encode", "encoder": encoder.name, "sentences": n,
                      "sentences_per_s": round(n / dt, 1), "seconds": round(dt, 2)}), flush=True)
    lat = []
    for text in texts[:100]:
        t0 = time.perf_counter()
        encoder.encode([text])
        lat.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"bench": "query", "p50_ms": round(statistics.median(lat), 2),
                      "p95_ms": round(percentile(lat, 0.95), 2)}), flush=True)


def bench_index(name: str, n_docs: int, words: int, rng: random.Random, tmp: Path) -> None:
    folder = tmp / name
    folder.mkdir()
    for i in range(n_docs):
        topic = rng.choice(VOCAB[:40])
        body = f"# {topic.capitalize()} {i}\n\n" + "\n\n".join(
            paragraph(rng, min(words, 90)) for _ in range(max(1, words // 90)))
        (folder / f"doc{i:05d}.md").write_text(f"---\ntitle: {topic.capitalize()} article {i}\n---\n{body}\n")
    kb = KnowledgeBase(Settings(home=tmp / f"home-{name}", kb_dir=folder))
    kb.encoder.encode(["warm up"])
    t0 = time.perf_counter()
    report = kb.reload("bench")
    index_s = time.perf_counter() - t0
    queries = [" ".join(rng.choice(VOCAB[:60]) for _ in range(rng.randint(3, 9))) for _ in range(100)]
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        kb.search("bench", q, channel="slack_dm")
        lat.append((time.perf_counter() - t0) * 1000)
    tokens = report.chunks and sum(m["tokens"] for m in kb.index("bench").stored().metadatas) / report.chunks
    print(json.dumps({
        "bench": name, "docs": report.docs, "chunks": report.chunks, "mean_chunk_tokens": round(tokens, 1),
        "index_s": round(index_s, 2), "chunks_per_s": round(report.chunks / index_s, 1),
        "search_p50_ms": round(statistics.median(lat), 2), "search_p95_ms": round(percentile(lat, 0.95), 2),
    }), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--chunk-words", type=int, default=60)
    ap.add_argument("--long-chunks", type=int, default=200, help="0 to skip")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    encoder = get_encoder(Settings())
    bench_encoder(encoder, rng, args.sentences)
    with tempfile.TemporaryDirectory(prefix="deskhand-embed-bench-") as tmp:
        if args.chunks:
            bench_index("index", args.chunks, args.chunk_words, rng, Path(tmp))
        if args.long_chunks:
            bench_index("index_long", args.long_chunks, 560, rng, Path(tmp))


if __name__ == "__main__":
    main()
