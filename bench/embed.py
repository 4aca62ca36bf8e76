"""Encoder bench: the numpy, onnx and onnx-int8 runtimes of MiniLM side by side, in one run.

Everything runs in a temporary directory (the onnx graphs are built there, so their build
time is part of `load_s`); texts are cut from the demo help centre in fixtures/kb:

    .venv/bin/python bench/embed.py                          # all three, full sizes
    .venv/bin/python bench/embed.py --measure-chunks 2000    # time 2,000 short chunks, extrapolate
    .venv/bin/python bench/embed.py --reload                 # also a full KnowledgeBase.reload

Each measurement runs for every runtime in turn. Prints one JSON object per measurement and
runtime:

- `load`: seconds to get the encoder (first build of the onnx graph included);
- `parity`: cosine to the sentence-transformers vectors of tests/data/minilm_reference.json;
- `encode`: sentences/s for short sentences (8–25 words, length-sorted batches), on the
  query session (one thread) and with `bulk=True` (one thread per core);
- `query`: latency of encoding one query (p50/p95 ms);
- `index_short` / `index_long`: encode time of `--chunks` chunks of ~80 tokens and
  `--long-chunks` chunks of 512–800 tokens, with `bulk=True` as indexing calls it (`index_s`)
  and on the one-thread query session (`index_s_one_thread`); the numpy encoder is
  one-threaded either way. MiniLM reads the first 256 tokens of each, as in the index. With
  `--measure-chunks M` only M short chunks are timed and the seconds are extrapolated
  linearly to `--chunks` (`extrapolated: true`);
- `ratio`: each encoder against numpy;
- with `--reload`: the old end-to-end figure, a `KnowledgeBase.reload` (load, chunk, embed,
  Chroma + BM25) of `--reload-docs` one-chunk documents, then hybrid search latency.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for JSON

from bot.config import Settings  # noqa: E402
from kb_loader.encoder import get_encoder  # noqa: E402

RUNTIMES = ("numpy", "onnx", "onnx-int8")
REFERENCE = ROOT / "tests" / "data" / "minilm_reference.json"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def kb_sentences(folder: Path) -> list[str]:
    """The prose of the demo KB as sentences: front matter, markup and tags stripped."""
    sentences: list[str] = []
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".md", ".txt", ".html"):
            continue
        text = re.sub(r"^---\n.*?\n---\n", "", path.read_text(), flags=re.S)
        text = re.sub(r"<[^>]+>|[#*|`>_]+", " ", text)
        sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text) if len(s.split()) >= 4]
    return [" ".join(s.split()) for s in sentences]


def chunk_texts(sentences: list[str], tokenizer, n: int, lo: int, hi: int, rng: random.Random) -> list[str]:
    """n chunks of lo..hi tokens, each a run of consecutive KB sentences from a random start."""
    counts = [len(tokenizer.encode(s, add_special_tokens=False).ids) for s in sentences]
    out = []
    for _ in range(n):
        target, i, parts, tokens = rng.randint(lo, hi), rng.randrange(len(sentences)), [], 0
        while tokens < target:
            parts.append(sentences[i % len(sentences)])
            tokens += counts[i % len(sentences)]
            i += 1
        out.append(" ".join(parts))
    return out


def short_sentences(sentences: list[str], n: int, rng: random.Random) -> list[str]:
    pool = [s for s in sentences if 8 <= len(s.split()) <= 25]
    return [rng.choice(pool) for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def parity(encoder) -> dict:
    ref = json.loads(REFERENCE.read_text())
    expected = np.array([item["vector"] for item in ref["items"]], dtype=np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    cosines = (encoder.encode([item["text"] for item in ref["items"]]).astype(np.float64) * expected).sum(axis=1)
    return {"cosine_min": round(float(cosines.min()), 6), "cosine_mean": round(float(cosines.mean()), 6),
            "rows_below_0.9999": int((cosines < 0.9999).sum()), "rows_below_0.999": int((cosines < 0.999).sum())}


def bench_runtimes(runtimes: list[str], args, texts: dict[str, list[str]], tmp: Path) -> dict[str, dict]:
    """Each measurement runs for every runtime in turn, so that a change in the machine's load
    during the run falls on all of them rather than on whichever came last."""
    encoders, results = {}, {runtime: {} for runtime in runtimes}
    for runtime in runtimes:
        settings = Settings(home=tmp / "home", cache_dir=tmp / "cache", kb_encoder_runtime=runtime)
        load_s = timed(lambda s=settings: get_encoder(s))
        encoders[runtime] = encoder = get_encoder(settings)
        emit(bench="load", runtime=runtime, encoder=encoder.name, load_s=round(load_s, 2))
        emit(bench="parity", runtime=runtime, **parity(encoder))
        encoder.encode(texts["sentences"][:8])
        encoder.encode(texts["sentences"][:8], bulk=True)

    short = texts["sentences"]
    for runtime, encoder in encoders.items():
        res = results[runtime]
        res["sentences_per_s"] = round(len(short) / timed(lambda e=encoder: e.encode(short)), 1)
        res["sentences_per_s_bulk"] = round(len(short) / timed(lambda e=encoder: e.encode(short, bulk=True)), 1)
        emit(bench="encode", runtime=runtime, sentences=len(short), sentences_per_s=res["sentences_per_s"],
             sentences_per_s_bulk=res["sentences_per_s_bulk"])
    for runtime, encoder in encoders.items():
        lat = [timed(lambda t=t, e=encoder: e.encode([t])) * 1000 for t in short[:100]]
        emit(bench="query", runtime=runtime, p50_ms=round(statistics.median(lat), 2),
             p95_ms=round(percentile(lat, 0.95), 2))

    for name, chunks, target in (("index_short", texts["short"], args.chunks),
                                 ("index_long", texts["long"], args.long_chunks)):
        if not chunks:
            continue
        for runtime, encoder in encoders.items():
            res = results[runtime]
            seconds = timed(lambda c=chunks, e=encoder: e.encode(c, bulk=True))
            one_thread = timed(lambda c=chunks, e=encoder: e.encode(c))
            res[name + "_s"] = index_s = seconds * target / len(chunks)
            res[name + "_s_one_thread"] = one_thread * target / len(chunks)
            emit(bench=name, runtime=runtime, chunks=target, measured_chunks=len(chunks),
                 measured_s=round(seconds, 2), index_s=round(index_s, 2),
                 chunks_per_s=round(len(chunks) / seconds, 1),
                 index_s_one_thread=round(res[name + "_s_one_thread"], 2), extrapolated=len(chunks) != target)
    return results


def bench_reload(n_docs: int, rng: random.Random, sentences: list[str], tmp: Path) -> None:
    from kb_loader.kb import KnowledgeBase

    folder = tmp / "reload-kb"
    folder.mkdir()
    settings = Settings(home=tmp / "reload-home", cache_dir=tmp / "cache", kb_dir=folder)
    tokenizer = get_encoder(settings).tokenizer
    for i, body in enumerate(chunk_texts(sentences, tokenizer, n_docs, 60, 100, rng)):
        (folder / f"doc{i:05d}.md").write_text(f"---\ntitle: Article {i}\n---\n# Article {i}\n\n{body}\n")
    kb = KnowledgeBase(settings)
    kb.encoder.encode(["warm up"])
    t0 = time.perf_counter()
    report = kb.reload("bench")
    index_s = time.perf_counter() - t0
    lat = []
    for q in short_sentences(sentences, 100, rng):
        t0 = time.perf_counter()
        kb.search("bench", q, channel="slack_dm")
        lat.append((time.perf_counter() - t0) * 1000)
    emit(bench="reload", runtime=settings.kb_encoder_runtime, docs=report.docs, chunks=report.chunks,
         index_s=round(index_s, 2), chunks_per_s=round(report.chunks / index_s, 1),
         search_p50_ms=round(statistics.median(lat), 2), search_p95_ms=round(percentile(lat, 0.95), 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, from " + ", ".join(RUNTIMES))
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=10_000, help="short chunks (~80 tokens) to index")
    ap.add_argument("--measure-chunks", type=int, default=0,
                    help="time only this many short chunks and extrapolate to --chunks (0: all)")
    ap.add_argument("--long-chunks", type=int, default=500, help="chunks of 512-800 tokens; 0 to skip")
    ap.add_argument("--reload", action="store_true", help="also time a full KnowledgeBase.reload")
    ap.add_argument("--reload-docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if unknown := set(runtimes) - set(RUNTIMES):
        ap.error(f"unknown runtimes: {sorted(unknown)}")

    rng = random.Random(args.seed)
    import onnxruntime

    emit(bench="machine", cores=os.cpu_count(), load_average=[round(x, 2) for x in os.getloadavg()],
         onnxruntime=onnxruntime.__version__)
    sentences = kb_sentences(ROOT / "fixtures" / "kb")
    with tempfile.TemporaryDirectory(prefix="deskhand-embed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tokenizer = get_encoder(Settings(home=tmp / "home", kb_encoder_runtime="numpy")).tokenizer
        measured = min(args.measure_chunks or args.chunks, args.chunks)
        texts = {"sentences": short_sentences(sentences, args.sentences, rng),
                 "short": chunk_texts(sentences, tokenizer, measured, 70, 90, rng),
                 "long": chunk_texts(sentences, tokenizer, args.long_chunks, 512, 800, rng)}
        results = bench_runtimes(runtimes, args, texts, tmp)
        if "numpy" in results:
            base = results["numpy"]
            for runtime, res in results.items():
                emit(bench="ratio", runtime=runtime, against="numpy",
                     **{key: round(res[key] / base[key], 2) if key.startswith("sentences") else
                        round(base[key] / res[key], 2) for key in res if key in base})
        if args.reload:
            bench_reload(args.reload_docs, rng, sentences, tmp)


if __name__ == "__main__":
    main()
