"""The offline intent classifier: nearest labelled examples, with a confidence.

Examples are the Bitext customer-support utterances (27 intents, `data/bitext_intents.jsonl`,
CDLA-Sharing-1.0). Features are TF-IDF weighted word unigrams, bigrams and in-word character
trigrams (so typos like "cacnel" still match), scored against every example through an
inverted index, and the top neighbours vote. `greeting`, `thanks` and `out_of_scope` are
decided by rules and by the similarity floor, since no examples exist for them.
"""

from __future__ import annotations

import json
import math
import re
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


class IntentClassifier:
    def __init__(self, examples: list[tuple[str, str]], k: int = 7, floor: float = 0.40):
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
        # Below this cosine similarity to every known example, a message is out of scope.
        self.floor = floor
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
    def default(cls) -> "IntentClassifier":
        return cls(load_examples())

    def _weigh(self, feats: Counter) -> dict[str, float]:
        weights = {f: (1 + math.log(c)) * self._idf[f] for f, c in feats.items() if f in self._idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {f: w / norm for f, w in weights.items()}

    def similarities(self, text: str) -> np.ndarray:
        scores = np.zeros(self._n, dtype=np.float32)
        for f, w in self._weigh(features(text)).items():
            idx, vals = self._postings[f]
            scores[idx] += w * vals
        return scores

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
        closeness = min(1.0, (best_sim - self.floor) / 0.3)
        confidence = round(0.35 + 0.65 * (0.5 * closeness + 0.5 * share), 4)
        return IntentGuess(self.labels[best_label], confidence, best_sim, runner)
