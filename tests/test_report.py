"""`deskhand report`, over turns run through the orchestrator with the LLM planner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.contracts import Channel, MessageEnvelope
from bot.reporting import percentile
from openai_server import error_reply, plan_reply
from test_llm_planner import FALLBACK, SMALL, TRACK, Router, make_settings, plan_of, runtime


def envelope(text: str, tenant: str, channel: Channel, session: str) -> MessageEnvelope:
    return MessageEnvelope(tenant_id=tenant, channel=channel, user_id="U_ADA", session_id=session, text=text)


@pytest.fixture
async def recorded(tmp_path):
    """Three turns: an order lookup (T_DEMO, Slack), a handoff (T_OPEN, email), and one
    with every model down (T_DEMO, Slack, planned by the rules planner)."""
    from openai_server import OpenAIServer

    human = plan_of("contact_human_agent", 0.95, [{"tool": "escalate_to_human", "args": {"reason": "asked"}}])
    async with OpenAIServer() as server:
        server.set_script(Router(
            plans=[plan_reply(TRACK, usage=(1000, 200)), plan_reply(human, usage=(300, 30))],
            replies=[plan_reply({"text": "Order A-1042 has shipped."}, usage=(500, 50))]))
        settings = make_settings(tmp_path, server)
        async with runtime(settings) as rt:
            await rt.orchestrator.handle(envelope("where is my order A-1042?", "T_DEMO", Channel.slack_dm, "s-1"))
            await rt.orchestrator.handle(envelope("a person please", "T_OPEN", Channel.email, "s-2"))
            server.set_script(lambda body, i: error_reply(503))
            await rt.orchestrator.handle(envelope("where is A-1001?", "T_DEMO", Channel.slack_dm, "s-3"))
    return settings.db_path


def run_report(*args: str) -> str:
    # The CLI runs its own event loop (asyncio.run), so the tests that call it are plain functions.
    result = CliRunner().invoke(app, ["report", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_report_json(recorded):
    rep = json.loads(run_report("--db", str(recorded), "--json"))

    assert rep["turns"] == 3
    assert rep["latency_ms"]["p50"] > 0 and rep["latency_ms"]["p95"] >= rep["latency_ms"]["p50"]
    assert rep["latency_ms"]["by_channel"]["slack_dm"]["turns"] == 2
    assert rep["latency_ms"]["by_channel"]["email"]["turns"] == 1
    assert rep["intents"] == {"track_order": 2, "contact_human_agent": 1}
    assert rep["planners"] == {"llm": 2, "rules": 1}
    assert rep["tools"]["get_order_status"] == {"calls": 2, "ok": 2, "success_rate": 1.0,
                                                "p95_ms": rep["tools"]["get_order_status"]["p95_ms"]}
    assert rep["tools"]["escalate_to_human"]["calls"] == 1
    assert rep["outcomes"]["answered"] == 3 and rep["outcomes"]["handed_off"] == 1
    assert rep["outcomes"]["handoff_rate"] == pytest.approx(1 / 3, abs=1e-4)

    llm = rep["llm"]
    assert llm["calls"] == 5  # plan + draft, plan, and two failed calls
    assert (llm["tokens_in"], llm["tokens_out"]) == (1800, 280)
    assert llm["cost_usd"] == pytest.approx(0.0014 + 0.0006 + 0.00036)
    by_tenant = {r["key"]: r for r in llm["by_tenant"]}
    assert by_tenant["T_DEMO"]["cost_usd"] == pytest.approx(0.002)
    assert by_tenant["T_DEMO"]["calls"] == 4 and by_tenant["T_DEMO"]["failed"] == 2
    assert by_tenant["T_OPEN"]["tokens_in"] == 300
    by_intent = {r["key"]: r for r in llm["by_intent"]}
    assert by_intent["track_order"]["tokens_in"] == 1500
    assert by_intent["contact_human_agent"]["cost_usd"] == pytest.approx(0.00036)
    by_channel = {r["key"]: r for r in llm["by_channel"]}
    assert set(by_channel) == {"slack_dm", "email"} and by_channel["email"]["calls"] == 1
    by_model = {r["key"]: r for r in llm["by_model"]}
    assert by_model[SMALL]["calls"] == 4 and by_model[FALLBACK]["failed"] == 1


def test_report_text_and_tenant_filter(recorded):
    text = run_report("--db", str(recorded))
    assert text.startswith("Deskhand report (all tenants, all time)")
    for heading in ("Turns: 3", "Handoffs: 1 of 3 answered", "Intents:", "Tools:",
                    "Model tokens and cost by tenant:", "Model tokens and cost by intent:",
                    "Model tokens and cost by channel:"):
        assert heading in text
    assert "T_DEMO" in text and "track_order" in text and "cost $0.002360" in text

    only = json.loads(run_report("--db", str(recorded), "--json", "--tenant", "T_OPEN"))
    assert only["turns"] == 1 and only["intents"] == {"contact_human_agent": 1}
    assert only["outcomes"]["handoff_rate"] == 1.0 and only["llm"]["tokens_in"] == 300


def test_report_on_an_empty_database(tmp_path):
    rep = json.loads(run_report("--db", str(tmp_path / "empty.db"), "--json"))
    assert rep["turns"] == 0 and rep["latency_ms"]["p50"] is None and rep["outcomes"]["handoff_rate"] is None
    assert "Turns: 0" in run_report("--db", str(tmp_path / "empty.db"))


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 95) == 95.0
    assert percentile([7.0], 95) == 7.0 and percentile([], 50) is None
