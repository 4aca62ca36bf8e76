"""The Slack edge: handlers only translate, bot/slack only speaks outward, and the
orchestrator decides whose a message is and delivers through the surfaces it is given."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bot.contracts import Channel, MessageEnvelope
from bot.surfaces import Surfaces

ROOT = Path(__file__).resolve().parent.parent
HANDLERS, SLACK = ROOT / "bot" / "handlers", ROOT / "bot" / "slack"
TEAM, SUPPORT = "T1", "C0SUPPORT"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_no_handler_imports_bot_slack():
    files = sorted(HANDLERS.glob("*.py"))
    assert files
    offending = {f.name: sorted(m for m in imported_modules(f) if m == "bot.slack" or m.startswith("bot.slack."))
                 for f in files}
    assert {name: mods for name, mods in offending.items() if mods} == {}


def test_handlers_and_slack_name_their_modules_apart():
    def names(folder: Path) -> set[str]:
        return {f.stem for f in folder.glob("*.py")} - {"__init__"}

    assert names(HANDLERS) & names(SLACK) == set()


def test_nothing_outside_the_wiring_registers_a_surface_on_the_orchestrator():
    # Surfaces are given by the wiring (`Orchestrator.delivering_to`), not written into the
    # orchestrator by Slack, the mail bridge or the CLI.
    sources = [*ROOT.glob("bot/**/*.py"), *ROOT.glob("mailbridge/*.py")]
    writers = [str(p.relative_to(ROOT)) for p in sources
               if ".responders[" in p.read_text() or ".identities[" in p.read_text()]
    assert writers == []


async def test_the_orchestrator_takes_one_set_of_surfaces_at_a_time(runtime):
    class Quiet:
        async def deliver(self, envelope, outcome): ...

        async def notify(self, session, text, **info): ...

    orchestrator = runtime.orchestrator
    assert orchestrator.surfaces.responder("cli") is None
    async with orchestrator.delivering_to(Surfaces(cli=Quiet())):
        assert orchestrator.surfaces.responder("cli") is not None
        assert orchestrator.surfaces.responder("slack_thread") is None  # no Slack: nothing there
        with pytest.raises(RuntimeError):
            async with orchestrator.delivering_to(Surfaces(cli=Quiet())):
                pass
    assert orchestrator.surfaces.responder("cli") is None


def slack_envelope(ts: str, *, thread_ts: str | None = None, event: str = "message", channel: str = "C1",
                   mentions_bot: bool = False, user_team: str = TEAM) -> MessageEnvelope:
    thread_ts = thread_ts or ts
    return MessageEnvelope(
        id=f"slack:{TEAM}:{channel}:{ts}", tenant_id=TEAM, user_id="U1", text="hello",
        channel=Channel.slack_thread if thread_ts != ts else Channel.slack_channel,
        session_id=f"slack:{TEAM}:{channel}:{thread_ts}",
        metadata={"slack_channel": channel, "thread_ts": thread_ts, "message_ts": ts, "slack_event": event,
                  "mentions_bot": mentions_bot, "user_team": user_team})


async def test_the_orchestrator_decides_whose_a_slack_message_is(runtime):
    orchestrator, store = runtime.orchestrator, runtime.store
    await store.session_get_or_create(slack_envelope("1.0"))  # a thread Deskhand answers in
    await store.mirror_record("email:ada", TEAM, SUPPORT, "5.0")  # a thread mirroring an email

    async def route(envelope: MessageEnvelope) -> tuple[str, str | None]:
        decided = await orchestrator.route(envelope)
        return decided.to, decided.mail_session

    assert await route(slack_envelope("2.0")) == ("nobody", None)  # a plain channel message
    assert await route(slack_envelope("2.0", event="app_mention")) == ("deskhand", None)
    assert await route(slack_envelope("3.0", thread_ts="1.0")) == ("deskhand", None)
    assert await route(slack_envelope("3.0", thread_ts="1.0", mentions_bot=True)) == ("nobody", None)
    assert await route(slack_envelope("4.0", thread_ts="9.0")) == ("nobody", None)  # nobody's thread
    mirror_reply = slack_envelope("6.0", thread_ts="5.0", channel=SUPPORT)
    assert await route(mirror_reply) == ("teammate_mail", "email:ada")
    assert await route(slack_envelope("6.0", thread_ts="5.0", channel=SUPPORT, event="app_mention")) == ("nobody", None)
    assert await route(slack_envelope("6.0", thread_ts="5.0", channel=SUPPORT, user_team="T2")) == ("nobody", None)
