"""Shadow mode: per tenant and per channel, no write runs, every turn is recorded.

In process for the turn itself (real SQLite, the real demo shop, the real executor); the real
`deskhand run` process against the Slack emulator for the silence on the wire, `deskhand
report --shadow` as a subprocess, and switching shadow off afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import FIXTURES, TenantPolicy, load_settings
from bot.contracts import Channel, MessageEnvelope
from bot.run import run_deskhand
from bot.runtime import open_runtime
from bot.shadow import is_shadow
from bot.slack.app import SlackCredentials
from bot.store import Store
from bot.surfaces import Surfaces
from deskhand_process import DESKHAND, deskhand_run, run_env
from test_mail_bridge import Relay, email, eventually, send
from test_orchestrator import ScriptedPlanner
from test_slack_app import ACME, ALICE, FAST, SUPPORT, TENANTS, answered, emu, rules  # noqa: F401 - emu is a fixture

INITIAL_REFUNDS = len(json.loads((FIXTURES / "shop.json").read_text())["refunds"])
MESSAGES = ["I want a refund for A-1120", "I need to talk to a human",
            "open a ticket, my payment failed twice", "what payment methods do you accept?"]
SHADOW_ALL = "shadow_mode: true"
SHADOW_EMAIL = "shadow_channels: [email]"


def tenants_with(tmp_path: Path, line: str, name: str = "tenants.yml") -> Path:
    path = tmp_path / name
    path.write_text(TENANTS.replace("name: Acme", f"name: Acme\n    {line}"))
    return path


def cli_envelope(text: str, session: str = "s1") -> MessageEnvelope:
    return MessageEnvelope(tenant_id=ACME, channel=Channel.cli, user_id=ALICE, session_id=session, text=text)


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


# ------------------------------------------------------------------ the flag


def test_one_function_answers_whether_a_turn_is_shadow():
    everywhere, email_only = TenantPolicy(shadow_mode=True), TenantPolicy(shadow_channels=["email"])

    assert all(is_shadow(everywhere, c.value) for c in Channel)
    assert is_shadow(email_only, "email") and not is_shadow(email_only, "slack_dm")
    assert not any(is_shadow(email_only, c) for c in ("slack_thread", "slack_channel", "cli"))
    assert not any(is_shadow(TenantPolicy(), c.value) for c in Channel)
    assert is_shadow(TenantPolicy(shadow_channels=["slack"]), "slack_thread")
    with pytest.raises(ValidationError, match="shadow_channels"):
        TenantPolicy(shadow_channels=["sms"])


# ------------------------------------------------------------------ the turn, in process


async def test_a_shadow_turn_runs_reads_describes_writes_and_leaves_the_conversation_as_it_was(tmp_path):
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb",
                             tenants_file=tenants_with(tmp_path, SHADOW_ALL))
    async with open_runtime(settings) as rt:
        outcomes = [await rt.orchestrator.handle(cli_envelope(text)) for text in MESSAGES]
        async with open_runtime(settings, planner=ScriptedPlanner(RuntimeError("boom"))) as failing:
            failed = await failing.orchestrator.handle(cli_envelope("hello?", session="s2"))
        runs = await rt.store.shadow_runs(tenant_id=ACME)
        shop = (rt.shop.count("tickets"), rt.shop.count("refunds"))
        pending = await rt.store.pending_list(ACME)
        session = await rt.store.session_get("s1")
        case_state = await rt.store.case_state("s1")
        replies = [await rt.store.message_for(o.inbox_id) for o in [*outcomes, failed]]
        statuses = {(await rt.store.inbox_get(o.inbox_id))["status"] for o in [*outcomes, failed]}
    store = Store(settings.db_path)
    idempotency, audit = store.db["idempotency"].count, store.db["audit_log"].count
    store.close()

    assert shop == (0, INITIAL_REFUNDS) and pending == [] and session["status"] == "active"
    assert idempotency == 0 and audit == 0 and case_state == {}
    assert replies == [None] * 5 and statuses == {"skipped"} and all(o.shadow for o in [*outcomes, failed])
    # The would-be replies read as the live ones do, with the real refundable amount.
    assert outcomes[0].reply.startswith("I've asked a teammate to approve a refund of 64.00 for order A-1120")
    assert outcomes[1].state == "HANDED_OFF" and "passed this conversation to a teammate" in outcomes[1].reply
    assert "I've opened ticket" in outcomes[2].reply
    by_message = {r["text"]: r for r in runs}
    assert set(by_message) == {*MESSAGES, "hello?"}
    refund = by_message[MESSAGES[0]]
    assert refund["intent"] == "get_refund" and refund["state"] == "AWAITING_APPROVAL"
    assert refund["actions"] == [{"tool": "process_refund", "would": "propose",
                                  "args": {"order_id": "A-1120", "amount": 64.0, "reason": MESSAGES[0]}}]
    assert [a["tool"] for a in by_message[MESSAGES[1]]["actions"]] == ["escalate_to_human"]
    assert by_message[MESSAGES[1]]["state"] == "HANDED_OFF"
    assert [a["tool"] for a in by_message[MESSAGES[2]]["actions"]] == ["create_ticket"]
    assert by_message[MESSAGES[2]]["reads"] == [{"tool": "search_kb", "ok": False, "error_kind": "kb_unavailable"}]
    assert by_message[MESSAGES[3]]["actions"] == [] and by_message[MESSAGES[3]]["intent"] == "check_payment_methods"
    # The failure path obeys shadow too: its ticket is described, not opened.
    assert by_message["hello?"]["state"] == "FAILED" and by_message["hello?"]["error"] == "PLAN: RuntimeError"
    assert [a["tool"] for a in by_message["hello?"]["actions"]] == ["create_ticket"]


class Collect:
    """The CLI surface, recording what would reach the customer."""

    def __init__(self):
        self.delivered, self.notices = [], []

    async def deliver(self, env, outcome):
        self.delivered.append(outcome)

    async def notify(self, session, text, **info):
        self.notices.append(text)


async def test_a_decision_on_a_refund_proposed_live_is_not_told_on_a_surface_now_in_shadow(tmp_path):
    live = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", tenants_file=tenants_with(tmp_path, ""))
    async with open_runtime(live) as rt:
        proposed = await rt.orchestrator.handle(cli_envelope(MESSAGES[0]))
    shadow = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb",
                           tenants_file=tenants_with(tmp_path, "shadow_channels: [cli]", "shadow.yml"))
    async with open_runtime(shadow) as rt:
        cli = Collect()
        async with rt.orchestrator.delivering_to(Surfaces(cli=cli)):
            decision = await rt.decide(proposed.pending_action_id, "U0BOB0001", approve=True)
            refunds = rt.shop.count("refunds")

    assert proposed.state == "AWAITING_APPROVAL" and not proposed.shadow
    # The teammate's decision is theirs and runs; nothing reaches the customer's shadow surface.
    assert decision.status == "approved" and refunds == INITIAL_REFUNDS + 1 and cli.notices == []


def test_report_shadow_filters_by_tenant_and_time(tmp_path):
    from typer.testing import CliRunner

    from bot.cli import app

    store = Store(tmp_path / "d.db")
    for inbox_id, tenant in (("msg_old", ACME), ("msg_new", ACME), ("msg_other", "T0OTHER001")):
        store.shadow_record(inbox_id=inbox_id, tenant_id=tenant, session_id="s", channel="email", correlation_id="c",
                            text=f"text of {inbox_id}", intent="track_order", plan=None, reply=None, state="SILENT")
    store.db.execute("UPDATE shadow_runs SET ts = '2020-01-01T00:00:00+00:00' WHERE inbox_id = 'msg_old'")
    store.close()
    result = CliRunner().invoke(app, ["report", "--shadow", "--tenant", ACME, "--since-hours", "24",
                                      "--db", str(tmp_path / "d.db")])

    assert result.exit_code == 0, result.output
    assert "shadow turns (tenant=T0ACME0001" in result.output and ": 1" in result.output.splitlines()[0]
    assert "message: text of msg_new" in result.output and "would:   no writes" in result.output
    assert "reply:   (silent)" in result.output
    assert "msg_old" not in result.output and "msg_other" not in result.output


# ------------------------------------------------------------------ per channel


async def test_live_in_slack_and_shadow_on_email_answers_the_dm_and_sends_no_email(emu, tmp_path):
    relay = await Relay().start()
    settings = load_settings(
        home=tmp_path / "home", kb_dir=tmp_path / "no-kb", tenants_file=tenants_with(tmp_path, SHADOW_EMAIL),
        slack_bot_token=emu.team.bot_token, slack_app_token=emu.team.app_token, slack_api_url=emu.api_url,
        smtp_enabled=True, smtp_port=0, relay_port=relay.port, mail_tenant=ACME, ops_enabled=False)
    try:
        async with open_runtime(settings, planner=rules()) as rt, run_deskhand(
                rt, credentials=[SlackCredentials(emu.team.bot_token, emu.team.app_token)],
                slack_options=FAST) as running:
            await send(running.mail, email("I want a refund for A-1120", subject="Refund"))
            run = (await eventually(lambda: rt.store.shadow_runs(tenant_id=ACME)))[0]
            dm = emu.dm(ACME, ALICE, "where is order A-1042?")
            await emu.push_event(ACME, dm)
            answer = await emu.wait_for_call("chat.update", answered(dm["channel"], "A-1042"))
            email_outbox = await rt.store.outbox_rows(channel="email")
            slack_outbox = await rt.store.outbox_rows(channel="slack")
            shop_refunds, pending = rt.shop.count("refunds"), await rt.store.pending_list(ACME)
    finally:
        await relay.stop()

    assert run["channel"] == "email" and run["actions"][0]["tool"] == "process_refund"
    assert "refund of 64.00 for order A-1120" in run["reply"]
    assert email_outbox == [] and relay.messages == [] and shop_refunds == INITIAL_REFUNDS and pending == []
    # Nothing about the email reached Slack either: no mirror thread, no card.
    assert slack_outbox == [] and not [c for c in emu.calls_to("chat.postMessage") if c.params["channel"] == SUPPORT]
    assert answer.team == ACME and "A-1042 has shipped" in answer.params["text"]


# ------------------------------------------------------------------ the real process


async def test_deskhand_run_in_shadow_acts_and_posts_nothing_and_answers_once_switched_off(emu, tmp_path):
    home, err = tmp_path / "run-home", tmp_path / "run.err"
    tenants = tenants_with(tmp_path, SHADOW_ALL)
    env = run_env(emu, home, DESKHAND_TENANTS_FILE=str(tenants))
    db, shop = home / "deskhand.db", home / "shop.db"
    first = emu.dm(ACME, ALICE, MESSAGES[0])
    channel = first["channel"]
    async with deskhand_run(env, err):
        await emu.push_event(ACME, first)
        for text in MESSAGES[1:]:  # in the first message's thread: one conversation
            await emu.push_event(ACME, emu.dm(ACME, ALICE, text, thread_ts=first["ts"]))
        await eventually(lambda: db.exists() and count(db, "SELECT count(*) FROM shadow_runs") == len(MESSAGES))
        report = await asyncio.to_thread(subprocess.run, [DESKHAND, "report", "--shadow", "--tenant", ACME],
                                         env=env, capture_output=True, text=True, timeout=120)
        report_json = await asyncio.to_thread(subprocess.run, [DESKHAND, "report", "--shadow", "--json"],
                                              env=env, capture_output=True, text=True, timeout=120)

    posted = [c for c in emu.calls if c.method in ("chat.postMessage", "chat.update")
              and c.params.get("channel") == channel]
    assert posted == []
    assert count(shop, "SELECT count(*) FROM tickets") == 0
    assert count(shop, "SELECT count(*) FROM refunds") == INITIAL_REFUNDS
    assert count(db, "SELECT count(*) FROM pending_actions") == 0
    assert count(db, "SELECT count(*) FROM sessions WHERE status = 'handed_off'") == 0
    assert report.returncode == 0, report.stderr
    for text in MESSAGES:
        assert f"message: {text}" in report.stdout
    assert "would:   propose process_refund" in report.stdout and "would:   run escalate_to_human" in report.stdout
    assert "would:   run create_ticket" in report.stdout and "refund of 64.00 for order A-1120" in report.stdout
    runs = json.loads(report_json.stdout)["runs"]
    assert {r["channel"] for r in runs} == {"slack_dm"} and {r["tenant"] for r in runs} == {ACME}
    assert {r["intent"] for r in runs} >= {"get_refund", "contact_human_agent", "payment_issue"}

    # Shadow off: the same conversation is answered, not left silent by a would-be handoff.
    tenants.write_text(TENANTS)
    async with deskhand_run(env, err):
        later = emu.dm(ACME, ALICE, "where is order A-1042?", thread_ts=first["ts"])
        await emu.push_event(ACME, later)
        answer = await emu.wait_for_call("chat.update", answered(channel, "A-1042"), timeout=60)

    placeholder = next(c for c in emu.calls_to("chat.postMessage") if c.params["channel"] == channel)
    assert placeholder.params["thread_ts"] == first["ts"] and answer.params["ts"] == placeholder.response["ts"]
    assert count(db, "SELECT count(DISTINCT session_id) FROM inbox") == 1
    assert count(db, "SELECT count(*) FROM shadow_runs") == len(MESSAGES)
