"""The eval that measures answers: `deskhand eval` in a throwaway home, golden turns that say
what the reply must contain and cite, the KB question set's figures, and the nightly eval's
report and its alert to the support channel when a figure drops.

The CLI tests run the real `deskhand` executable; the nightly one runs the real `deskhand run`
against the Slack emulator, with the eval set to run at start.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from bot.config import load_settings
from bot.eval_reports import drops, latest_report, reports_dir, run_throwaway
from bot.kb_status import last_eval_line
from deskhand_process import DESKHAND, run_env, start_run, stop_run
from test_slack_app import ACME, SUPPORT, TENANTS, emu  # noqa: F401  (emu is a fixture)

QUESTIONS = """\
- question: what is your refund policy
  doc_id: returns/refunds
  answer: "original **payment** method"
- question: what is your refund policy
  doc_id: returns/refunds
  answer: we refund in seashells
"""


def deskhand_eval(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DESKHAND_HOME": str(home)}
    return subprocess.run([DESKHAND, "eval", *args], env=env, capture_output=True, text=True, timeout=600)


def test_deskhand_eval_passes_twice_in_a_row_in_the_same_home_and_leaves_it_untouched(tmp_path):
    # Before the throwaway home, the first run used up the demo shop's refunds and the second
    # failed refunds.yml ("state expected 'AWAITING_APPROVAL', got 'DONE'").
    home = tmp_path / "live-home"
    questions = tmp_path / "questions.yml"
    questions.write_text(QUESTIONS)
    args = ("--fail-under", "1.0", "--questions", str(questions))
    first = deskhand_eval(home, *args, "--answers-fail-under", "0.5")
    second = deskhand_eval(home, *args, "--answers-fail-under", "0.5")

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout)
    assert summary["pass_rate"] == 1.0 and summary["turns"] >= 40
    assert summary["kb_questions"] == 2
    assert summary["answer_correctness"] == 0.5  # markup in `answer` is ignored; seashells are not said
    assert summary["citation_recall"] == 1.0
    assert 0 < summary["citation_precision"] <= 1.0
    assert "FAIL questions.yml #2 [what is your refund policy]: reply lacks 'we refund in seashells'" in second.stderr
    assert not (home / "deskhand.db").exists() and not (home / "shop.db").exists()

    stricter = deskhand_eval(home, *args, "--answers-fail-under", "0.6")
    assert stricter.returncode == 1  # the golden turns pass; the answers fall short


async def test_a_golden_turn_whose_reply_lacks_the_fact_or_the_citation_fails_with_a_clear_line(tmp_path):
    golden = tmp_path / "golden"
    golden.mkdir()
    (golden / "facts.yml").write_text(
        "- name: refund policy\n"
        "  turns:\n"
        "    - user: what is your refund policy\n"
        "      expect: {intent: check_refund_policy, reply_contains: [30-day return policy, seashells],\n"
        "               cites: shipping/delivery-times}\n"
        "- name: password\n"
        "  turns:\n"
        "    - user: I forgot my password\n"
        "      expect: {reply_contains: [\"*Forgot password?*\"], cites: account/passwords}\n")
    settings = load_settings(home=tmp_path / "home")
    report, answers = await run_throwaway(settings, golden, tmp_path / "no-questions.yml")

    assert answers.questions == 0
    assert report.turns == 2 and report.summary()["pass_rate"] == 0.5
    assert len(report.failures) == 2, report.failures
    cites, lacks = report.failures  # citations are checked first
    assert lacks.startswith("facts.yml [refund policy] turn 1: reply lacks 'seashells': ")
    assert cites.startswith("facts.yml [refund policy] turn 1: cites ['returns/refunds'")
    assert cites.endswith("expected 'shipping/delivery-times'")


def test_a_figure_that_fell_is_a_drop_and_one_that_held_or_rose_is_not():
    before = {"pass_rate": 1.0, "answer_correctness": 0.8, "citation_recall": 0.5, "handoff_rate": 0.1}
    after = {"pass_rate": 1.0, "answer_correctness": 0.75, "citation_recall": 0.6, "handoff_rate": 0.0}
    assert drops(before, after) == [("answer_correctness", 0.8, 0.75)]
    assert drops(None, after) == [] and drops({"error": "OSError"}, after) == []


def eval_drop_posts(home: Path) -> int:
    with sqlite3.connect(home / "deskhand.db") as db:
        return db.execute("SELECT count(*) FROM outbox WHERE json_extract(payload, '$.key') LIKE 'eval_drop:%'"
                          ).fetchone()[0]


async def report_written_after(home: Path, after: str) -> dict:
    """The latest eval report, once one finished after `after` (polled: the eval runs ~30 s)."""
    async with asyncio.timeout(300):
        while (report := latest_report(home)) is None or report["finished_at"] <= after:
            await asyncio.sleep(0.1)  # polling the report file, not waiting for time to pass
    return report


async def test_deskhand_run_posts_a_drop_to_the_support_channel_and_nothing_when_nothing_dropped(emu, tmp_path):
    home = tmp_path / "run-home"
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(TENANTS)
    # Yesterday everything was perfect: today's answers fall short of that.
    reports_dir(home).mkdir(parents=True)
    perfect = {"pass_rate": 1.0, "answer_correctness": 1.0, "citation_precision": 1.0, "citation_recall": 1.0}
    (reports_dir(home) / "2026-01-01.json").write_text(json.dumps({"finished_at": "2026-01-01T03:00:00+00:00",
                                                                 "summary": perfect, "failures": []}))
    env = run_env(emu, home, DESKHAND_TENANTS_FILE=str(tenants), DESKHAND_EVAL_AT_START="true")
    err = tmp_path / "run.err"

    proc = await start_run(env, err)
    try:
        first = await report_written_after(home, "2026-01-02")
        alert = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT
                                        and "Nightly eval" in c.params["text"], timeout=60)
    finally:
        assert await stop_run(proc) == 0, err.read_text()
    today = datetime.now(timezone.utc).date().isoformat()
    assert (reports_dir(home) / f"{today}.json").exists()
    summary = first["summary"]
    assert summary["kb_questions"] >= 60 and summary["answer_correctness"] < 1.0
    assert f"answer correctness: 1.00 → {summary['answer_correctness']:.2f}" in alert.params["text"]
    assert eval_drop_posts(home) == 1
    assert f"answer correctness {summary['answer_correctness']} on" in last_eval_line(home)  # kb status

    # Restarted with nothing changed: the same figures again, so nothing is posted.
    proc = await start_run(env, err)
    try:
        second = await report_written_after(home, first["finished_at"])
    finally:
        assert await stop_run(proc) == 0, err.read_text()
    assert drops(summary, second["summary"]) == []
    assert eval_drop_posts(home) == 1  # queued before the report is written: none was
    assert len([c for c in emu.calls_to("chat.postMessage") if "Nightly eval" in c.params.get("text", "")]) == 1
