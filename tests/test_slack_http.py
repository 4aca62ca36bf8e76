"""HTTP mode (`DESKHAND_SLACK_MODE=http`): the real `deskhand run` process behind its Request
URL, with the Slack emulator POSTing events, clicks and slash commands to it as Slack does
(signed with the app's signing secret, `X-Slack-Retry-*` on a redelivery, 3 s to answer).
The HTTP answer is the ack; the reply comes later through the Web API. Every wait is on
observable state: the emulator's record of deliveries and calls, the log, the store."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from bot.slack import blocks as bk
from bot.slack.subcommands import USAGE
from bot.slack_ids import message_id
from deskhand_process import CONNECT_TIMEOUT_S, DESKHAND, deskhand_run, run_env
from test_correlation import log_lines
from test_kb_lifecycle import until
from test_slack_app import ACME, ALICE, BOB, DAVE, ERIN, GINA, GLOBEX, GUS, TENANTS, answered, emu

__all__ = ["emu"]  # the Slack emulator fixture

TURN_S = 60  # a turn on a cold machine (the first one loads the encoder)


@asynccontextmanager
async def http_run(emu, tmp_path: Path, *, globex: bool = False):
    """`deskhand run` in HTTP mode on a free port, with no app-level token at all; yields its
    home and its Request URL (`/slack/events`), which the emulator's apps are pointed at."""
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(TENANTS)
    home = tmp_path / "home"
    env = run_env(emu, home, DESKHAND_TENANTS_FILE=str(tenants), DESKHAND_SLACK_MODE="http",
                  SLACK_SIGNING_SECRET=emu.team.signing_secret, DESKHAND_SLACK_HTTP_PORT="0")
    del env["SLACK_APP_TOKEN"]
    if globex:
        other = emu.workspace(GLOBEX)
        env["DESKHAND_SLACK_WORKSPACES"] = json.dumps([{"bot_token": other.bot_token,
                                                        "signing_secret": other.signing_secret}])
    async with deskhand_run(env, tmp_path / "run.err"):
        port = int((home / "slack_http.port").read_text())  # written before "connected" is printed
        url = f"http://127.0.0.1:{port}/slack/events"
        emu.use_request_url(ACME, url)
        yield home, url


def feedback_rows(home: Path) -> list[dict]:
    with sqlite3.connect(home / "deskhand.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM feedback ORDER BY id")]


async def test_a_signed_dm_is_acked_then_answered_and_its_retry_is_acked_and_not_answered(emu, tmp_path):
    async with http_run(emu, tmp_path) as (home, url):
        verification = await emu.verify_request_url(ACME)  # what Slack does when the URL is saved
        assert verification.status == 200
        assert json.loads(verification.response)["challenge"] == json.loads(verification.body)["challenge"]

        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        first = await emu.wait_for_delivery(await emu.push_event(ACME, dm), timeout=30)
        reply = await emu.wait_for_call("chat.update", answered(dm["channel"], "A-1042"), timeout=TURN_S)
        assert first.status == 200 and first.response == ""  # acked, with nothing in the ack
        assert first.time < reply.time  # the ack did not wait for the answer: it came through the Web API

        event_id = json.loads(first.body)["event_id"]
        retry_id = await emu.push_event(ACME, dm, retry_attempt=1, event_id=event_id)  # Slack redelivers it
        retry = await emu.wait_for_delivery(retry_id, timeout=30)
        assert retry.headers["X-Slack-Retry-Num"] == "1" and retry.headers["X-Slack-Retry-Reason"] == "http_timeout"
        assert retry.status == 200  # acked, so Slack stops retrying
        # The verdict is logged before the ack is sent: once acked, the retry was dropped.
        duplicate = [line for line in log_lines((home / "deskhand.log").read_text())
                     if line["event"] == "duplicate_event"]
        assert [(d["event_id"], d["retry"]) for d in duplicate] == [(event_id, "1")]

        # No Socket Mode in HTTP mode: no app-level token was given, none was used; /readyz
        # counts the Request URL serving as Slack being connected.
        assert emu.connections_opened == 0 and not emu.calls_to("apps.connections.open")
        ops_port = (home / "ops.port").read_text().strip()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{ops_port}/readyz") as ready:
            report = await ready.json()
        assert report["checks"]["slack"]["ok"] is True, report
        assert report["checks"]["slack"]["workspaces"] == {ACME: {"connected": True}}

    lines = log_lines((home / "deskhand.log").read_text())
    assert [line["event"] for line in lines].count("turn_done") == 1
    placeholders = [c for c in emu.calls_to("chat.postMessage") if c.params["channel"] == dm["channel"]]
    assert len(placeholders) == 1 and len(emu.calls_to("chat.update")) == 1


