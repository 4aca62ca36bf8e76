"""Indexing bench: a reload on the serial path against the bulk path, and BM25 update vs rebuild.

Everything runs in a temporary directory on generated help-centre articles, with the numpy
encoder:

    .venv/bin/python bench/index.py                              # defaults below
    .venv/bin/python bench/index.py --short 400 --long 80 --repeats 3
    .venv/bin/python bench/index.py --short 0 --long 0           # only the BM25 figures

Prints one JSON object per measurement:

- `reload_short` / `reload_long`: a full `KnowledgeBase.reload` (load, chunk, embed, Chroma,
  BM25) of `--short` one-chunk articles of ~80 tokens and `--long` articles whose chunks
  hold ~600 tokens (about four passages each), once with `bulk_workers=1` (the serial path:
  every batch on the calling thread) and once with the default (one thread per core), in
  alternating order, `--repeats` times; the best run of each. `ratio` is bulk over serial
  chunks/s. `cores` says how many the bulk path had.
- `lexical`: at `--lexical-chunks` chunks (vectors are random: only BM25 is timed), the
  full rebuild from Chroma (read every chunk, tokenize, index) against the update after one
  article changed (the token corpus, one chunk tokenized, the bm25s matrix rebuilt), and the
  Chroma write of all chunks in batches of `get_max_batch_size()`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for JSON

from bot.config import Settings  # noqa: E402
from kb_loader.bulk import usable_cores  # noqa: E402
from kb_loader.chunker import chunk_document  # noqa: E402
from kb_loader.encoder import get_encoder  # noqa: E402
from kb_loader.index import embed_hash  # noqa: E402
from kb_loader.kb import KnowledgeBase  # noqa: E402
from kb_loader.loaders import load_folder  # noqa: E402

WORDS = (
    "refund parcel courier invoice voucher locker pickup label customs warehouse tracking "
    "return exchange basket checkout payment card wallet transfer account password login "
    "address postcode delivery express standard weekend holiday damaged missing size colour "
    "receipt credit discount newsletter subscription cancel fee store agent ticket reply "
    "your our the a of to in on for with within after before can will may not is are"
).split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 22))).capitalize() + "."


def article(rng: random.Random, n: int, words: int) -> str:
    """One article of about `words` words, in paragraphs of about 90."""
    paragraphs, paragraph, count = [], [], 0
    while count < words:
        s = sentence(rng)
        paragraph.append(s)
        count += s.count(" ") + 1
        if sum(p.count(" ") + 1 for p in paragraph) >= 90:
            paragraphs.append(" ".join(paragraph))
            paragraph = []
    if paragraph:
        paragraphs.append(" ".join(paragraph))
    topic = rng.choice(WORDS[:30])
    body = "\n\n".join(paragraphs)
    return f"---\ntitle: {topic.capitalize()} article {n}\n---\n# {topic.capitalize()} {n}\n\n{body}\n"


def write_articles(folder: Path, n: int, words: int, seed: int) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"article{i:05d}.md").write_text(article(rng, i, words))
    return folder


def timed_reload(folder: Path, home: Path, encoder, workers: int | None) -> tuple[float, int, float]:
    kb = KnowledgeBase(Settings(home=home, kb_dir=folder), encoder=encoder, bulk_workers=workers)
    t0 = time.perf_counter()
    report = kb.reload("bench")
    seconds = time.perf_counter() - t0
    tokens = sum(m["tokens"] for m in kb.index("bench").stored().metadatas) / max(report.chunks, 1)
    kb.close()
    return seconds, report.chunks, tokens


def bench_reload(name: str, n_docs: int, words: int, repeats: int, encoder, tmp: Path) -> None:
    folder = write_articles(tmp / name, n_docs, words, seed=len(name))
    best: dict[str, float] = {}
    chunks, tokens = 0, 0.0
    for r in range(repeats):
        # Alternate which path goes first, so drifting machine load hits both alike.
        for path in (("serial", "bulk") if r % 2 == 0 else ("bulk", "serial")):
            seconds, chunks, tokens = timed_reload(folder, tmp / f"home-{name}-{path}-{r}", encoder,
                                                   1 if path == "serial" else None)
            best[path] = min(best.get(path, seconds), seconds)
    serial, bulk = chunks / best["serial"], chunks / best["bulk"]
    print(json.dumps({
        "bench": name, "chunks": chunks, "mean_chunk_tokens": round(tokens, 1), "cores": usable_cores(),
        "serial_s": round(best["serial"], 2), "bulk_s": round(best["bulk"], 2),
        "serial_chunks_per_s": round(serial, 1), "bulk_chunks_per_s": round(bulk, 1),
        "ratio": round(bulk / serial, 2),
    }), flush=True)


def bench_lexical(n_chunks: int, words: int, encoder, tmp: Path) -> None:
    folder = write_articles(tmp / "lexical", n_chunks, words, seed=7)
    chunks = [c for doc in load_folder(folder).documents for c in chunk_document(doc, encoder.tokenizer)]
    kb = KnowledgeBase(Settings(home=tmp / "home-lexical", kb_dir=folder), encoder=encoder)
    idx = kb.index("bench")
    rng = np.random.default_rng(0)

    def random_vectors(chunk):
        v = rng.standard_normal((len(chunk.passages), encoder.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    t0 = time.perf_counter()
    idx.add(chunks, [embed_hash(c, encoder.name) for c in chunks], [random_vectors(c) for c in chunks])
    write_s = time.perf_counter() - t0
    rows = sum(len(c.passages) for c in chunks)

    t0 = time.perf_counter()
    idx.rebuild_lexical()
    rebuild_s = time.perf_counter() - t0

    # One article changes: its chunk is replaced, as a reload does it.
    old = chunks[len(chunks) // 2]
    new = replace(old, id=old.id + "-v2", text=old.text + " Lockers now open on Sundays.")
    before = set(idx.stored().ids)
    idx.add([new], [embed_hash(new, encoder.name)], [random_vectors(new)])
    idx.delete([old.id])
    t0 = time.perf_counter()
    updated = idx.update_lexical(before, [new], [old.id])
    update_s = time.perf_counter() - t0
    assert len(updated) == len(chunks) and updated.search("sundays", 1)[0][0] == new.id
    print(json.dumps({
        "bench": "lexical", "chunks": len(chunks),
        "mean_chunk_tokens": round(sum(c.tokens for c in chunks) / len(chunks), 1),
        "rebuild_s": round(rebuild_s, 3), "update_one_article_s": round(update_s, 3),
        "ratio": round(rebuild_s / update_s, 1),
        "chroma_write_s": round(write_s, 2), "chroma_rows": rows, "chroma_batch": idx.write_batch(),
    }), flush=True)
    kb.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, default=200, help="articles of ~80 tokens (0 to skip)")
    ap.add_argument("--long", type=int, default=40, help="articles of ~600 tokens (0 to skip)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lexical-chunks", type=int, default=10_000, help="0 to skip")
    ap.add_argument("--lexical-words", type=int, default=60, help="words per article of the BM25 bench")
    args = ap.parse_args()
    encoder = get_encoder(Settings(kb_encoder="minilm", kb_encoder_runtime="numpy"))
    encoder.encode(["warm up"])
    with tempfile.TemporaryDirectory(prefix="deskhand-index-bench-") as tmp:
        if args.short:
            bench_reload("reload_short", args.short, 60, args.repeats, encoder, Path(tmp))
        if args.long:
            bench_reload("reload_long", args.long, 500, args.repeats, encoder, Path(tmp))
        if args.lexical_chunks:
            bench_lexical(args.lexical_chunks, args.lexical_words, encoder, Path(tmp))


if __name__ == "__main__":
    main()
