#!/usr/bin/env python
"""Recall and false positives of the PII detector (bot/brain/pii.py), per entity type.

    .venv/bin/python bench/pii.py [--regions US,GB] [--json]

Sets:
- presidio: Presidio's recognizer test cases (../shared/data/pii/presidio_recognizer_cases.jsonl),
  each labelling one entity type; only predictions of that type are scored in its text. A
  text listed twice with different expectations is scored once, with the most spans;
- stripe: Stripe's test card numbers, alone and in a sentence (the Luhn-invalid one must
  not be found);
- flanker: Mailgun's valid and invalid mailbox lists (a valid one must be found whole, an
  invalid one not at all);
- synthetic: tests/data/pii/synthetic_customer_text.jsonl, 200 customer sentences with
  labelled spans, 40 of them negatives (order IDs, amounts, dates, tracking numbers);
- hard: tests/data/pii/hard_names_addresses.jsonl, 30 names and addresses written apart
  from the patterns (lower case, no cue, other countries' address forms).
An expected span is found when predictions of its type cover all of it (a partial mask
still leaks); a prediction is a false positive when it overlaps no expected span of its type.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.brain.pii import PiiVault, find_pii  # noqa: E402
from bot.brain.pii_regions import DEFAULT_PHONE_REGIONS  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pii"
SYNTHETIC = ROOT / "tests" / "data" / "pii" / "synthetic_customer_text.jsonl"
HARD = ROOT / "tests" / "data" / "pii" / "hard_names_addresses.jsonl"
PRESIDIO_KINDS = {"CREDIT_CARD": "card", "EMAIL_ADDRESS": "email", "IBAN_CODE": "iban", "IP_ADDRESS": "ip",
                  "PHONE_NUMBER": "phone", "US_SSN": "ssn"}

Case = tuple[str, list[tuple[int, int, str]], set[str] | None]  # text, spans, kinds scored (None: all)


def presidio_cases() -> list[Case]:
    best: dict[tuple[str, str], list] = {}
    for line in (DATA / "presidio_recognizer_cases.jsonl").read_text().splitlines():
        row = json.loads(line)
        kind = PRESIDIO_KINDS.get(row["entity_type"])
        if kind is None:
            continue  # URLs are not masked
        key = (row["text"], kind)
        if len(row["expected_spans"]) >= len(best.get(key, [])):
            best[key] = row["expected_spans"]
    return [(text, [(s, e, kind) for s, e in spans], {kind}) for (text, kind), spans in best.items()]


def stripe_cases() -> list[Case]:
    out: list[Case] = []
    for line in (DATA / "stripe_test_cards.jsonl").read_text().splitlines():
        row = json.loads(line)
        number = row["number"]
        for prefix in ("", "my card is "):
            spans = [(len(prefix), len(prefix) + len(number), "card")] if row["luhn_valid"] else []
            out.append((prefix + number, spans, {"card"}))
    return out


def flanker_cases() -> list[Case]:
    out: list[Case] = []
    for name, valid in (("flanker_mailbox_valid.txt", True), ("flanker_mailbox_invalid.txt", False)):
        for line in (DATA / name).read_text().splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            out.append((line, [(0, len(line), "email")] if valid else [], {"email"}))
    return out


def labelled_cases(path: Path) -> list[Case]:
    return [(row["text"], [tuple(s) for s in row["spans"]], None)
            for row in map(json.loads, path.read_text().splitlines())]


def score(cases: list[Case], regions: tuple[str, ...], missed: dict[str, list[str]]) -> dict[str, Counter]:
    stats: dict[str, Counter] = {}
    for text, expected, scored in cases:
        predicted = [p for p in find_pii(text, regions) if scored is None or p.kind in scored]
        for start, end, kind in expected:
            covered = set()
            for p in predicted:
                if p.kind == kind:
                    covered.update(range(max(start, p.start), min(end, p.end)))
            hit = len(covered) == end - start
            stats.setdefault(kind, Counter()).update(expected=1, found=int(hit))
            if not hit:
                missed.setdefault(kind, []).append(text[start:end])
        for p in predicted:
            overlaps = any(kind == p.kind and p.start < end and start < p.end for start, end, kind in expected)
            stats.setdefault(p.kind, Counter()).update(predicted=1, false_positive=int(not overlaps))
            if not overlaps:
                missed.setdefault(f"fp:{p.kind}", []).append(p.text)
    return stats


def table(stats: dict[str, Counter]) -> list[dict]:
    rows = []
    for kind in sorted(stats):
        c = stats[kind]
        rows.append({
            "entity": kind, "expected": c["expected"], "found": c["found"],
            "recall": round(c["found"] / c["expected"], 3) if c["expected"] else None,
            "false_positives": c["false_positive"],
            "precision": round(1 - c["false_positive"] / c["predicted"], 3) if c["predicted"] else None,
        })
    return rows


def microseconds_per_message(cases: list[Case], regions: tuple[str, ...], rounds: int = 5) -> float:
    texts = [text for text, _, _ in cases]
    started = time.perf_counter()
    for _ in range(rounds):
        vault = PiiVault(regions)
        for text in texts:
            vault.mask(text)
    return (time.perf_counter() - started) / (rounds * len(texts)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", default=",".join(DEFAULT_PHONE_REGIONS), help="phone regions, e.g. US,GB,DE")
    parser.add_argument("--json", action="store_true", help="one JSON object per set")
    parser.add_argument("--missed", action="store_true", help="also list what was missed and the false positives")
    args = parser.parse_args()
    regions = tuple(r.strip().upper() for r in args.regions.split(",") if r.strip())
    find_pii("warm-up: Maria Garcia, 42 Elm Street", regions)  # the gazetteers load once
    sets = {"presidio": presidio_cases(), "stripe": stripe_cases(), "flanker": flanker_cases(),
            "synthetic": labelled_cases(SYNTHETIC), "hard": labelled_cases(HARD)}
    for name, cases in sets.items():
        missed: dict[str, list[str]] = {}
        rows = table(score(cases, regions, missed))
        speed = microseconds_per_message(cases, regions)
        if args.json:
            print(json.dumps({"set": name, "regions": regions, "us_per_message": round(speed, 1), "rows": rows}))
        else:
            print(f"\n{name}: {len(cases)} texts, {speed:.0f} µs per message (phone regions {','.join(regions)})")
            print(f"{'entity':<9} {'expected':>8} {'found':>6} {'recall':>7} {'false+':>7} {'precision':>9}")
            for r in rows:
                recall = "-" if r["recall"] is None else f"{r['recall']:.3f}"
                precision = "-" if r["precision"] is None else f"{r['precision']:.3f}"
                print(f"{r['entity']:<9} {r['expected']:>8} {r['found']:>6} {recall:>7} "
                      f"{r['false_positives']:>7} {precision:>9}")
        if args.missed:
            for kind, values in sorted(missed.items()):
                print(f"  {kind}: {values[:40]}")


if __name__ == "__main__":
    main()
