#!/usr/bin/env python
"""Intent accuracy of the offline classifier, and how it treats out-of-scope messages.

    .venv/bin/python bench/intents.py [--bitext FILE] [--oos FILE] [--folds 5]

- accuracy: 5-fold cross-validation over the Bitext rows (Deskhand's own everyday
  phrasings are always in the training side, never scored);
- the same for the classifier the rules planner uses by default: lexical scores blended
  with the knowledge base's sentence encoder (all-MiniLM-L6-v2, offline);
- oos_routed: the share of CLINC150 out-of-scope messages that the rules planner sends to a
  clarifying question or out_of_scope (instead of confidently misrouting them);
- oos_routed_with_kb: the same once the unsure ones are searched in the demo KB, as the rules
  planner does: a message the KB answers confidently (bot/brain/passages.py) is answered, not
  clarified, so it counts against the rate. `--no-kb` skips it.
Prints one JSON object per classifier.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.brain.intents import DATA, IntentClassifier, example_vectors, load_examples, normalise  # noqa: E402

THRESHOLD = 0.55  # Settings.clarify_threshold's default


def rows(path: Path) -> list[tuple[str, str]]:
    data = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["text"], r["intent"]) for r in data]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bitext", type=Path, default=ROOT.parent / "shared/data/intents/bitext_dev.jsonl")
    parser.add_argument("--oos", type=Path, default=ROOT.parent / "shared/data/intents/clinc150_oos_dev.jsonl")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--lexical-only", action="store_true", help="skip the encoder-based classifier")
    parser.add_argument("--no-kb", action="store_true", help="skip searching the demo KB for unsure messages")
    args = parser.parse_args()
    if not args.bitext.exists():
        args.bitext = DATA / "bitext_intents.jsonl"
    if not args.oos.exists():
        args.oos = ROOT / "tests/data/intents/clinc150_oos_dev.jsonl"

    bitext = rows(args.bitext)
    extra = load_examples((DATA / "deskhand_examples.jsonl",))
    oos = rows(args.oos)
    random.Random(7).shuffle(bitext)
    results = [evaluate("lexical tf-idf kNN", bitext, extra, oos, args.folds, None, None)]
    if not args.lexical_only:
        from kb_loader.encoder import load_bert, minilm_path

        encoder = load_bert(minilm_path(), name="all-MiniLM-L6-v2")
        texts = sorted({normalise(t) for t, _ in bitext + extra})
        t0 = time.perf_counter()
        vectors = dict(zip(texts, example_vectors(encoder, texts)))
        encode_s = time.perf_counter() - t0
        result = evaluate("lexical + MiniLM encoder kNN (default)", bitext, extra, oos, args.folds, encoder, vectors)
        result["example_encoding_s_uncached"] = round(encode_s, 2)
        if not args.no_kb:
            clf = IntentClassifier(bitext + extra, encoder=encoder, known_vectors=vectors)
            unsure = [t for t, _ in oos if _unsure(clf.classify(t))]
            answered = kb_answered(unsure, encoder)
            result["oos_answered_from_kb"] = answered
            result["oos_routed_with_kb"] = round(result["oos_routed_to_clarify_or_oos"] - len(answered) / len(oos), 4)
        results.append(result)
    for result in results:
        print(json.dumps(result))


def _unsure(guess) -> bool:
    return guess.intent == "out_of_scope" or guess.confidence < THRESHOLD


def kb_answered(texts: list[str], encoder) -> list[str]:
    """The texts the demo KB answers confidently, searched as search_kb does (cli channel)."""
    import tempfile

    from bot.brain.passages import best_passage
    from bot.config import FIXTURES, load_settings
    from kb_loader import KnowledgeBase

    with tempfile.TemporaryDirectory(prefix="deskhand-bench-") as home:
        settings = load_settings(home=Path(home))
        kb = KnowledgeBase(settings, encoder=encoder)
        kb.reload(settings.default_tenant, FIXTURES / "kb")
        answered = []
        for text in texts:
            hits = [h.model_dump() for h in kb.search(settings.default_tenant, text, "cli", 3)
                    if h.relevance >= settings.kb_relevance_floor]
            pick = best_passage(text, hits, encoder) if hits else None
            if pick is not None and pick.confident:
                answered.append(text)
        return answered


def evaluate(name, bitext, extra, oos, folds, encoder, vectors) -> dict:
    correct = clarified = 0
    classify_s = 0.0
    for fold in range(folds):
        test = bitext[fold::folds]
        train = [r for i, r in enumerate(bitext) if i % folds != fold] + extra
        clf = IntentClassifier(train, encoder=encoder, known_vectors=vectors)
        t0 = time.perf_counter()
        for text, label in test:
            guess = clf.classify(text)
            correct += guess.intent == label
            clarified += guess.intent == "out_of_scope" or guess.confidence < THRESHOLD
        classify_s += time.perf_counter() - t0
    clf = IntentClassifier(bitext + extra, encoder=encoder, known_vectors=vectors)
    routed = 0
    for text, _ in oos:
        guess = clf.classify(text)
        routed += guess.intent == "out_of_scope" or guess.confidence < THRESHOLD
    return {
        "classifier": name, "bitext_rows": len(bitext), "folds": folds,
        "intent_accuracy": round(correct / len(bitext), 4),
        "in_domain_sent_to_clarification": round(clarified / len(bitext), 4),
        "oos_rows": len(oos), "oos_routed_to_clarify_or_oos": round(routed / len(oos), 4),
        "classify_ms_per_message": round(classify_s / len(bitext) * 1000, 3),
    }


if __name__ == "__main__":
    main()
