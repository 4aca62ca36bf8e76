"""`QueryCache`: the vectors of recent query texts, kept by the local encoders.

A message's text is asked for by several parts of a turn: the intent classifier, the KB
search, and the drafter's passage scorer. Each asks the same process-wide encoder, so the
encoder keeps the vectors of the last few thousand short calls and the message is encoded
once. Bulk calls (indexing) and long batches pass straight through: they are never repeated.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

# A call with more texts than this is a batch (example vectors, passage candidates), not a query.
QUERY_TEXTS = 4
QUERY_CACHE_SIZE = 4096  # about 1.5 kB a vector with MiniLM: ~6 MB at most


class QueryCache:
    def __init__(self, size: int = QUERY_CACHE_SIZE):
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # texts actually encoded through the cache (for tests and benchmarks)

    def encode(self, texts: list[str], compute: Callable[..., np.ndarray], *, bulk: bool = False) -> np.ndarray:
        """The vectors of `texts`, computing only those not seen recently, in one call; a bulk
        call or a batch of more than QUERY_TEXTS goes straight to `compute`."""
        if bulk or not 0 < len(texts) <= QUERY_TEXTS:
            return compute(texts, bulk=bulk)
        texts = list(texts)
        with self._lock:
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
            for text in found:
                self._vectors.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = np.asarray(compute(missing), dtype=np.float32)
            with self._lock:
                self.computed += len(missing)
                for text, vector in zip(missing, fresh):
                    vector.setflags(write=False)  # shared by every caller: nobody may change it
                    self._vectors[text] = found[text] = vector
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts])
