"""The ops endpoints (/healthz, /readyz, /metrics): on the real `deskhand run` process against
the Slack emulator, and in process for the parts that need a controlled clock or store.
Nothing sleeps to synchronise: tests poll an endpoint or a file until a deadline."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope, PendingAction
from bot.hands.breaker import BreakerBoard
from bot.metrics import DeskhandMetrics
from bot.ops_http import serve_ops
from bot.runtime import open_runtime
from bot.slack import blocks as bk
from deskhand_process import deskhand_run, run_env
from slack_emulator import SlackEmulator, Workspace

ACME, ALICE = "T0ACME0001", "U0ALICE01"
DEADLINE_S = 30.0


@pytest.fixture
async def emu():
    acme = Workspace(ACME, name="Acme")
    acme.add_user(ALICE, "alice", email="ada@example.com")
    async with SlackEmulator([acme]) as emu:
        yield emu


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, parsed by prometheus-client's own parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(scraped: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scraped.items() if n == name and wanted <= ls)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def poll(probe: Callable, until: Callable, what: str):
    """Call `probe()` until `until(result)` holds; fail after DEADLINE_S with the last result."""
    last = None
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not until(last := await probe()):
                await asyncio.sleep(0.05)  # polling interval, not synchronisation
    except TimeoutError:
        pytest.fail(f"{what}: not within {DEADLINE_S:g} s; last {last}")
    return last


async def readyz(http, url) -> tuple[int, dict]:
    async with http.get(f"{url}/readyz") as response:
        return response.status, await response.json()


# ------------------------------------------------------------------ the real `deskhand run`


async def test_deskhand_run_serves_health_readiness_and_metrics(emu, tmp_path):
    home = tmp_path / "run-home"
    env = run_env(emu, home, DESKHAND_SLACK_PING_INTERVAL_S="0.2")
    async with deskhand_run(env, tmp_path / "run.err") as proc:
        port_file = home / "ops.port"
        port = await poll(lambda: asyncio.sleep(0, port_file.read_text().strip() if port_file.exists() else ""),
                          str.isdigit, "ops.port")
        url = f"http://127.0.0.1:{port}"
        assert f"Ops: {url}/healthz".encode() in await asyncio.wait_for(proc.stdout.readline(), 30)
        async with aiohttp.ClientSession() as http:
            assert (await get(http, f"{url}/healthz"))[0] == 200
            status, report = await poll(lambda: readyz(http, url), lambda r: r[0] == 200, "ready once connected")
            assert report["checks"]["slack"]["workspaces"] == {ACME: {"connected": True}}
            assert report["checks"]["store"]["ok"] is True

            before = samples((await get(http, f"{url}/metrics"))[1])
            dm = emu.dm(ACME, ALICE, "where is order A-1042?")
            await emu.push_event(ACME, dm)
            await emu.wait_for_call("chat.update", lambda c: c.params["channel"] == dm["channel"]
                                    and c.params["text"] != bk.PLACEHOLDER, timeout=60)
            turn = {"tenant": ACME, "intent": "track_order", "state": "DONE"}
            after = await poll(lambda: _scrape(http, url), lambda s: total(s, "deskhand_turns_total", **turn)
                               > total(before, "deskhand_turns_total", **turn), "a turn counted")
            assert total(after, "deskhand_turn_seconds_count") == total(before, "deskhand_turn_seconds_count") + 1
            assert total(after, "deskhand_tool_seconds_count", tool="get_order_status", ok="true") >= 1
            assert total(after, "deskhand_slack_ack_seconds_count", type="events_api") >= 1

            # The socket drops; the reconnect is held at apps.connections.open until readiness said so.
            reconnect = emu.hold("apps.connections.open", lambda params: True)
            await emu.drop_sockets()
            status, report = await poll(lambda: readyz(http, url), lambda r: r[0] == 503, "503 after the drop")
            assert report["ready"] is False and report["status"] == "not_ready"
            assert report["checks"]["slack"]["workspaces"] == {ACME: {"connected": False}}
            assert (await get(http, f"{url}/healthz"))[0] == 200  # alive, only not ready
            reconnect.set()
            await poll(lambda: readyz(http, url), lambda r: r[0] == 200, "200 after the reconnect")
            assert emu.connections_opened == 2
    assert not (home / "ops.port").exists()  # a stopped process leaves no port to probe


async def _scrape(http, url) -> dict:
    return samples((await get(http, f"{url}/metrics"))[1])


# ------------------------------------------------------------------ in process


def test_breaker_gauge_shows_each_breakers_current_state():
    now = [0.0]
    board = BreakerBoard(failures_to_open=2, window_s=60, cooldown_s=30, clock=lambda: now[0])
    board.get("create_ticket", "T1").record_failure()
    board.get("get_order_status", "T1")
    metrics = DeskhandMetrics(Path("absent.db"), board)

    def state_of(tool: str) -> dict[str, float]:
        scraped = samples(asyncio.run(metrics.render()).decode())
        return {dict(ls)["state"]: v for (n, ls), v in scraped.items()
                if n == "deskhand_breaker_state" and dict(ls)["tool"] == tool}

    assert state_of("create_ticket") == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    board.get("create_ticket", "T1").record_failure()
    assert state_of("create_ticket") == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    now[0] = 31.0
    assert state_of("create_ticket") == {"closed": 0.0, "open": 0.0, "half_open": 1.0}
    assert state_of("get_order_status") == {"closed": 1.0, "open": 0.0, "half_open": 0.0}


async def test_store_gauges_are_read_at_scrape_time(tmp_path):
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", intent_semantic=False)
    async with open_runtime(settings) as rt:
        assert total(samples((await rt.metrics.render()).decode()), "deskhand_pending_approvals") == 0
        for n in range(2):
            await rt.store.pending_create(PendingAction(
                tenant_id="T1", session_id=f"s{n}", tool="issue_refund", args={"order_id": f"A-{n}"},
                requested_by="U1", idempotency_key=f"k{n}"))
        await rt.store.outbox_add("T1", "email", "s0", "in0", {"text": "hi"})
        failed = await rt.store.outbox_add("T1", "email", "s1", "in1", {"text": "hi"})
        await rt.store.outbox_mark_failed(failed, "relay down", None)
        # A message whose turn was started three times without finishing (three crashes) is
        # dead-lettered on its next start.
        poison = MessageEnvelope(tenant_id="T1", channel=Channel.cli, user_id="U1", session_id="s-poison",
                                 text="where is order A-1042?")
        await rt.store.inbox_add(poison)
        for attempt in range(settings.turn_max_attempts):
            await rt.store.inbox_start(poison.id, f"crashed-{attempt}")
        await rt.orchestrator.process(poison.id)
        scraped = samples((await rt.metrics.render()).decode())
    assert total(scraped, "deskhand_dead_letters", tenant="T1") == 1
    assert total(scraped, "deskhand_pending_approvals", tenant="T1") == 2
    assert total(scraped, "deskhand_outbox_depth", channel="email", status="pending") == 1
    assert total(scraped, "deskhand_outbox_depth", channel="email", status="failed") == 1


async def test_readiness_reports_every_check_and_only_required_ones_decide(tmp_path):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", intent_semantic=False,
                             ops_port=0, planner="llm", openai_api_key="sk-test",
                             openai_base_url=f"http://127.0.0.1:{dead.getsockname()[1]}/v1",
                             ops_ready_requires=["store"])
    try:
        async with open_runtime(settings) as rt, serve_ops(rt) as ops, aiohttp.ClientSession() as http:
            status, report = await poll(lambda: readyz(http, ops.url),
                                        lambda r: r[1]["checks"]["model"]["checked_at"] is not None, "model probed")
    finally:
        dead.close()
    assert (status, report["ready"], report["status"]) == (200, True, "degraded")
    checks = report["checks"]
    assert set(checks) == {"slack", "store", "kb", "model", "breakers"}
    assert {name: c["required"] for name, c in checks.items()} == {
        "slack": False, "store": True, "kb": False, "model": False, "breakers": False}
    assert checks["store"]["ok"] is True
    assert checks["slack"] == {"ok": False, "workspaces": {}, "required": False}  # no Slack in this process
    assert checks["model"]["ok"] is False and checks["model"]["error"] == "ClientConnectorError"
    assert checks["kb"]["ok"] is False and checks["kb"]["tenants"]["T_DEMO"]["state"] == "empty"
    assert checks["breakers"] == {"ok": True, "tripped": [], "required": False}


async def test_an_ops_port_in_use_leaves_the_bot_running_without_endpoints(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", intent_semantic=False,
                             ops_port=taken.getsockname()[1])
    try:
        async with open_runtime(settings) as rt, serve_ops(rt) as ops:
            assert ops is None
            assert not (settings.home / "ops.port").exists()
    finally:
        taken.close()


async def test_model_calls_are_counted_in_tokens_and_cost_and_the_model_is_probed(tmp_path):
    from bot.contracts import Channel, MessageEnvelope
    from openai_server import OpenAIServer, plan_reply

    plan = {"intent": "track_order", "confidence": 0.9,
            "steps": [{"tool": "get_order_status", "args": {"order_id": "A-1042"}}]}
    reply = {"text": "Order A-1042 has shipped with UPS and should arrive by 2026-11-24."}
    async with OpenAIServer([plan_reply(plan, usage=(100, 20)), plan_reply(reply, usage=(50, 10))]) as server:
        settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "no-kb", intent_semantic=False,
                                 ops_port=0, planner="llm", openai_base_url=server.base_url,
                                 openai_api_key="test-key", llm_small_model="small", llm_prices={"small": (1.0, 2.0)})
        async with open_runtime(settings) as rt, serve_ops(rt) as ops, aiohttp.ClientSession() as http:
            outcome = await rt.orchestrator.handle(MessageEnvelope(
                tenant_id="T_DEMO", channel=Channel.slack_dm, user_id="U_ADA", session_id="s-1",
                text="where is my order A-1042?"))
            scraped = await _scrape(http, ops.url)
            _, report = await poll(lambda: readyz(http, ops.url),
                                   lambda r: r[1]["checks"]["model"]["checked_at"] is not None, "model probed")
    assert outcome.state == "DONE"
    assert total(scraped, "deskhand_llm_calls_total", model="small", ok="true") == 2
    assert total(scraped, "deskhand_llm_tokens_total", model="small", direction="in") == 150
    assert total(scraped, "deskhand_llm_tokens_total", model="small", direction="out") == 30
    assert total(scraped, "deskhand_llm_cost_usd_total", model="small") == pytest.approx((150 * 1.0 + 30 * 2.0) / 1e6)
    assert total(scraped, "deskhand_turns_total", state="DONE", intent="track_order", channel="slack_dm") == 1
    assert report["checks"]["model"]["ok"] is True and report["checks"]["model"]["required"] is False
