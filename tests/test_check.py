"""`deskhand check` (bot/check.py): the real executable against the Slack emulator, a closed
SMTP port, a dead and a live OpenAI-compatible server, a real KB and a real SQLite store."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from bot.check import manifest_scopes
from bot.config import load_settings
from kb_loader.kb import KnowledgeBase
from openai_server import OpenAIServer, text_reply
from slack_emulator import SlackEmulator, Workspace

DESKHAND = str(Path(sys.executable).with_name("deskhand"))
ACME, GLOBEX = "T0ACME0001", "T0GLOBEX01"
SUPPORT, GLOBEX_SUPPORT = "C0SUPPORT1", "C0GLOBEX01"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def emu():
    acme = Workspace(ACME, name="Acme", scopes=",".join(sorted(manifest_scopes())))
    acme.add_channel(SUPPORT, "support")
    async with SlackEmulator([acme]) as emulator:
        yield emulator


@pytest.fixture
def env(tmp_path, emu):
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    (kb_dir / "refunds.md").write_text("# Refunds\n\nRefunds take five business days.\n")
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(f"tenants:\n  {ACME}:\n    support_channel: {SUPPORT}\n")
    return {**os.environ, "DESKHAND_HOME": str(tmp_path / "home"), "DESKHAND_KB_DIR": str(kb_dir),
            "DESKHAND_TENANTS_FILE": str(tenants), "DESKHAND_DEFAULT_TENANT": ACME,
            "SLACK_BOT_TOKEN": emu.team.bot_token, "DESKHAND_SLACK_API_URL": emu.api_url}


async def deskhand_check(env: dict) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(DESKHAND, "check", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode().splitlines()


async def poll(predicate, timeout: float):
    """Poll a file-backed condition until it holds (a log file wakes no one), with a deadline."""
    async with asyncio.timeout(timeout):
        while not (result := predicate()):
            await asyncio.sleep(0.05)
        return result


def line(lines: list[str], name: str) -> str:
    return next(ln for ln in lines if ln[2:].startswith(name + " "))


def hint_after(lines: list[str], name: str) -> str:
    return lines[lines.index(line(lines, name)) + 1]


async def test_check_marks_slack_ok_and_a_closed_relay_a_dead_llm_and_a_stranger_channel_failed(emu, env):
    globex = emu.add_workspace(Workspace(GLOBEX, name="Globex"))  # the emulator's scopes: one is missing
    globex.add_channel(GLOBEX_SUPPORT, "globex-support", bot_member=False)
    tenants = Path(env["DESKHAND_TENANTS_FILE"])
    tenants.write_text(tenants.read_text() + f"  {GLOBEX}:\n    support_channel: {GLOBEX_SUPPORT}\n")
    env = {**env, "DESKHAND_SLACK_WORKSPACES": f'[{{"bot_token": "{globex.bot_token}", "app_token": "xapp-1"}}]',
           "DESKHAND_SMTP_ENABLED": "1", "DESKHAND_SMTP_PORT": "0", "DESKHAND_RELAY_PORT": str(closed_port()),
           "DESKHAND_PLANNER": "llm", "DESKHAND_OPENAI_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}

    code, lines = await deskhand_check(env)

    assert code == 1, lines
    assert line(lines, f"slack {ACME}").startswith("✓") and line(lines, f"slack {ACME} scopes").startswith("✓")
    assert line(lines, f"slack {ACME} channel {SUPPORT}").startswith("✓")
    assert line(lines, f"slack {GLOBEX}").startswith("✓")
    scopes = line(lines, f"slack {GLOBEX} scopes")
    assert scopes.startswith("✗") and "groups:history" in scopes  # asked for by manifest.yml, not granted
    stranger = f"slack {GLOBEX} channel {GLOBEX_SUPPORT}"
    assert line(lines, stranger).startswith("✗") and "/invite @deskhand" in hint_after(lines, stranger)
    assert line(lines, "smtp relay").startswith("✗") and "DESKHAND_RELAY_PORT" in hint_after(lines, "smtp relay")
    assert line(lines, "llm").startswith("✗") and "DESKHAND_OPENAI_BASE_URL" in hint_after(lines, "llm")
    assert line(lines, f"kb {ACME}").startswith("✗") and "kb reload" in hint_after(lines, f"kb {ACME}")
    assert line(lines, "store").startswith("✓") and line(lines, "encoder").startswith("✓")
    assert {c.params.get("channel") for c in emu.calls_to("conversations.info")} == {SUPPORT, GLOBEX_SUPPORT}


async def test_check_is_all_green_and_exits_0_when_every_part_answers(emu, env):
    settings = load_settings(home=Path(env["DESKHAND_HOME"]), kb_dir=Path(env["DESKHAND_KB_DIR"]))
    await asyncio.to_thread(KnowledgeBase(settings).reload, ACME)
    async with OpenAIServer(lambda body, index: text_reply("pong")) as llm:
        code, lines = await deskhand_check({**env, "DESKHAND_PLANNER": "llm", "DESKHAND_OPENAI_API_KEY": "sk-test",
                                            "DESKHAND_OPENAI_BASE_URL": llm.base_url})
        assert len(llm.requests) == 1 and llm.requests[0]["max_tokens"] == 1

    assert code == 0, lines
    assert all(ln.startswith("✓") for ln in lines), lines
    names = {ln[2:].split("  ")[0].strip() for ln in lines}
    assert {"config", f"slack {ACME}", f"slack {ACME} scopes", f"slack {ACME} channel {SUPPORT}", "llm",
            "encoder", f"kb {ACME}", "store"} <= names
    (store,) = [ln for ln in lines if ln[2:].startswith("store")]
    assert "writable" in store


async def test_deskhand_run_logs_one_line_per_check_at_start_and_keeps_running_on_a_cross(emu, env, tmp_path):
    import json
    import signal

    log_file = tmp_path / "run.log"
    env = {**env, "SLACK_APP_TOKEN": emu.team.app_token, "DESKHAND_LOG_FILE": str(log_file),
           "DESKHAND_SMTP_ENABLED": "1", "DESKHAND_SMTP_PORT": "0", "DESKHAND_RELAY_PORT": str(closed_port())}
    proc = await asyncio.create_subprocess_exec(DESKHAND, "run", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    wanted = {"config", "store", "smtp relay", f"slack {ACME}", f"slack {ACME} channel {SUPPORT}"}

    def startup_checks() -> dict[str, dict]:
        lines = log_file.read_text().splitlines() if log_file.exists() else []
        events = [json.loads(ln) for ln in lines if '"startup_check"' in ln]
        return {e["check"]: e for e in events}

    try:
        assert b"connected to Slack" in await asyncio.wait_for(proc.stdout.readline(), 240)
        checks = await poll(lambda: (found := startup_checks()) and wanted <= set(found) and found, 120)
        assert checks["smtp relay"]["ok"] is False and checks["smtp relay"]["level"] == "warning"
        assert checks["smtp relay"]["hint"] and checks["store"]["ok"] is True
        assert checks[f"slack {ACME} channel {SUPPORT}"]["ok"] is True
        dm = emu.dm(ACME, "U0ALICE01", "hello")
        await emu.push_event(ACME, dm)  # a ✗ at start is logged, not fatal: the bot still answers
        await emu.wait_for_call("chat.update", lambda c: c.params.get("channel") == dm["channel"], timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0, (await proc.stderr.read()).decode()


async def test_a_host_that_accepts_and_never_answers_is_a_cross_not_a_hang(env):
    with socket.socket() as silent:  # connections queue in the backlog and never get a byte
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        code, lines = await deskhand_check({
            **env, "DESKHAND_CHECK_TIMEOUT_S": "1", "DESKHAND_SMTP_ENABLED": "1", "DESKHAND_RELAY_PORT": str(port),
            "DESKHAND_PLANNER": "llm", "DESKHAND_OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"})
    assert code == 1
    for name in ("smtp relay", "llm"):  # the probe's own timeout, or the backstop on a busy host
        assert line(lines, name).startswith("✗") and any(word in line(lines, name) for word in ("Timeout", "no answer"))
        assert "hint:" in hint_after(lines, name)
    # The other probes still report (each has its own timeout; with a 1 s budget a loaded
    # machine may time Slack out too, so only that it was probed is asserted).
    assert any(ln[2:].startswith("slack ") for ln in lines), lines
