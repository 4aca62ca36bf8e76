"""A message that kills the real `deskhand run` process three times is dead-lettered: the
next start does not run its turn again, the customer gets one safe reply in Slack, one
ticket is opened, and `deskhand dlq` shows it; `dlq retry` then lets one start answer it.

The kill is deterministic: the tenant's shop (tests/shop_server.py, real HTTP) holds every
order lookup, and the test SIGKILLs the process once the shop has seen the call."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from bot.brain.drafting import SAFE_FAILURE
from bot.dead_letters import PROCESS_STOPPED
from bot.slack import blocks as bk
from bot.store import DELIVERED, Store
from deskhand_process import DESKHAND, run_env, start_run, stop_run
from slack_emulator import SlackEmulator, Workspace
from tests.shop_server import ShopServer

ACME, ALICE, LEAD, SUPPORT = "T0ACME0001", "U0ALICE01", "U0LEAD001", "C0SUPPORT1"


@pytest.fixture
async def emu():
    acme = Workspace(ACME, name="Acme")
    acme.add_user(ALICE, "alice", email="pat@example.com")
    acme.add_user(LEAD, "lead")
    acme.add_channel(SUPPORT, "support", [LEAD])
    async with SlackEmulator([acme]) as emu:
        yield emu


def shop_env(tmp_path: Path, emu: SlackEmulator, shop: ShopServer) -> dict:
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(json.dumps({"tenants": {ACME: {
        "name": "Acme", "support_channel": SUPPORT, "approvers": [LEAD],
        "backend": {"base_url": shop.url, "token": "shop-token", "timeout_s": 60}}}}))
    return run_env(emu, tmp_path / "home", DESKHAND_TENANTS_FILE=str(tenants), DESKHAND_TOOL_TIMEOUT_S="60")


async def stop(proc: asyncio.subprocess.Process, err: Path) -> None:
    assert await stop_run(proc) == 0, err.read_text()


async def cli(env: dict, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(DESKHAND, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


def answers(emu: SlackEmulator, channel: str, text: str) -> list:
    return [c for method in ("chat.postMessage", "chat.update") for c in emu.calls_to(method)
            if c.params.get("channel") == channel and c.params.get("text") != bk.PLACEHOLDER
            and text in (c.params.get("text") or "")]


async def test_a_message_that_kills_deskhand_run_three_times_is_dead_lettered(emu, shop, tmp_path):
    env, err = shop_env(tmp_path, emu, shop), tmp_path / "run.err"
    shop.script("order", "hang")
    dm = emu.dm(ACME, ALICE, "where is order A-2001?")
    channel = dm["channel"]

    for kill in range(1, 4):  # the message arrives, then every restart resumes it: three kills
        proc = await start_run(env, err)
        if kill == 1:
            await emu.push_event(ACME, dm)
        await shop.wait_for_requests(kill, route="order", timeout=120)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    store = Store(tmp_path / "home" / "deskhand.db")
    [row] = store.inbox_unfinished()
    assert row["attempts"] == 3 and store.message_for(row["id"]) is None
    store.close()

    proc = await start_run(env, err)  # the fourth start dead-letters it instead of running it
    try:
        await emu.wait_for(lambda e: answers(e, channel, SAFE_FAILURE[:40]), timeout=120)
        await shop.wait_for_requests(1, route="ticket", timeout=60)
    finally:
        await stop(proc, err)

    assert len([r for r in shop.requests if r["route"] == "order"]) == 3  # never started a 4th time
    assert len(answers(emu, channel, SAFE_FAILURE[:40])) == 1
    assert len(shop.tickets) == 1
    store = Store(tmp_path / "home" / "deskhand.db")
    inbox = store.inbox_get(row["id"])
    assert inbox["status"] == DELIVERED and inbox["attempts"] == 3
    assert store.dead_letter_count(ACME) == 1
    store.close()

    code, out, _ = await cli(env, "resume")  # the next start is clean
    assert code == 0 and "resumed 0 turn(s)" in out
    code, out, _ = await cli(env, "dlq", "list")
    assert code == 0 and row["id"] in out and PROCESS_STOPPED in out and "attempts=3" in out

    # Retried, with the shop answering again: one start answers it, once.
    code, out, stderr = await cli(env, "dlq", "retry", row["id"], "--as", LEAD)
    assert code == 0, stderr
    shop.script("order", "ok")
    proc = await start_run(env, err)
    try:
        await emu.wait_for(lambda e: answers(e, channel, "A-2001 has shipped"), timeout=120)
    finally:
        await stop(proc, err)
    assert len([r for r in shop.requests if r["route"] == "order"]) == 4
    assert len(answers(emu, channel, "A-2001 has shipped")) == 1
    assert len(answers(emu, channel, SAFE_FAILURE[:40])) == 1
    texts = [m.get("text", "") for m in emu.messages(channel, ACME)]
    assert [t for t in texts if SAFE_FAILURE[:40] in t] and [t for t in texts if "A-2001 has shipped" in t], texts
    code, out, _ = await cli(env, "dlq", "list", "--all")
    assert code == 0 and "retried" in out
    assert len(shop.tickets) == 1
