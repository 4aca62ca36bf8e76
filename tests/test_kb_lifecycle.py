"""The KB's life in `deskhand run` (bot/kb_lifecycle.py): built at start with no reload by hand,
reloaded on a schedule, a folder per tenant, "being indexed" while it builds, the nightly
eval; and App Home's privacy. The real `deskhand run` process against the Slack emulator,
or the real runtime and scheduler in-process; every wait is on observable state."""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from typer.testing import CliRunner

from bot import kb_lifecycle
from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope
from bot.kb_status import kb_folder, kb_state, read_last_eval
from bot.runtime import open_runtime
from kb_loader import KnowledgeBase
from kb_loader.encoder import get_encoder
from kb_loader.freshness import read_record
from kb_loader.runs import read_runs
from deskhand_process import DESKHAND, deskhand_run, run_env
from test_slack_app import (ACME, ALICE, BOB, CAROL, DAVE, ERIN, GINA, GLOBEX, GLOBEX_SUPPORT, GUS, SUPPORT,
                            answered, emu, section_texts)

__all__ = ["emu"]  # the Slack emulator fixture

ACME_REFUNDS = ("# Refunds at Acme\n\nAcme refunds reach your original payment method within "
                "five business days of the return arriving at our warehouse.\n")
ACME_REFUNDS_EDITED = ACME_REFUNDS.replace("five business days", "two business days")
GLOBEX_REFUNDS = ("# Refunds at Globex\n\nGlobex refunds are paid as store credit within one hour "
                  "of approval, and store credit never expires.\n")
TENANTS = f"""
tenants:
  {ACME}:
    name: Acme
    support_channel: {SUPPORT}
    approvers: [{BOB}]
    approver_usergroup: S0APPROVE1
    admins: [{CAROL}]
    kb_dir: acme-kb
  {GLOBEX}:
    name: Globex
    support_channel: {GLOBEX_SUPPORT}
    approvers: [{GUS}]
"""
DEADLINE_S = 120


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def folders(tmp_path: Path) -> tuple[Path, Path]:
    """The tenants file (ACME names its own folder, relative to it) and the shared KB folder."""
    tenants = write(tmp_path / "conf" / "tenants.yml", TENANTS)
    write(tmp_path / "conf" / "acme-kb" / "refunds.md", ACME_REFUNDS)
    shared = tmp_path / "shared-kb"
    write(shared / "refunds.md", GLOBEX_REFUNDS)
    return tenants, shared


