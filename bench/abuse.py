#!/usr/bin/env python
"""Precision and recall of the abuse filter (bot/brain/abuse.py).

    .venv/bin/python bench/abuse.py [--labelled FILE] [--bitext FILE] [--errors]

- per category (insult, threat, harassment, hate, self_harm): precision and recall on the
  labelled set; a message counts as right only with the right category;
- abusive vs not: precision and recall of flagging at all, whatever the category;
- frustrated_answered: the share of frustrated-but-not-abusive messages that are not flagged
  (they must still get their answer);
- bitext_false_positive_rate: the share of Bitext customer-support utterances flagged;
- second_pass, third_pass, held_out: the same on the rows marked with that "set". Tuned
  on every row except "held_out", which was written later and never tuned on: quote those.
  Rows marked "reviewed" were held out until a safety review added their self-harm wording
  to the lexicon; they count with the tuned rows now.
Prints one JSON object; `--errors` also lists every miss and false alarm.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.brain.abuse import CATEGORIES, classify  # noqa: E402

NOT_ABUSIVE = ("frustrated", "ok")


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def measure(labelled: list[dict], bitext: list[dict]) -> dict:
    predicted = [(row, classify(row["text"]).category) for row in labelled]
    per_category = {}
    for category in CATEGORIES:
        tp = sum(1 for row, got in predicted if got == category and row["label"] == category)
        fp = sum(1 for row, got in predicted if got == category and row["label"] != category)
        fn = sum(1 for row, got in predicted if got != category and row["label"] == category)
        per_category[category] = {"support": tp + fn, "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
    flagged_tp = sum(1 for row, got in predicted if got and row["label"] not in NOT_ABUSIVE)
    flagged = sum(1 for _, got in predicted if got)
    abusive = sum(1 for row, _ in predicted if row["label"] not in NOT_ABUSIVE)
    frustrated = [got for row, got in predicted if row["label"] == "frustrated"]
    bitext_flagged = [row["text"] for row in bitext if classify(row["text"]).abusive]
    return {
        "labelled": len(labelled),
        "per_category": per_category,
        "abusive": {"precision": _ratio(flagged_tp, flagged), "recall": _ratio(flagged_tp, abusive)},
        "frustrated_answered": _ratio(sum(1 for got in frustrated if got is None), len(frustrated)),
        "bitext": len(bitext),
        "bitext_false_positive_rate": _ratio(len(bitext_flagged), len(bitext)),
        "errors": [{"text": row["text"], "label": row["label"], "got": got}
                   for row, got in predicted if (got or "") != (row["label"] if row["label"] in CATEGORIES else "")]
                  + [{"text": text, "label": "bitext", "got": "flagged"} for text in bitext_flagged],
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labelled", type=Path, default=ROOT / "tests/data/abuse/labelled.jsonl")
    parser.add_argument("--bitext", type=Path, default=ROOT / "bot/brain/data/bitext_intents.jsonl")
    parser.add_argument("--errors", action="store_true", help="list every miss and false alarm")
    args = parser.parse_args()
    labelled = load(args.labelled)
    result = measure(labelled, load(args.bitext))
    # The lexicon was written alongside the first rows and then tuned on "second_pass";
    # "held_out" was written afterwards and never tuned on: its figures are the ones to quote.
    for name in ("second_pass", "third_pass", "held_out"):
        rows = [row for row in labelled if row.get("set") == name]
        if rows:
            part = measure(rows, [])
            result[name] = {"rows": len(rows), "abusive": part["abusive"],
                            "frustrated_answered": part["frustrated_answered"],
                            "ordinary_flagged": _ratio(sum(1 for row in rows if row["label"] == "ok"
                                                           and classify(row["text"]).abusive),
                                                       sum(1 for row in rows if row["label"] == "ok")),
                            "recall": {c: v["recall"] for c, v in part["per_category"].items()}}
    if not args.errors:
        result.pop("errors")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
