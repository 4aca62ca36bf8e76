"""The CLI end to end: ask --json, plan, approve, trace, eval."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bot.cli import app

runner = CliRunner()


def test_ask_json_prints_envelope_plan_results_and_reply():
    result = runner.invoke(app, ["ask", "where is order A-1042?", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["plan"]["intent"] == "track_order"
    assert data["tool_results"][0]["tool"] == "get_order_status"
    assert "A-1042" in data["reply"] and data["envelope"]["text"] == "where is order A-1042?"


def test_plan_reads_jsonl_and_writes_one_plan_per_line(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "where is order A-1042?"}\nnot json\n{"text": "hi"}\n')
    result = runner.invoke(app, ["plan", str(f)])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines[0]["intent"] == "track_order" and "error" in lines[1] and lines[2]["intent"] == "greeting"


def test_approve_from_the_cli_and_trace():
    asked = json.loads(runner.invoke(app, ["ask", "I want a refund for A-1120", "--json", "--user", "U_ADA"]).output)
    action = asked["pending_action_id"]
    own = runner.invoke(app, ["approve", action, "--as", "U_ADA"])
    assert own.exit_code == 1 and "own request" in own.output
    ok = runner.invoke(app, ["approve", action, "--as", "U_LEAD"])
    assert ok.exit_code == 0 and "Approved by U_LEAD" in ok.output
    trace = runner.invoke(app, ["trace", asked["correlation_id"]])
    assert "PLAN" in trace.output and "TOOL_LOOP" in trace.output


def test_chat_session_multi_turn():
    result = runner.invoke(app, ["chat"], input="where is my order?\nA-1042\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "Which order number" in result.output
    assert "A-1042 has shipped" in result.output


def test_help_teaches():
    result = runner.invoke(app, ["ask", "--help"])
    assert "Example:" in result.output


def test_replay_reports_unchanged_plans():
    runner.invoke(app, ["ask", "where is order A-1042?"])
    runner.invoke(app, ["ask", "what payment methods do you accept"])
    result = runner.invoke(app, ["replay", "--all"])
    assert result.exit_code == 0, result.output
    assert "2 replayed, 0 changed" in result.output
    assert "track_order ['get_order_status'] -> track_order ['get_order_status']" in result.output


def test_logs_are_json_with_the_turn_context_bound(tmp_path):
    runner.invoke(app, ["ask", "where is order A-1042?"])
    log_file = tmp_path / "home" / "deskhand.log"
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    turn = [e for e in events if e["event"] == "turn_done"][0]
    assert turn["correlation_id"] and turn["tenant_id"] == "T_DEMO" and turn["session_id"].startswith("cli:")
    assert turn["channel"] == "cli" and turn["level"] == "info"
