"""Running the eval in a throwaway home, keeping its dated reports, and telling the team when a figure drops.

- `run_throwaway` runs the golden conversations and the KB question set against the demo shop
  and demo KB in a temporary DESKHAND_HOME built from the operator's settings (planner and
  encoder as configured), so `deskhand eval` can run any number of times, in production too,
  without touching the live store or shop.
- The nightly eval writes `<home>/eval/YYYY-MM-DD.json` (UTC) and compares it with the report
  before it: each figure that fell is posted to every connected Slack tenant's support
  channel, through the responder's outbox so that a Slack outage only delays the post.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

from bot.config import Settings
from bot.logs import get_logger

log = get_logger("deskhand.eval")

# Figures where higher is better, in the order a drop is reported. The handoff and
# clarification rates are left out: either direction can be the right one.
WATCHED = {
    "pass_rate": "golden pass rate",
    "intent_accuracy": "intent accuracy",
    "tool_accuracy": "tool accuracy",
    "citation_coverage": "citation coverage",
    "answer_correctness": "answer correctness",
    "citation_precision": "citation precision",
    "citation_recall": "citation recall",
}


async def run_throwaway(settings: Settings, golden: Path | None = None, questions: Path | None = None):
    """(EvalReport, AnswerReport) from a run in a temporary home, removed afterwards."""
    from bot.answer_eval import KB_QUESTIONS
    from bot.evaluation import GOLDEN_DIR, run_all
    from bot.kb_lifecycle import eval_settings
    from bot.runtime import open_runtime

    with tempfile.TemporaryDirectory(prefix="deskhand-eval-") as home:
        async with open_runtime(eval_settings(settings, Path(home))) as rt:
            return await run_all(rt, golden or GOLDEN_DIR, questions or KB_QUESTIONS)


# -- dated reports ---------------------------------------------------------------------------

def reports_dir(home: Path) -> Path:
    return Path(home) / "eval"


def latest_report(home: Path) -> dict | None:
    """The most recent readable report, or None."""
    for path in sorted(reports_dir(home).glob("????-??-??.json"), reverse=True):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def write_report(home: Path, finished_at: datetime, summary: dict, failures: list[str]) -> Path:
    """Write the day's report atomically (a second run the same day replaces it)."""
    path = reports_dir(home) / f"{finished_at.date().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"finished_at": finished_at.isoformat(), "summary": summary,
                               "failures": failures}, indent=2))
    os.replace(tmp, path)
    return path


def drops(before: dict | None, after: dict) -> list[tuple[str, float, float]]:
    """(figure, before, after) for each watched figure lower in `after` than in `before`."""
    if not before or "error" in before or "error" in after:
        return []
    fallen = []
    for key in WATCHED:
        old, new = before.get(key), after.get(key)
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and new < old:
            fallen.append((key, float(old), float(new)))
    return fallen


def drop_message(fallen: list[tuple[str, float, float]], path: Path) -> str:
    lines = [f"• {WATCHED[key]}: {old:.2f} → {new:.2f}" for key, old, new in fallen]
    return ("*Nightly eval: a figure dropped*\n" + "\n".join(lines)
            + f"\nThe failures are in `{path}`; `deskhand eval` shows them too.")


async def post_drops(settings: Settings, slack, fallen: list[tuple[str, float, float]], path: Path,
                     finished_at: datetime) -> int:
    """Queue the drop message to each connected tenant's support channel; the number queued."""
    if not fallen or slack is None:
        return 0
    text, queued = drop_message(fallen, path), 0
    for team_id in getattr(slack, "teams", None) or {}:
        channel = settings.policy(team_id).support_channel
        if not channel:
            continue
        await slack.responder.queue({"op": "post", "team": team_id, "channel": channel, "text": text},
                                    key=f"eval_drop:{finished_at.isoformat()}:{team_id}")
        queued += 1
    return queued


async def report_and_alert(settings: Settings, slack, finished_at: datetime, summary: dict,
                           failures: list[str]) -> Path:
    """Compare with the previous report, alert on drops, then write this one."""
    previous = latest_report(settings.home)
    fallen = drops((previous or {}).get("summary"), summary)
    path = reports_dir(settings.home) / f"{finished_at.date().isoformat()}.json"
    if fallen:
        log.warning("nightly_eval_dropped", figures=[f"{k} {o:.4f}->{n:.4f}" for k, o, n in fallen])
        try:
            await post_drops(settings, slack, fallen, path, finished_at)
        except Exception:  # the report is still written; the log line above names the drop
            log.exception("nightly_eval_alert_failed")
    return write_report(settings.home, finished_at, summary, failures)
