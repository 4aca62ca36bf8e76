#!/usr/bin/env python
"""Answer correctness and citation precision/recall on the KB question set, offline default.

    .venv/bin/python bench/kb_answers.py [--questions FILE] [--misses]

Runs every question of fixtures/kb_questions.yml as the first message of a fresh conversation
through the real orchestrator (rules planner, demo KB, template drafter, output guard) in a
throwaway home, and scores the replies with bot/answer_scoring.py (via bot/answer_eval.py,
which `deskhand eval` uses too). Prints one JSON object; `--misses` also lists each failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.answer_eval import KB_QUESTIONS, run_questions  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402


async def measure(questions: Path) -> tuple[dict, list[str]]:
    with tempfile.TemporaryDirectory(prefix="deskhand-kb-answers-") as home:
        settings = load_settings(home=Path(home), planner="rules")
        async with open_runtime(settings) as rt:
            t0 = time.perf_counter()
            report = await run_questions(rt, questions)
            seconds = time.perf_counter() - t0
    summary = report.summary()
    summary["ms_per_question"] = round(seconds / max(1, report.questions) * 1000, 1)
    return summary, report.failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, default=KB_QUESTIONS)
    parser.add_argument("--misses", action="store_true", help="print each failed answer or citation")
    args = parser.parse_args()
    summary, failures = asyncio.run(measure(args.questions))
    if args.misses:
        for line in failures:
            print(line, file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
