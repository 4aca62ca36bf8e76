#!/usr/bin/env python
"""Intent accuracy of the offline classifier, and how it treats out-of-scope messages.

    .venv/bin/python bench/intents.py [--bitext FILE] [--oos FILE] [--folds 5]

- accuracy: 5-fold cross-validation over the Bitext rows (Deskhand's own everyday
  phrasings are always in the training side, never scored);
- oos_routed: the share of CLINC150 out-of-scope messages that the rules planner sends to a
  clarifying question or out_of_scope (instead of confidently misrouting them).
Prints one JSON object.
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

from bot.brain.intents import DATA, IntentClassifier, load_examples  # noqa: E402

THRESHOLD = 0.55  # Settings.clarify_threshold's default


def rows(path: Path) -> list[tuple[str, str]]:
    data = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["text"], r["intent"]) for r in data]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bitext", type=Path, default=ROOT.parent / "shared/data/intents/bitext_dev.jsonl")
    parser.add_argument("--oos", type=Path, default=ROOT.parent / "shared/data/intents/clinc150_oos_dev.jsonl")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    if not args.bitext.exists():
        args.bitext = DATA / "bitext_intents.jsonl"
    if not args.oos.exists():
        args.oos = ROOT / "tests/data/intents/clinc150_oos_dev.jsonl"

    bitext = rows(args.bitext)
    extra = load_examples((DATA / "deskhand_examples.jsonl",))
    random.Random(7).shuffle(bitext)
    correct = clarified = 0
    train_s = classify_s = 0.0
    for fold in range(args.folds):
        test = bitext[fold :: args.folds]
        train = [r for i, r in enumerate(bitext) if i % args.folds != fold] + extra
        t0 = time.perf_counter()
        clf = IntentClassifier(train)
        t1 = time.perf_counter()
        for text, label in test:
            guess = clf.classify(text)
            correct += guess.intent == label
            clarified += guess.intent == "out_of_scope" or guess.confidence < THRESHOLD
        train_s += t1 - t0
        classify_s += time.perf_counter() - t1

    clf = IntentClassifier(bitext + extra)
    oos = rows(args.oos)
    routed = 0
    for text, _ in oos:
        guess = clf.classify(text)
        routed += guess.intent == "out_of_scope" or guess.confidence < THRESHOLD
    print(json.dumps({
        "classifier": "lexical tf-idf kNN",
        "bitext_rows": len(bitext), "folds": args.folds,
        "intent_accuracy": round(correct / len(bitext), 4),
        "in_domain_sent_to_clarification": round(clarified / len(bitext), 4),
        "oos_rows": len(oos), "oos_routed_to_clarify_or_oos": round(routed / len(oos), 4),
        "train_s_per_fold": round(train_s / args.folds, 3),
        "classify_ms_per_message": round(classify_s / len(bitext) * 1000, 3),
    }))


if __name__ == "__main__":
    main()
