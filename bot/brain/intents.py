"""The offline intent classifier: nearest labelled examples, with a confidence.

Examples are the Bitext customer-support utterances (27 intents, `data/bitext_intents.jsonl`,
CDLA-Sharing-1.0). Features are TF-IDF weighted word unigrams, bigrams and in-word character
trigrams (so typos like "cacnel" still match), scored against every example through an
inverted index, and the top neighbours vote. `greeting`, `thanks` and `out_of_scope` are
decided by rules and by the similarity floor, since no examples exist for them.

With a sentence encoder (the knowledge base's all-MiniLM-L6-v2 by default), each example's
score is a weighted sum of its encoder cosine and its lexical score: the encoder catches
paraphrases the words miss, the words keep exact phrasings and typos close.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.brain.extract import AMOUNT, EMAIL, ORDER_ID

DATA = Path(__file__).parent / "data"
# Bitext's labelled utterances, plus Deskhand's own short everyday phrasings ("where is my
# order?") that the Bitext sample lacks.
EXAMPLE_FILES = (DATA / "bitext_intents.jsonl", DATA / "deskhand_examples.jsonl")

GREETING = re.compile(
    r"^\W*(hi|hello|hey|hiya|howdy|yo|good (morning|afternoon|evening)|greetings)\b[\w\s,!.']{0,20}$", re.I
)
THANKS = re.compile(
    r"^\W*(thanks?( you)?|thx|ty|cheers|much appreciated|great,? thanks?|perfect,? thanks?|"
    r"thank you( so much| very much)?)\b[\w\s,!.']{0,25}$", re.I
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class IntentGuess:
    intent: str
    confidence: float
    similarity: float
    runner_up: str | None = None


def load_examples(paths: tuple[Path, ...] = EXAMPLE_FILES) -> list[tuple[str, str]]:
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    return [(r["text"], r["intent"]) for r in rows]


def normalise(text: str) -> str:
    """Entities become placeholders: the digits of an order number say nothing of intent."""
    text = EMAIL.sub(" emailaddr ", text)
    text = AMOUNT.sub(" amountval ", text)
    return ORDER_ID.sub(" ordernum ", text)


def features(text: str) -> Counter:
    words = _WORD.findall(normalise(text).lower())
    feats: Counter = Counter()
    for w in words:
        feats["w:" + w] += 1
        padded = f"<{w}>"
        for i in range(len(padded) - 2):
            feats["c:" + padded[i : i + 3]] += 1
    for a, b in zip(words, words[1:]):
        feats[f"b:{a}_{b}"] += 1
    return feats


# Below this similarity to every known example, a message is out of scope. Chosen on the
# development data (bench/intents.py): about 0.5 % of in-domain messages fall below it.
LEXICAL_FLOOR = 0.40
SEMANTIC_FLOOR = 0.50
# Weight of the sentence-encoder cosine against the lexical score when an encoder is used.
SEMANTIC_WEIGHT = 0.4


def example_vectors(encoder, texts: list[str], cache_dir: Path | None = None) -> np.ndarray:
    """Encoder vectors of the labelled examples, kept in `cache_dir` (the settings'
    `cache_path`, under DESKHAND_HOME) by encoder and content: encoding a few thousand
    examples takes seconds, and every process needs them. None: computed, not kept."""
    if cache_dir is None:
        return np.asarray(encoder.encode(texts), dtype=np.float32)
    digest = hashlib.sha256((getattr(encoder, "name", "encoder") + "\n" + "\n".join(texts)).encode()).hexdigest()[:24]
    path = cache_dir / f"intent-vectors-{digest}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)  # concurrent processes may race; each writes a complete file
    return vectors


_DEFAULTS: dict[str, "IntentClassifier"] = {}
_DEFAULTS_LOCK = threading.Lock()


class IntentClassifier:
    def __init__(self, examples: list[tuple[str, str]], k: int = 7, floor: float | None = None,
                 encoder=None, semantic_weight: float = SEMANTIC_WEIGHT,
                 known_vectors: dict[str, np.ndarray] | None = None, cache_dir: Path | None = None):
        self.k = k
        # Bitext repeats templates with different numbers; after normalisation they are the
        # same example and would outvote everything else.
        seen: set[tuple[str, str]] = set()
        unique = []
        for text, label in examples:
            key = (normalise(text).lower().strip(), label)
            if key not in seen:
                seen.add(key)
                unique.append((text, label))
        examples = unique
        self.examples = examples
        self.encoder = encoder
        self.semantic_weight = semantic_weight if encoder is not None else 0.0
        self.floor = floor if floor is not None else (SEMANTIC_FLOOR if encoder is not None else LEXICAL_FLOOR)
        # `known_vectors` (normalised text -> vector) lets evaluation reuse one encoding
        # across cross-validation folds.
        texts = [normalise(t) for t, _ in examples]
        if encoder is None:
            self._vectors = None
        elif known_vectors is not None:
            self._vectors = np.stack([known_vectors[t] for t in texts])
        else:
            self._vectors = example_vectors(encoder, texts, cache_dir)
        self.labels = sorted({label for _, label in examples})
        self._label_of = np.array([self.labels.index(label) for _, label in examples])
        docs = [features(text) for text, _ in examples]
        df: Counter = Counter()
        for d in docs:
            df.update(d.keys())
        n = len(docs)
        self._idf = {f: math.log((1 + n) / (1 + c)) + 1.0 for f, c in df.items()}
        postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for i, d in enumerate(docs):
            weights = self._weigh(d)
            for f, w in weights.items():
                postings[f].append((i, w))
        self._postings = {
            f: (np.array([i for i, _ in p], dtype=np.int32), np.array([w for _, w in p], dtype=np.float32))
            for f, p in postings.items()
        }
        self._n = n

    @classmethod
    def default(cls, encoder=None, cache_dir: Path | None = None) -> "IntentClassifier":
        """The built-in classifier, built once per process (and per encoder); its example
        vectors are kept in `cache_dir` (see `example_vectors`)."""
        key = getattr(encoder, "name", "encoder") if encoder is not None else "lexical"
        with _DEFAULTS_LOCK:
            if key not in _DEFAULTS:
                _DEFAULTS[key] = cls(load_examples(), encoder=encoder, cache_dir=cache_dir)
            return _DEFAULTS[key]

    def _weigh(self, feats: Counter) -> dict[str, float]:
        weights = {f: (1 + math.log(c)) * self._idf[f] for f, c in feats.items() if f in self._idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {f: w / norm for f, w in weights.items()}

    def similarities(self, text: str) -> np.ndarray:
        scores = np.zeros(self._n, dtype=np.float32)
        for f, w in self._weigh(features(text)).items():
            idx, vals = self._postings[f]
            scores[idx] += w * vals
        if self._vectors is None:
            return scores
        query = np.asarray(self.encoder.encode([normalise(text)]), dtype=np.float32)[0]
        return self.semantic_weight * (self._vectors @ query) + (1 - self.semantic_weight) * scores

    def classify(self, text: str) -> IntentGuess:
        stripped = text.strip()
        if GREETING.match(stripped):
            return IntentGuess("greeting", 0.95, 1.0)
        if THANKS.match(stripped):
            return IntentGuess("thanks", 0.95, 1.0)
        scores = self.similarities(stripped)
        if not scores.any():
            return IntentGuess("out_of_scope", 0.9, 0.0)
        top = np.argpartition(-scores, self.k)[: self.k]
        top = top[np.argsort(-scores[top])]
        votes: dict[int, float] = defaultdict(float)
        for i in top:
            # Cubing favours the nearest neighbours over a crowd of looser ones.
            votes[int(self._label_of[i])] += float(scores[i]) ** 3
        ranked = sorted(votes.items(), key=lambda kv: -kv[1])
        best_label, best_vote = ranked[0]
        share = best_vote / (sum(votes.values()) or 1.0)
        best_sim = float(scores[top[0]])
        runner = self.labels[ranked[1][0]] if len(ranked) > 1 else None
        if best_sim < self.floor:
            return IntentGuess("out_of_scope", min(0.95, 1.0 - best_sim), best_sim, self.labels[best_label])
        # Confidence grows with how close the nearest example is and how unanimous the
        # neighbours are; 0.55 (the default clarify threshold) is roughly "a near example
        # and a clear majority".
        closeness = min(1.0, max(0.0, best_sim - self.floor) / 0.3)
        confidence = round(0.35 + 0.65 * (0.5 * closeness + 0.5 * share), 4)
        return IntentGuess(self.labels[best_label], confidence, best_sim, runner)
