"""A process killed mid-turn loses nothing and, after a restart, replies exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.store import DELIVERED, Store
from bot.surfaces import Surfaces
from tests.shop_server import ShopServer, tenants_yaml

DESKHAND = str(Path(sys.executable).with_name("deskhand"))


async def run_cli(*args, env) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        DESKHAND, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_killed_mid_turn_then_restarted_replies_once(tmp_path):
    shop = await ShopServer().start()
    try:
        tenants = tmp_path / "tenants.yml"
        tenants.write_text(tenants_yaml(shop.url, timeout_s=30))
        home = tmp_path / "home"
        env = {**os.environ, "DESKHAND_HOME": str(home), "DESKHAND_TENANTS_FILE": str(tenants),
               "DESKHAND_TOOL_TIMEOUT_S": "30"}
        shop.script("order", "hang")  # the backend holds the request: the turn is mid-TOOL_LOOP

        proc = await run_cli("ask", "where is order A-2001?", "--tenant", "T_HTTP", "--session", "s-crash", env=env)
        await shop.wait_for_requests(1, route="order", timeout=60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        store = Store(home / "deskhand.db")
        [row] = store.inbox_unfinished()
        assert row["status"] == "processing" and row["session_id"] == "s-crash"
        assert store.message_for(row["id"]) is None
        correlation_id = row["correlation_id"]
        store.close()

        shop.script("order", "ok")
        resumed = await run_cli("resume", env=env)
        out, err = await asyncio.wait_for(resumed.communicate(), 60)
        assert resumed.returncode == 0, err.decode()
        assert "A-2001 has shipped" in out.decode()

        again = await run_cli("resume", env=env)  # a second restart has nothing left to do
        out2, _ = await asyncio.wait_for(again.communicate(), 60)
        assert "A-2001" not in out2.decode() and "resumed 0 turn(s)" in out2.decode()

        store = Store(home / "deskhand.db")
        row = store.inbox_get(row["id"])
        assert row["status"] == DELIVERED and row["attempts"] == 2
        assert row["correlation_id"] == correlation_id  # the re-run is the same message's turn
        assert "RESPOND" in [s["span"] for s in store.traces_for(correlation_id)]
        replies = store.db.execute(
            "SELECT count(*) FROM messages WHERE inbox_id = ? AND role = 'assistant'", [row["id"]]).fetchone()[0]
        assert replies == 1
        store.close()
    finally:
        await shop.stop()


async def test_a_reply_stored_before_the_crash_is_delivered_not_recomputed(runtime):
    from bot.contracts import Channel, MessageEnvelope

    env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U1", session_id="s1",
                          text="where is order A-1042?")
    first = await runtime.orchestrator.handle(env)
    assert first.state == "DONE"

    delivered = []

    class Collect:
        async def deliver(self, envelope, outcome):
            delivered.append(outcome.reply)

        async def notify(self, session, text, **info):
            pass

    async with runtime.orchestrator.delivering_to(Surfaces(cli=Collect())):
        resumed = await runtime.orchestrator.resume()  # ANSWERED but never delivered
        assert [o.reply for o in resumed] == [first.reply] == delivered
        assert await runtime.orchestrator.resume() == []
        assert (await runtime.store.inbox_get(env.id))["attempts"] == 1  # not re-planned