async def test_a_forged_or_stale_request_gets_401_and_is_not_answered(emu, tmp_path):
    async with http_run(emu, tmp_path, globex=True) as (home, url):
        # A wrong secret, a replayed timestamp (over five minutes old), and a second app's
        # request (signed with its own secret) sent to the first app's URL.
        forged = emu.dm(ACME, DAVE, "where is order A-1042?")
        stale = emu.dm(ACME, ERIN, "where is order A-1042?")
        misrouted = emu.dm(GLOBEX, GUS, "where is order A-1042?")
        emu.use_request_url(GLOBEX, url)  # /slack/events is the first workspace's
        rejected = [await emu.wait_for_delivery(await emu.push_event(ACME, forged, signed_with="0" * 32), 30),
                    await emu.wait_for_delivery(await emu.push_event(ACME, stale, signed_at=time.time() - 600), 30),
                    await emu.wait_for_delivery(await emu.push_event(GLOBEX, misrouted), 30)]
        assert [d.status for d in rejected] == [401, 401, 401]
        assert (await emu.verify_request_url(ACME, f"{url}/{GLOBEX}")).status == 401

        # Each app at its own path, checked with its own secret: both answered.
        emu.use_request_url(GLOBEX, f"{url}/{GLOBEX}")
        assert (await emu.verify_request_url(GLOBEX)).status == 200
        globex_dm = emu.dm(GLOBEX, GINA, "where is order A-1042?")
        acme_dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        accepted = [await emu.wait_for_delivery(await emu.push_event(GLOBEX, globex_dm), 30),
                    await emu.wait_for_delivery(await emu.push_event(ACME, acme_dm), 30)]
        assert [d.status for d in accepted] == [200, 200]
        await emu.wait_for_call("chat.update", answered(globex_dm["channel"], "A-1042"), timeout=TURN_S)
        await emu.wait_for_call("chat.update", answered(acme_dm["channel"], "A-1042"), timeout=TURN_S)

    # A 401 is answered before any listener runs: nothing was stored or posted for those three.
    posted = {c.params["channel"] for c in emu.calls_to("chat.postMessage")}
    assert not posted & {forged["channel"], stale["channel"], misrouted["channel"]}
    with sqlite3.connect(home / "deskhand.db") as db:
        users = {row[0] for row in db.execute("SELECT user_id FROM inbox")}
    assert users == {ALICE, GINA}


async def test_a_click_and_a_slash_command_work_over_http(emu, tmp_path):
    async with http_run(emu, tmp_path) as (home, url):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        await emu.push_event(ACME, dm)
        reply = await emu.wait_for_call("chat.update", answered(dm["channel"], "A-1042"), timeout=TURN_S)

        # 👍 on the answer: an interactivity payload, a form with one `payload` field.
        click = emu.block_action(ACME, ALICE, dm["channel"], reply.params["ts"], bk.FEEDBACK_UP,
                                 message_id(ACME, dm["channel"], dm["ts"]))
        clicked = await emu.wait_for_delivery(await emu.push_interactive(ACME, click), 30)
        assert clicked.status == 200 and clicked.headers["Content-Type"] == "application/x-www-form-urlencoded"
        rows = await until(lambda: feedback_rows(home), "the 👍 stored")
        assert [(r["value"], r["user_id"]) for r in rows] == [("up", ALICE)]

        # A forged click is refused like a forged event.
        forged = emu.block_action(ACME, BOB, dm["channel"], reply.params["ts"], bk.FEEDBACK_DOWN,
                                  message_id(ACME, dm["channel"], dm["ts"]))
        forged_id = await emu.push_interactive(ACME, forged, signed_with="0" * 32)
        assert (await emu.wait_for_delivery(forged_id, 30)).status == 401

        # `/deskhand help`: the answer is in the HTTP response, as it is in a Socket Mode ack.
        command_id = await emu.push_slash_command(ACME, emu.slash_command(ACME, ALICE, dm["channel"], "help"))
        assert (await emu.wait_for_delivery(command_id, 30)).status == 200
        assert emu.acks[command_id] == {"text": USAGE}  # bolt answers with the text itself, which Slack posts

    assert [(r["value"], r["user_id"]) for r in feedback_rows(home)] == [("up", ALICE)]


def test_http_mode_asks_for_each_apps_signing_secret_not_an_app_token(monkeypatch):
    from typer.testing import CliRunner

    from bot.cli import app

    monkeypatch.setenv("DESKHAND_SLACK_MODE", "http")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("DESKHAND_SLACK_WORKSPACES", '[{"bot_token": "xoxb-2", "signing_secret": "s2"}, '
                                                    '{"bot_token": "xoxb-3"}]')
    result = CliRunner().invoke(app, ["run"])

    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "SLACK_SIGNING_SECRET is not set" in result.output
    assert "DESKHAND_SLACK_WORKSPACES[1].signing_secret is not set" in result.output
    assert "DESKHAND_SLACK_WORKSPACES[0]" not in result.output and "app_token" not in result.output
    assert "copy the Signing Secret" in result.output


async def test_a_request_url_port_in_use_stops_deskhand_run_with_a_message(emu, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = run_env(emu, tmp_path / "home", DESKHAND_SLACK_MODE="http", SLACK_SIGNING_SECRET=emu.team.signing_secret,
                      DESKHAND_SLACK_HTTP_PORT=str(taken.getsockname()[1]))
        proc = await asyncio.create_subprocess_exec(DESKHAND, "run", env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), CONNECT_TIMEOUT_S)
    assert proc.returncode == 1 and b"connected to Slack" not in out
    assert b"can't receive Slack's requests: cannot listen for Slack on 127.0.0.1:" in err
    assert b"DESKHAND_SLACK_HTTP_PORT" in err and b"Traceback" not in err
