"""Bulk embedding for reloads: a reload's passages, length-sorted, on every core.

Queries never come here: `KnowledgeBase.search` calls `encoder.encode` on its own thread, and
numpy's BLAS stays at one thread (kb_loader/encoder.py `limit_blas_threads`), which is what a
single query's small products want. A reload embeds through `BulkEmbedder.embed` instead:

- the numpy encoder (`BertEncoder`) gets batches on a pool of threads, one per core: its
  forward pass is matrix products and ufuncs, which release the GIL, and each thread's BLAS
  call stays single-threaded, so the threads run side by side without changing the BLAS
  setting that queries running meanwhile see (BLAS threads are process-wide);
- any other encoder is called in slices on the calling thread with `encode(texts, bulk=True)`,
  which lets it use every core its own way (the onnxruntime encoder opens a session with one
  thread per core; an HTTP endpoint ignores it). An encoder whose `encode` takes no `bulk`
  is called plainly.

Texts are sorted by token count first, so each batch pads to nearly its own length.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from kb_loader.encoder import BertEncoder, Encoder, length_batches

#: Name prefix of the pool's threads (they exist only while a reload embeds).
THREAD_PREFIX = "kb-bulk"
SLICE_TEXTS = 256  # texts per call where the encoder batches for itself
DEFAULT_BATCH_TOKENS = 4096  # padded tokens per batch when the encoder does not say

#: progress(done, total), in texts.
BulkProgress = Callable[[int, int], None]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BulkEmbedder:
    """Embeds many texts at once for a reload. `workers` threads for the numpy encoder
    (1: on the calling thread, no pool); other encoders ignore it."""

    def __init__(self, encoder: Encoder, workers: int):
        self.encoder = encoder
        self.workers = max(1, int(workers))

    def embed(self, texts: Sequence[str], progress: BulkProgress | None = None) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, in input order."""
        report = progress or (lambda done, total: None)
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        if isinstance(self.encoder, BertEncoder):
            return self._in_batches(texts, report)
        encode = self.encoder.encode
        if "bulk" in inspect.signature(encode).parameters:
            return self._in_slices(lambda part: encode(part, bulk=True), texts, report)
        return self._in_slices(encode, texts, report)

    def _in_slices(self, encode: Callable[[list[str]], np.ndarray], texts: list[str],
                   report: BulkProgress) -> np.ndarray:
        order = self._by_length(texts)
        out: np.ndarray | None = None
        for start in range(0, len(order), SLICE_TEXTS):
            part = order[start : start + SLICE_TEXTS]
            vectors = np.asarray(encode([texts[i] for i in part]), dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[part] = vectors
            report(min(start + SLICE_TEXTS, len(order)), len(order))
        assert out is not None
        return out

    def _in_batches(self, texts: list[str], report: BulkProgress) -> np.ndarray:
        encoder = self.encoder
        out = np.empty((len(texts), encoder.dim), dtype=np.float32)
        batches = self.batches(texts)
        done = 0
        if self.workers == 1:
            for batch in batches:
                out[batch] = encoder.encode([texts[i] for i in batch])
                done += len(batch)
                report(done, len(texts))
            return out
        with ThreadPoolExecutor(self.workers, thread_name_prefix=THREAD_PREFIX) as pool:
            # Longest batches first, so the pool does not end waiting on one slow batch.
            futures = {pool.submit(encoder.encode, [texts[i] for i in batch]): batch for batch in reversed(batches)}
            for future in as_completed(futures):
                batch = futures[future]
                out[batch] = future.result()
                done += len(batch)
                report(done, len(texts))
        return out

    def batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Index arrays into `texts`, shortest texts first, each batch within the encoder's
        padded-token budget (`batch_tokens`), as `BertEncoder.encode` batches."""
        budget = int(getattr(self.encoder, "batch_tokens", DEFAULT_BATCH_TOKENS))
        return list(length_batches(self._lengths(texts), budget))

    def _by_length(self, texts: Sequence[str]) -> np.ndarray:
        return np.argsort(self._lengths(texts), kind="stable")

    def _lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's encoder input length: its tokens, plus [CLS] and [SEP], truncated."""
        limit = int(getattr(self.encoder, "max_seq_length", 1 << 30))
        counted = self.encoder.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return np.minimum(np.array([len(e.ids) + 2 for e in counted], dtype=np.int64), limit)
