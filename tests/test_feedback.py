"""Feedback that teaches: 👎 asks what went wrong (a Slack modal), `deskhand report` shows the
rates by intent and the latest 👎, and `deskhand replay --answers` shows which past answers a
KB edit changes, writing nothing. The real `deskhand run` and CLI processes against the Slack
emulator; every wait is on observable state."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from bot.handlers.payloads import FEEDBACK_VIEW, reasons_from
from bot.slack import blocks as bk
from bot.slack_ids import message_id
from deskhand_process import DESKHAND, deskhand_run, run_env
from kb_loader.freshness import read_record
from test_kb_lifecycle import until, write
from test_slack_app import ACME, ALICE, answered, emu, ephemeral_to

__all__ = ["emu"]  # the Slack emulator fixture

REFUNDS = ("# Refunds at Acme\n\nAcme refunds reach your original payment method within "
           "five business days of the return arriving at our warehouse.\n")
CARD = "4111 1111 1111 1111"


async def cli(env: dict, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(DESKHAND, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def table_counts(*paths: Path) -> dict[str, int]:
    """Rows per table of each SQLite file: the proof that nothing was written."""
    counts = {}
    for path in paths:
        with sqlite3.connect(path) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                counts[f"{path.name}:{table}"] = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return counts


def feedback_rows(db_path: Path) -> list[dict]:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM feedback ORDER BY id")]


async def test_a_downvote_asks_why_and_report_and_replay_teach_from_it(emu, tmp_path):
    kb = write(tmp_path / "kb" / "refunds.md", REFUNDS).parent
    home = tmp_path / "run-home"
    env = run_env(emu, home, DESKHAND_KB_DIR=str(kb), COLUMNS="200")
    async with deskhand_run(env, tmp_path / "run.err"):
        await until(lambda: (r := read_record(home, ACME)) and r.chunks > 0, "the KB's first build", 120)
        refund_dm = emu.dm(ACME, ALICE, "how long do refunds take?")
        await emu.push_event(ACME, refund_dm)
        refund = await emu.wait_for_call("chat.update", answered(refund_dm["channel"], "five business days"), timeout=60)
        order_dm = emu.dm(ACME, ALICE, "where is order A-1042?", thread_ts=None)
        await emu.push_event(ACME, order_dm)
        order = await emu.wait_for_call("chat.update", answered(order_dm["channel"], "A-1042"), timeout=60)

        # 👎 on the refund answer opens the modal with the click's trigger_id.
        click = emu.block_action(ACME, ALICE, refund_dm["channel"], refund.params["ts"], bk.FEEDBACK_DOWN,
                                 message_id(ACME, refund_dm["channel"], refund_dm["ts"]))
        await emu.push_interactive(ACME, click)
        opened = await emu.wait_for_call("views.open", timeout=30)
        assert opened.params["trigger_id"] == click["trigger_id"] and opened.response["ok"] is True
        view = opened.response["view"]
        assert view["callback_id"] == FEEDBACK_VIEW and emu.team.modals[view["id"]]["user"] == ALICE

        submission = emu.view_submission(ACME, view["id"], {
            "feedback_reasons": ["outdated", "wrong_source"],
            "feedback_comment": f"It says five days, it took ten. Card {CARD} was charged."})
        assert await emu.wait_for_ack(await emu.push_interactive(ACME, submission), 30) is None  # closes it
        await ephemeral_to(emu, ALICE, "what went wrong")
        rows = await until(lambda: [r for r in feedback_rows(home / "deskhand.db") if r["reasons"]], "the reasons")

        # 👍 on the order answer: another intent, another rate.
        await emu.push_interactive(ACME, emu.block_action(ACME, ALICE, order_dm["channel"], order.params["ts"],
                                                          bk.FEEDBACK_UP,
                                                          message_id(ACME, order_dm["channel"], order_dm["ts"])))
        await until(lambda: len(feedback_rows(home / "deskhand.db")) == 2, "the 👍")

        report = await cli(env, "report")
        report_json = json.loads(await cli(env, "report", "--json"))
        assert "Deskhand report" not in await cli(env, "report", "--shadow")  # the shadow listing still works

    assert [(r["value"], r["user_id"]) for r in rows] == [("down", ALICE)]
    assert json.loads(rows[0]["reasons"]) == ["outdated", "wrong_source"]
    assert "ten" in rows[0]["comment"] and CARD not in rows[0]["comment"] and "[card]" in rows[0]["comment"]

    feedback = report_json["feedback"]
    refund_intent = feedback["latest_down"][0]["intent"]
    assert feedback["by_intent"][refund_intent] == {"votes": 1, "up": 0, "down": 1, "up_rate": 0.0, "down_rate": 1.0}
    assert feedback["by_intent"]["track_order"]["down_rate"] == 0.0 and feedback["down_rate"] == 0.5
    assert feedback["reasons"] == {"outdated": 1, "wrong_source": 1}
    latest = feedback["latest_down"][0]
    assert latest["question"] == "how long do refunds take?" and "five business days" in latest["answer"]
    assert latest["tenant"] == ACME and len(latest["correlation_id"]) == 16
    assert "Latest 👎 (1)" in report and "outdated, wrong_source" in report and "how long do refunds take?" in report
    assert f"deskhand trace {latest['correlation_id']}" in report
    assert any(line.split()[:5] == [refund_intent, "1", "0", "1", "0"] for line in report.splitlines())

    # The article is edited and reloaded: replay shows the refund answer that changed, and
    # writes nothing anywhere (no ticket, pending action, tool call or trace).
    write(kb / "refunds.md", REFUNDS.replace("five business days", "two business days"))
    await cli(env, "kb", "reload", str(kb), "--tenant", ACME)
    before = table_counts(home / "deskhand.db", home / "shop.db")
    replayed = await cli(env, "replay", "--answers")
    downvoted = await cli(env, "replay", "--answers", "--downvoted", "--all")
    assert table_counts(home / "deskhand.db", home / "shop.db") == before

    assert "answers replayed: 2, changed: 1" in replayed
    changed = [line for line in replayed.splitlines() if line.startswith("CHANGED")]
    assert len(changed) == 1 and message_id(ACME, refund_dm["channel"], refund_dm["ts"]) in changed[0]
    assert any(line.startswith("  - ") and "five business days" in line for line in replayed.splitlines())
    assert any(line.startswith("  + ") and "two business days" in line for line in replayed.splitlines())
    assert "answers replayed: 1, changed: 1" in downvoted and "A-1042" not in downvoted


def test_a_submission_keeps_only_the_offered_reasons():
    body = {"type": "view_submission", "team": {"id": ACME}, "user": {"id": ALICE, "team_id": ACME},
            "view": {"private_metadata": json.dumps({"feedback_id": 7, "channel": "D1"}), "state": {"values": {
                "feedback_reasons": {"feedback_reasons": {"type": "checkboxes", "selected_options": [
                    {"value": "too_slow"}, {"value": "<script>"}]}},
                "feedback_comment": {"feedback_comment": {"type": "plain_text_input", "value": None}}}}}}
    submitted = reasons_from(body)

    assert submitted is not None and submitted.reasons == ["too_slow"] and submitted.comment == ""
    assert (submitted.team, submitted.user, submitted.feedback_id, submitted.channel) == (ACME, ALICE, 7, "D1")
    assert reasons_from({**body, "view": {"private_metadata": "not json"}}) is None


def test_a_changed_vote_counts_once_and_reasons_only_reach_the_clickers_own_downvote(tmp_path):
    from bot.contracts import BrainPlan, Channel, MessageEnvelope
    from bot.feedback import build_feedback_report
    from bot.store import AsyncStore, Store

    store = Store(tmp_path / "deskhand.db")
    env = MessageEnvelope(tenant_id=ACME, channel=Channel.slack_dm, user_id=ALICE, session_id="s-1",
                          text="do you take amex?")
    store.inbox_add(env)
    plan = BrainPlan(intent="payment_methods", confidence=0.9).model_dump(mode="json")
    store.inbox_update(env.id, status="delivered", outcome=json.dumps({"reply": "We take Visa.", "plan": plan}))
    store.add_feedback(ACME, "s-1", env.id, ALICE, "up")
    down = store.add_feedback(ACME, "s-1", env.id, ALICE, "down")  # Alice changed her mind
    store.add_feedback(ACME, "s-1", env.id, "U0BOB0001", "up")

    refused = [store.feedback_add_reasons(down, "T0OTHER001", ALICE, ["other"], "x"),  # another workspace
               store.feedback_add_reasons(down, ACME, "U0BOB0001", ["other"], "x"),  # someone else
               store.feedback_add_reasons(down - 1, ACME, ALICE, ["other"], "x")]  # a 👍
    stored = store.feedback_add_reasons(down, ACME, ALICE, ["wrong_answer"], f"my card is {CARD}")
    row = store.feedback_get(down)
    async_store = AsyncStore(store)
    rep = asyncio.run(build_feedback_report(async_store))
    async_store.close()  # closes the Store too

    assert refused == [False, False, False] and stored is True
    assert row["reasons"] == ["wrong_answer"] and CARD not in row["comment"]
    assert rep["by_intent"] == {"payment_methods": {"votes": 2, "up": 1, "down": 1, "up_rate": 0.5, "down_rate": 0.5}}
    assert rep["reasons"] == {"wrong_answer": 1}
    assert [(d["question"], d["answer"]) for d in rep["latest_down"]] == [("do you take amex?", "We take Visa.")]