async def until(probe, what: str, timeout: float = DEADLINE_S):
    """Poll `probe` (sync) until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := probe()):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


@asynccontextmanager
async def both_workspaces_run(emu, tmp_path: Path, env_extra: dict):
    """`deskhand run` from a fresh home, connected to both workspaces (one Slack app each)."""
    globex = emu.workspace(GLOBEX)
    env = run_env(emu, tmp_path / "run-home", **env_extra,
                  DESKHAND_SLACK_WORKSPACES=json.dumps([{"bot_token": globex.bot_token, "app_token": globex.app_token}]))
    async with deskhand_run(env, tmp_path / "run.err"):
        yield env


def sources(call) -> str:
    return " ".join(e["text"] for b in call.params["blocks"] if b["type"] == "context" for e in b["elements"])


async def test_deskhand_run_builds_each_tenants_own_kb_and_reloads_it_on_schedule(emu, tmp_path):
    tenants, shared = folders(tmp_path)
    home = tmp_path / "run-home"
    async with both_workspaces_run(emu, tmp_path, {"DESKHAND_TENANTS_FILE": str(tenants), "DESKHAND_KB_DIR": str(shared),
                                            "DESKHAND_KB_RELOAD_MINUTES": "0.02"}) as env:
        # Nobody runs `deskhand kb reload`: the process builds both indexes itself.
        for tenant in (ACME, GLOBEX):
            await until(lambda: (r := read_record(home, tenant)) and r.chunks > 0, f"{tenant}'s first build")
        acme_dm, globex_dm = emu.dm(ACME, ALICE, "how long do refunds take?"), emu.dm(GLOBEX, GINA, "how long do refunds take?")
        await emu.push_event(ACME, acme_dm)
        await emu.push_event(GLOBEX, globex_dm)
        acme = await emu.wait_for_call("chat.update", answered(acme_dm["channel"], "five business days"), timeout=60)
        globex = await emu.wait_for_call("chat.update", answered(globex_dm["channel"], "store credit"), timeout=60)

        edited = datetime.now(timezone.utc)
        write(tenants.parent / "acme-kb" / "refunds.md", ACME_REFUNDS_EDITED)
        await until(lambda: (r := read_runs(home, ACME)).started_at and r.started_at > edited and r.finished_at
                    and r.finished_at > r.started_at and r.ok, "a scheduled reload after the edit")
        again = emu.dm(ACME, ALICE, "how long does a refund take?")
        await emu.push_event(ACME, again)
        reloaded = await emu.wait_for_call("chat.update", answered(again["channel"], "two business days"), timeout=60)

        await emu.push_slash_command(ACME, emu.slash_command(ACME, CAROL, SUPPORT, "kb status"))
        slash = await emu.wait_for_call("response_url", lambda c: "Knowledge base" in c.params["text"], timeout=60)
        await emu.push_event(ACME, {"type": "app_home_opened", "user": CAROL, "channel": "D0CAROL01",
                                    "tab": "home", "event_ts": "1700000000.000100"})
        await emu.wait_for(lambda e: e.team.home_views.get(CAROL))
        home_tab = " ".join(section_texts(emu.team.home_views[CAROL]["blocks"]))
        cli = await asyncio.create_subprocess_exec(
            DESKHAND, "kb", "status", "--tenant", ACME, "--json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(cli.communicate(), 120)

    assert "Refunds at Acme" in sources(acme) and "Globex" not in acme.params["text"]
    assert "Refunds at Globex" in sources(globex) and "Acme" not in globex.params["text"]
    assert "Refunds at Acme" in sources(reloaded)
    status = json.loads(out)
    assert status["documents"] == 1 and status["state"] in ("ready", "indexing") and status["last_run_ok"] is True
    assert status["kb_dir"] == str((tenants.parent / "acme-kb").resolve())
    assert status["next_run_at"] is not None  # written by the running process's scheduler
    for shown in (slash.params["text"], home_tab):  # the same facts on every surface
        assert "documents: 1" in shown and "chunks: 1" in shown and "acme-kb" in shown
        assert "next run: -" not in shown and "(ok)" in shown


class GatedEncoder:
    """The real encoder, holding every embedding until the test lets go: the build at start
    stays in progress for exactly as long as the test needs."""

    def __init__(self, inner):
        self.inner, self.name, self.tokenizer = inner, inner.name, inner.tokenizer
        self.max_seq_length, self.dim = inner.max_seq_length, inner.dim
        self.release = threading.Event()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def encode(self, texts):
        assert self.release.wait(120)
        return self.inner.encode(texts)


def ask(rt, text: str, tenant: str = "T_DEMO"):
    return rt.orchestrator.handle(MessageEnvelope(tenant_id=tenant, channel=Channel.cli, user_id="U_CUSTOMER",
                                                  session_id=f"cli:{abs(hash(text))}", text=text))


async def test_a_kb_question_while_the_index_builds_is_told_so_and_offered_a_human(tmp_path):
    _, shared = folders(tmp_path)
    settings = load_settings(home=tmp_path / "home", kb_dir=shared)
    async with open_runtime(settings) as rt:
        gated = GatedEncoder(get_encoder(settings))
        rt.kb = KnowledgeBase(settings, encoder=gated)
        scheduler = AsyncIOScheduler(timezone=timezone.utc)
        scheduler.start()
        try:
            kb_lifecycle.register(scheduler, rt, None)
            building = await ask(rt, "how long do refunds take?")
            status_while = await rt.kb_state("T_DEMO")
            order = await ask(rt, "where is order A-1042?")  # everything else is answered meanwhile
            gated.release.set()
            await until(lambda: rt.kb.is_available("T_DEMO"), "the build to finish")
            built = await ask(rt, "how long does a refund take?")
            status_after = await rt.kb_state("T_DEMO")
        finally:
            gated.release.set()
            scheduler.shutdown(wait=False)

    assert "being indexed" in building.reply and building.offer_human and building.state != "FAILED"
    assert "isn't available" not in building.reply
    assert status_while.state == "indexing" and status_while.next_run_at is not None
    assert "A-1042 has shipped" in order.reply
    assert "store credit" in built.reply and built.citations
    assert status_after.state == "ready" and status_after.documents == 1 and status_after.last_run_ok


async def test_a_failed_build_is_recorded_and_shown_and_never_raised(tmp_path):
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "missing")
    async with open_runtime(settings) as rt:
        scheduler = AsyncIOScheduler(timezone=timezone.utc)
        scheduler.start()
        try:
            kb_lifecycle.register(scheduler, rt, None)
            await until(lambda: read_runs(settings.home, "T_DEMO").ok is False, "the failed build's record")
            outcome = await ask(rt, "how long do refunds take?")
            status = await rt.kb_state("T_DEMO")
        finally:
            scheduler.shutdown(wait=False)

    assert status.state == "empty" and "not found" in status.last_error and status.last_run_ok is False
    assert outcome.offer_human and "isn't available" in outcome.reply


def test_kb_folder_resolves_a_tenants_own_folder_and_the_cli_reload_uses_it(tmp_path):
    from bot.cli import app

    tenants, shared = folders(tmp_path)
    settings = load_settings(home=tmp_path / "home", kb_dir=shared, tenants_file=tenants)
    assert kb_folder(settings, ACME) == (tmp_path / "conf" / "acme-kb").resolve()
    assert kb_folder(settings, GLOBEX) == kb_folder(settings, "T_UNLISTED") == shared

    env = {"DESKHAND_HOME": str(settings.home), "DESKHAND_TENANTS_FILE": str(tenants),
           "DESKHAND_KB_DIR": str(shared), "COLUMNS": "120"}
    result = CliRunner().invoke(app, ["kb", "reload", "--tenant", ACME, "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kb_dir"] == str(kb_folder(settings, ACME))
    shown = CliRunner().invoke(app, ["kb", "status", "--tenant", ACME], env=env)
    assert "ready" in shown.output and "acme-kb" in shown.output and "next run" in shown.output


async def test_the_nightly_eval_runs_in_a_throwaway_home_and_its_summary_is_kept(tmp_path):
    golden = write(tmp_path / "golden" / "one.yml", "- name: hello\n  turns:\n    - user: hello\n"
                                                     "      expect: {intent: greeting}\n").parent
    settings = load_settings(home=tmp_path / "home", kb_dir=tmp_path / "live-kb")
    summary = await kb_lifecycle.nightly_eval(settings, golden)

    assert summary["turns"] == 1 and summary["pass_rate"] == 1.0
    assert read_last_eval(settings.home)["summary"] == summary
    assert not settings.db_path.exists() and not (settings.home / "chroma").exists()  # live data untouched
    assert "pass rate 1.0" in kb_state(settings, None, "T_DEMO").last_eval


async def test_the_eval_is_scheduled_by_the_cron_setting(tmp_path):
    settings = load_settings(home=tmp_path / "home", eval_cron="30 4 * * *")
    async with open_runtime(settings) as rt:
        rt.kb = None  # only the eval's job
        scheduler = AsyncIOScheduler(timezone=timezone.utc)
        scheduler.start()
        try:
            kb_lifecycle.register(scheduler, rt, None)
            job = scheduler.get_job(kb_lifecycle.EVAL_JOB)
        finally:
            scheduler.shutdown(wait=False)

    assert (job.next_run_time.hour, job.next_run_time.minute) == (4, 30)
    assert job.next_run_time.utcoffset().total_seconds() == 0


async def test_app_home_lists_others_refunds_and_handoffs_only_to_approvers_and_admins(emu, tmp_path):
    tenants, shared = folders(tmp_path)
    async with both_workspaces_run(emu, tmp_path, {"DESKHAND_TENANTS_FILE": str(tenants), "DESKHAND_KB_DIR": str(shared)}):
        refund = emu.dm(ACME, ALICE, "I want a refund for A-1120")
        await emu.push_event(ACME, refund)
        await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT
                                and "Refund approval" in c.params["text"], timeout=60)
        human = emu.dm(ACME, DAVE, "I want to talk to a human")
        await emu.push_event(ACME, human)
        await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT
                                and "needs a human" in c.params["text"], timeout=60)
        views = {}
        for n, user in enumerate((DAVE, ALICE, ERIN, CAROL)):
            await emu.push_event(ACME, {"type": "app_home_opened", "user": user, "channel": f"D0{user[2:]}",
                                        "tab": "home", "event_ts": f"1700000000.00010{n}"})
            await emu.wait_for(lambda e, user=user: e.team.home_views.get(user))
            views[user] = " ".join(section_texts(emu.team.home_views[user]["blocks"]))

    dave, alice = views[DAVE], views[ALICE]
    assert "A-1120" not in dave and ALICE not in dave and "@example.com" not in dave
    assert "Your conversations with a human (1)" in dave and DAVE in dave
    assert "Your requests waiting for approval (1)" in alice and "A-1120" in alice and DAVE not in alice
    for staff in (views[ERIN], views[CAROL]):  # the approver user group's member; an admin
        assert "Pending approvals (1)" in staff and "A-1120" in staff
        assert "Open handoffs (1)" in staff and DAVE in staff
