"""One correlation id follows a message from intake to reply: the intake's log lines, the
turn's log lines, its trace spans and `deskhand trace`. On the real `deskhand run` process
against the Slack emulator, and on the mail bridge with a real SMTP client and relay."""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import datetime

from bot.contracts import Channel, MessageEnvelope
from bot.logs import configure_logging
from bot.slack import blocks as bk
from deskhand_process import DESKHAND, deskhand_run, run_env
from tests.test_mail_bridge import email, mail_settings, relay, send, serving  # noqa: F401 - `relay` is a fixture
from tests.test_slack_app import ACME, ALICE, TENANTS, emu  # noqa: F401 - `emu` is a fixture


def log_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def deskhand_trace(env: dict, correlation_id: str) -> str:
    proc = await asyncio.create_subprocess_exec(DESKHAND, "trace", correlation_id, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_a_slack_message_has_one_correlation_id_from_intake_to_reply(emu, tmp_path):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(TENANTS)
    home = tmp_path / "home"
    env = run_env(emu, home, DESKHAND_TENANTS_FILE=str(tenants), DESKHAND_LOG_LEVEL="INFO")
    async with deskhand_run(env, tmp_path / "run.err"):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        first = await emu.push_event(ACME, dm)
        event_id = emu.envelopes[first]["payload"]["event_id"]
        await emu.wait_for_call("chat.update", lambda c: c.params["channel"] == dm["channel"]
                                and c.params["text"] != bk.PLACEHOLDER, timeout=60)
        retry = await emu.push_event(ACME, dm, retry_attempt=1, event_id=event_id)  # Slack redelivers it
        await emu.wait_for_ack(retry, timeout=30)

    lines = log_lines((home / "deskhand.log").read_text())
    intake = [line for line in lines if line["event"] == "message_received"]
    duplicate = [line for line in lines if line["event"] == "duplicate_event"]
    done = [line for line in lines if line["event"] == "turn_done"]
    assert len(intake) == 1 and len(duplicate) == 1 and len(done) == 1, [line["event"] for line in lines]
    correlation_id = intake[0]["correlation_id"]
    assert intake[0]["event_id"] == event_id and intake[0]["surface"] == "slack"
    assert duplicate[0]["correlation_id"] == correlation_id  # the redelivery is the same message
    turn_lines = [line for line in lines if line.get("logger") == "deskhand.turn" or line["event"] == "turn_done"]
    assert turn_lines and {line["correlation_id"] for line in turn_lines} == {correlation_id}

    shown = await deskhand_trace(env, correlation_id)
    rows = shown.splitlines()
    assert rows[0].startswith("intake") and "slack" in rows[0] and event_id in rows[0] and "received" in rows[0]
    spans = [re.match(r"\s*\+(\d+\.\d+)s\s+(\S+)", row) for row in rows[1:]]
    assert all(spans), shown
    names = [m.group(2) for m in spans]
    assert names[:7] == ["INTAKE", "ROUTE", "PLAN", "TOOL_LOOP", "DRAFT", "GUARD", "RESPOND"], shown
    offsets = [float(m.group(1)) for m in spans]
    assert offsets == sorted(offsets) and offsets[0] == 0.0


async def test_an_email_has_one_correlation_id_from_intake_to_reply(tmp_path, relay):
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        settings = mail_settings(tmp_path, relay.port)
        async with serving(settings) as (rt, bridge):
            await send(bridge, email(mid="<corr1@example.com>"))
            await relay.wait_for(1)
            [row] = [r for r in rt.store.sync.db["inbox"].rows]
            spans = await rt.store.traces_for(row["correlation_id"])
    finally:
        configure_logging("INFO", stream=io.StringIO())

    lines = log_lines(stream.getvalue())
    received = [line for line in lines if line["event"] == "mail_received"]
    done = [line for line in lines if line["event"] == "turn_done"]
    queued = [line for line in lines if line["event"] == "mail_queued"]
    assert len(received) == 1 and len(done) == 1 and len(queued) == 1
    correlation_id = row["correlation_id"]
    assert received[0]["correlation_id"] == done[0]["correlation_id"] == queued[0]["correlation_id"] == correlation_id
    assert spans[0]["span"] == "INTAKE" and spans[0]["data"]["message_id"] == "<corr1@example.com>"
    assert spans[0]["data"]["surface"] == "email"


async def test_spans_carry_their_own_start_times_in_order(runtime):
    env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U1", session_id="s-spans",
                          text="where is order A-1042?")
    outcome = await runtime.orchestrator.handle(env)
    assert outcome.correlation_id == env.correlation_id
    spans = await runtime.store.traces_for(outcome.correlation_id)
    assert [s["span"] for s in spans] == ["INTAKE", "ROUTE", "PLAN", "TOOL_LOOP", "DRAFT", "GUARD", "RESPOND"]
    starts = [datetime.fromisoformat(s["ts"]) for s in spans]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert starts[0] == env.received_at
    for span, following in zip(spans[1:], spans[2:]):  # each step starts once the one before it ended
        ended = datetime.fromisoformat(span["ts"]).timestamp() + span["duration_ms"] / 1000
        assert datetime.fromisoformat(following["ts"]).timestamp() >= ended - 0.001


def test_a_stored_envelope_from_before_correlation_ids_still_loads():
    stored = ('{"id": "msg_1", "tenant_id": "T", "channel": "cli", "user_id": "U", "session_id": "s",'
              ' "text": "hi", "locale": "en", "attachments": [], "metadata": {},'
              ' "received_at": "2025-01-01T00:00:00+00:00"}')
    assert MessageEnvelope.model_validate_json(stored).correlation_id
