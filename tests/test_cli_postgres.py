"""Every command reads the configured store: with DESKHAND_DATABASE_URL set, `deskhand trace`,
`report`, `replay`, `pending` and `reject`, `dlq` and `mail outbox` and `mail retry`, each run as
the real `deskhand` process, see the turns `deskhand ask` made on that PostgreSQL database (and
never an empty SQLite file beside it)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deskhand_process import DESKHAND


@dataclass
class PgHome:
    env: dict[str, str]
    home: Path
    tracked: dict  # `deskhand ask --json` of "where is order A-1042?"
    refund: dict  # … of "I want a refund for A-1120" (a pending action)
    dead_email: int  # an outbox email given up on, for `deskhand dlq`
    failed_email: int  # another, for `deskhand mail retry`


def deskhand(pg: PgHome, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DESKHAND, *args], env=pg.env, cwd=pg.home, capture_output=True, text=True,
                          timeout=300)


async def _seed_deliveries(url: str, inbox_id: str) -> tuple[int, int]:
    """A dead letter and three outgoing emails (one sent, two given up), written to the database
    as the running workers write them."""
    from bot.store.postgres import PgStore

    async with PgStore(url) as store:
        inbox = await store.inbox_get(inbox_id)
        assert await store.dead_letter_add(inbox, "RuntimeError: the turn kept crashing")
        emails = []
        for subject in ("Re: where is my order", "Re: your refund", "Re: your ticket"):
            emails.append(await store.outbox_add(inbox["tenant_id"], "email", inbox["session_id"], inbox_id,
                                                 {"to": "ada@example.com", "subject": subject,
                                                  "message_id": f"<{len(emails)}@deskhand.test>"}))
        await store.outbox_mark_sent(emails[0])
        await store.outbox_give_up(emails[1], "550 relay refused")
        await store.outbox_give_up(emails[2], "550 relay refused")
        return emails[1], emails[2]


@pytest.fixture(scope="module")
def pg(postgres_server, tmp_path_factory, _user_folders) -> PgHome:
    url = postgres_server.new_database()
    home = tmp_path_factory.mktemp("pg-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESKHAND_", "SLACK_", "OPENAI_"))}
    env.update(DESKHAND_HOME=str(home / "home"), DESKHAND_CACHE_DIR=str(_user_folders),
               DESKHAND_DATABASE_URL=url)
    partial = PgHome(env, home, {}, {}, 0, 0)
    asked = [deskhand(partial, "ask", "where is order A-1042?", "--json"),
             deskhand(partial, "ask", "I want a refund for A-1120", "--json", "--user", "U_ADA")]
    for done in asked:
        assert done.returncode == 0, done.stderr
    tracked, refund = (json.loads(done.stdout) for done in asked)
    assert refund["pending_action_id"]
    dead_email, failed_email = asyncio.run(_seed_deliveries(url, tracked["envelope"]["id"]))
    return PgHome(env, home, tracked, refund, dead_email, failed_email)


def test_trace_shows_the_spans_of_a_turn_on_postgres(pg):
    shown = deskhand(pg, "trace", pg.tracked["correlation_id"])
    assert shown.returncode == 0, shown.stderr
    assert "INTAKE" in shown.stdout and "PLAN" in shown.stdout and "TOOL_LOOP" in shown.stdout


def test_report_counts_the_turns_on_postgres(pg):
    shown = deskhand(pg, "report", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["turns"] == 2 and report["outcomes"]["answered"] == 2
    assert report["intents"]["track_order"] == 1
    assert report["tools"]["get_order_status"]["calls"] == 1
    assert (report["feedback"]["votes"], report["abuse"]["flagged"]) == (0, 0)
    text = deskhand(pg, "report")
    assert text.returncode == 0, text.stderr
    assert "Turns: 2" in text.stdout and "get_order_status" in text.stdout
    shadow = deskhand(pg, "report", "--shadow")
    assert shadow.returncode == 0 and "Deskhand shadow turns (all tenants, all time): 0" in shadow.stdout


def test_replay_replans_the_turns_on_postgres(pg):
    shown = deskhand(pg, "replay", "--all")
    assert shown.returncode == 0, shown.stderr
    assert "2 replayed, 0 changed" in shown.stdout
    assert "track_order ['get_order_status'] -> track_order ['get_order_status']" in shown.stdout


def test_pending_lists_and_reject_decides_on_postgres(pg):
    action = pg.refund["pending_action_id"]
    listed = deskhand(pg, "pending")
    assert listed.returncode == 0, listed.stderr
    assert action in listed.stdout and "requested by U_ADA" in listed.stdout
    rejected = deskhand(pg, "reject", action, "--as", "U_LEAD")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert action not in deskhand(pg, "pending").stdout


def test_dlq_lists_shows_and_drops_on_postgres(pg):
    inbox_id, ref = pg.tracked["envelope"]["id"], f"outbox:{pg.dead_email}"
    listed = deskhand(pg, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert inbox_id in listed.stdout and "the turn kept crashing" in listed.stdout
    assert ref in listed.stdout and "550 relay refused" in listed.stdout
    shown = deskhand(pg, "dlq", "show", inbox_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["text"] == "where is order A-1042?"
    dropped = deskhand(pg, "dlq", "drop", ref, "--as", "U_LEAD")
    assert dropped.returncode == 0, dropped.stderr
    assert f"Dropped {ref}" in dropped.stdout
    audit = json.loads(deskhand(pg, "dlq", "show", ref, "--json").stdout)["audit"]
    assert [a["action"] for a in audit][-1].endswith("drop") and audit[-1]["actor"] == "U_LEAD"


def test_mail_outbox_lists_and_retry_requeues_on_postgres(pg):
    listed = deskhand(pg, "mail", "outbox")
    assert listed.returncode == 0, listed.stderr
    for subject in ("Re: where is my order", "Re: your refund", "Re: your ticket"):
        assert subject in listed.stdout
    queued = deskhand(pg, "mail", "retry", str(pg.failed_email))
    assert queued.returncode == 0, queued.stderr
    assert f"Email {pg.failed_email} is queued again." in queued.stdout
    pending = [json.loads(line) for line in deskhand(pg, "mail", "outbox", "--status", "pending", "--json")
               .stdout.splitlines()]
    assert [(p["id"], p["attempts"]) for p in pending] == [(pg.failed_email, 0)]
