"""The `deskhand` command line. Every command has a one-line summary and an example.

The top-level commands stay in this one file (over 400 lines) so that the whole command
surface reads in one place; each command is a thin wrapper over a module that does the work,
and the command groups (`kb`, `mail`, `dlq`, `report`) live in their own modules.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from bot.config import load_settings
from bot.contracts import BrainPlan, Channel, MessageEnvelope
from bot.logs import configure_logging

app = typer.Typer(
    help="Deskhand: a support agent for teams that live in Slack.\n\n"
         "Try `deskhand chat` for an offline conversation with the demo shop.",
    no_args_is_help=True, add_completion=False, rich_markup_mode=None,
)
console = Console()

TenantOpt = typer.Option(None, "--tenant", help="Tenant (Slack team_id); default from config.")
UserOpt = typer.Option("U_CLI", "--user", help="Who is speaking (a Slack-style user ID).")


class TerminalResponder:
    """Prints replies and notices to the terminal (the CLI's surface)."""

    async def deliver(self, envelope, outcome) -> None:
        print_reply(outcome)

    async def notify(self, session: dict, text: str, **info: Any) -> None:
        console.print(f"[bold magenta]deskhand (to {session['id']})[/]: {terminal_text(text)}", highlight=False)


def terminal():
    """The terminal as the only surface: what `chat`, `resume`, `approve` and `reject` deliver to."""
    from bot.surfaces import Surfaces

    return Surfaces(cli=TerminalResponder())


def terminal_text(reply: str) -> str:
    """A Markdown reply as plain text (bot/render.py), safe from rich's own `[markup]`."""
    from rich.markup import escape

    from bot.render import to_text

    return escape(to_text(reply))


def print_reply(outcome) -> None:
    if outcome.reply is None:
        console.print("[dim](a teammate has this conversation; Deskhand stays quiet)[/]")
        return
    console.print(f"[bold cyan]deskhand[/]: {terminal_text(outcome.reply)}", highlight=False)
    for c in outcome.citations:
        console.print(f"  [dim]source: {c.title} — {c.section} {c.url}[/]", highlight=False)
    if outcome.pending_action_id:
        console.print(f"  [dim]pending approval {outcome.pending_action_id}: "
                      f"deskhand approve {outcome.pending_action_id} --as U_LEAD[/]")


def _run(coro):
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130)


def _settings():
    settings = load_settings()
    configure_logging(settings.log_level, log_file=settings.log_file or settings.home / "deskhand.log")
    return settings


@app.command()
def chat(
    user: str = UserOpt,
    email: Optional[str] = typer.Option(None, help="Act as a customer verified as this email."),
    tenant: Optional[str] = TenantOpt,
) -> None:
    """Chat with the bot in the terminal (offline planner, demo shop).

    Example:  deskhand chat --email ada@example.com
    Then try: "where is my order?", "A-1042", "I want a refund for A-1120", "how long do refunds take?"
    """
    from bot.runtime import open_runtime

    settings = _settings()

    async def main() -> None:
        async with open_runtime(settings) as rt, rt.orchestrator.delivering_to(terminal()):
            await rt.orchestrator.resume()
            tenant_id = tenant or settings.default_tenant
            with console.status("Loading the help centre…"):
                await rt.ensure_kb(tenant_id)
            session = f"cli:{uuid.uuid4().hex[:8]}"
            console.print("[bold]Deskhand[/] demo chat. Type a message; /approve ID, /reject ID, /quit.")
            while True:
                try:
                    text = await asyncio.to_thread(console.input, "[bold green]you[/]: ")
                except EOFError:
                    break
                text = text.strip()
                if not text:
                    continue
                if text in ("/quit", "/exit"):
                    break
                if text.startswith(("/approve ", "/reject ")):
                    verb, action_id = text.split(maxsplit=1)
                    d = await rt.decide(action_id, "U_LEAD", verb == "/approve")
                    console.print(f"[dim]{d.message}[/]")
                    continue
                meta = {"verified_email": email} if email else {}
                env = MessageEnvelope(tenant_id=tenant_id, channel=Channel.cli, user_id=user,
                                      session_id=session, text=text, metadata=meta)
                await rt.orchestrator.handle(env)

    _run(main())


@app.command()
def ask(
    text: str = typer.Argument(..., help="The message."),
    as_json: bool = typer.Option(False, "--json", help="Print envelope, plan, tool results and reply."),
    session: Optional[str] = typer.Option(None, help="Continue a conversation (same session ID)."),
    user: str = UserOpt,
    email: Optional[str] = typer.Option(None, help="Verified customer email."),
    tenant: Optional[str] = TenantOpt,
) -> None:
    """Run one turn and print the answer.

    Example:  deskhand ask "where is order A-1042?" --json
    """
    from bot.runtime import open_runtime

    settings = _settings()

    async def main() -> None:
        async with open_runtime(settings) as rt:
            tenant_id = tenant or settings.default_tenant
            await rt.ensure_kb(tenant_id)
            meta = {"verified_email": email} if email else {}
            env = MessageEnvelope(tenant_id=tenant_id, channel=Channel.cli, user_id=user,
                                  session_id=session or f"cli:{uuid.uuid4().hex[:8]}", text=text, metadata=meta)
            outcome = await rt.orchestrator.handle(env)
            if as_json:
                typer.echo(json.dumps({
                    "envelope": env.model_dump(mode="json"),
                    "plan": outcome.plan.model_dump(mode="json") if outcome.plan else None,
                    "tool_results": [r.model_dump(mode="json") for r in outcome.results],
                    **outcome.as_dict(),
                }, indent=2))
            else:
                print_reply(outcome)

    _run(main())


@app.command()
def run() -> None:
    """Run Deskhand: connect to Slack over Socket Mode and answer until stopped (Ctrl-C).

    Needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN (see manifest.yml and docs/slack.md); with
    DESKHAND_SLACK_MODE=http, SLACK_SIGNING_SECRET instead of the app token, and Slack POSTs
    to the Request URL /slack/events on DESKHAND_SLACK_HTTP_HOST:PORT. With
    DESKHAND_SMTP_ENABLED=1 (or DESKHAND_IMAP_HOST) it also runs the mail bridge, and mirrors
    every email conversation into the tenant's support channel (mailbridge/README.md).

    Example:  SLACK_BOT_TOKEN=xoxb-… SLACK_APP_TOKEN=xapp-… deskhand run
    """
    from bot.slack.app import credentials_help, missing_credentials

    settings = _settings()
    if problems := missing_credentials(settings):
        typer.echo(credentials_help(problems, settings.slack_mode), err=True)
        raise typer.Exit(2)
    raise typer.Exit(_run(_serve(settings)))


async def _serve(settings) -> int:
    from slack_sdk.errors import SlackApiError

    from bot.check import log_checks
    from bot.run import run_deskhand
    from bot.runtime import open_runtime
    from bot.slack.app import wait_for_shutdown
    from bot.slack.request_url import RequestUrlUnavailable

    try:
        async with open_runtime(settings) as rt, run_deskhand(rt) as running:
            console.print("[bold]Deskhand[/] is connected to Slack. Press Ctrl-C to stop.")
            startup_check = asyncio.create_task(log_checks(settings, rt.kb))  # noqa: F841 - held; logged, not fatal
            if running.slack.request_url is not None:
                console.print(f"Slack: receiving on {running.slack.request_url.url} (the Request URL).")
            if running.ops is not None:
                console.print(f"Ops: {running.ops.url}/healthz, /readyz and /metrics.")
            if running.mail is not None:
                where = f" on {settings.smtp_host}:{running.mail.smtp_port}" if running.mail.smtp_port else ""
                console.print(f"Mail: receiving{where}"
                              + (f", polling {settings.imap_host}" if settings.imap_host else "")
                              + f"; replies through {settings.relay_host}:{settings.relay_port}.")
            await wait_for_shutdown()
    except SlackApiError as exc:
        typer.echo(f"Slack refused the connection: {exc.response.get('error')}. Check "
                   "SLACK_BOT_TOKEN and SLACK_APP_TOKEN (docs/slack.md).", err=True)
        return 1
    except RequestUrlUnavailable as exc:
        typer.echo(f"Deskhand can't receive Slack's requests: {exc}.", err=True)
        return 1
    return 0


@app.command()
def check() -> None:
    """Validate the configuration and probe every configured part: Slack (auth, scopes, support
    channels), the mail relay and IMAP, the LLM, the encoder and KB, the store. Exits 1 on any ✗.

    Example:  deskhand check
    """
    from bot.check import all_ok, render_table, run_checks

    settings = _settings()
    results = _run(run_checks(settings))
    typer.echo(render_table(results))
    raise typer.Exit(0 if all_ok(results) else 1)


@app.command()
def resume() -> None:
    """Finish turns a previous process left unfinished, printing their replies.

    Example:  deskhand resume
    """
    from bot.runtime import open_runtime

    settings = _settings()

    async def main() -> None:
        async with open_runtime(settings) as rt, rt.orchestrator.delivering_to(terminal()):
            outcomes = await rt.orchestrator.resume()
            console.print(f"[dim]resumed {len(outcomes)} turn(s)[/]")

    _run(main())


@app.command("plan")
def plan_cmd(
    file: Optional[Path] = typer.Argument(None, help='JSONL of {"text": …}; stdin when omitted.'),
    tenant: Optional[str] = TenantOpt,
) -> None:
    """Plan each message of a JSONL file (or stdin) and print one BrainPlan JSON per line.

    Nothing is executed: this is for evaluation and replay.

    Example:  echo '{"text": "where is A-1042?"}' | deskhand plan
    """
    from bot.brain.base import PlanContext
    from bot.hands.gate import allowed_tools
    from bot.hands.registry import default_registry
    from bot.runtime import build_planner
    from bot.utf8 import decode_bytes

    settings = _settings()
    registry = default_registry()
    planner = build_planner(settings, registry)
    tenant_id = tenant or settings.default_tenant
    # Bytes, not text: a line that is not UTF-8 is repaired and flagged, not a crash (bot/utf8.py).
    lines = decode_bytes(file.read_bytes() if file else sys.stdin.buffer.read()).splitlines()

    async def main() -> None:
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                typer.echo(json.dumps({"error": f"line {i}: expected a JSON object with a 'text' field"}))
                continue
            env = MessageEnvelope(tenant_id=tenant_id, channel=Channel.cli, user_id="U_PLAN",
                                  session_id=f"plan:{i}", text=text)
            policy = settings.policy(tenant_id)
            plan: BrainPlan = await planner.plan(PlanContext(
                envelope=env, policy=policy,
                tools=allowed_tools(policy, registry.specs())))
            typer.echo(plan.model_dump_json())

    _run(main())


def _decide(action_id: str, approver: str, approve: bool) -> None:
    from bot.runtime import open_runtime

    settings = _settings()

    async def main() -> int:
        async with open_runtime(settings) as rt, rt.orchestrator.delivering_to(terminal()):
            decision = await rt.decide(action_id, approver, approve)
            console.print(decision.message)
            return 0 if decision.ok else 1

    raise typer.Exit(_run(main()))


@app.command()
def approve(action_id: str, approver: str = typer.Option(..., "--as", help="Approver's user ID.")) -> None:
    """Approve a pending action (a refund) as a named approver; it runs exactly once.

    Example:  deskhand approve pa_1234abcd --as U_LEAD
    """
    _decide(action_id, approver, True)


@app.command()
def reject(action_id: str, approver: str = typer.Option(..., "--as", help="Approver's user ID.")) -> None:
    """Reject a pending action as a named approver.

    Example:  deskhand reject pa_1234abcd --as U_LEAD
    """
    _decide(action_id, approver, False)


@app.command()
def pending(tenant: Optional[str] = TenantOpt) -> None:
    """List actions waiting for approval.

    Example:  deskhand pending
    """
    from bot.store.factory import open_store

    settings = _settings()

    async def main() -> list:
        async with open_store(settings) as store:
            return await store.pending_list(tenant)

    for a in _run(main()):
        typer.echo(f"{a.id}  {a.tool}  {json.dumps(a.args)}  requested by {a.requested_by}")


@app.command("eval")
def eval_cmd(
    golden: Optional[Path] = typer.Option(None, help="Folder of golden YAML conversations."),
    questions: Optional[Path] = typer.Option(None, help="KB question set (YAML of question, doc_id, answer)."),
    fail_under: float = typer.Option(0.0, help="Exit 1 when the golden turn pass rate is below this."),
    answers_fail_under: float = typer.Option(0.0, help="Exit 1 when KB answer correctness is below this."),
) -> None:
    """Run the golden conversations and the KB question set in a throwaway home (the demo
    shop and KB; the live store is never touched) and print intent and tool accuracy,
    citation coverage, handoff and clarification rates, answer correctness, and citation
    precision and recall.

    Example:  deskhand eval --fail-under 1.0 --answers-fail-under 0.9
    """
    from bot.eval_reports import run_throwaway

    golden_report, answer_report = _run(run_throwaway(_settings(), golden, questions))
    for failure in [*golden_report.failures, *answer_report.failures]:
        typer.echo(f"FAIL {failure}", err=True)
    summary = {**golden_report.summary(), **answer_report.summary()}
    typer.echo(json.dumps(summary, indent=2))
    if summary["pass_rate"] < fail_under or summary["answer_correctness"] < answers_fail_under:
        raise typer.Exit(1)


@app.command()
def trace(correlation_id: str) -> None:
    """Show one message's timeline: its intake, then each state of its turn with its start
    offset, its duration and what it decided (bot/timeline.py).

    Example:  deskhand trace 3f9c2a1b7d4e5f60
    """
    from bot.store.factory import open_store
    from bot.timeline import timeline

    settings = _settings()

    async def main() -> list[dict]:
        async with open_store(settings) as store:
            return await store.traces_for(correlation_id)

    spans = _run(main())
    if not spans:
        typer.echo(f"no spans for {correlation_id}", err=True)
        raise typer.Exit(1)
    for line in timeline(spans):
        typer.echo(line)


@app.command("replay")
def replay_cmd(
    limit: int = typer.Option(200, help="How many recent stored turns to replay."),
    tenant: Optional[str] = TenantOpt,
    show_all: bool = typer.Option(False, "--all", help="Print unchanged turns too."),
    answers: bool = typer.Option(False, "--answers", help="Re-answer with the current KB (planner, read-only "
                                 "tools, offline drafter) and show the replies that changed."),
    downvoted: bool = typer.Option(False, "--downvoted", help="Only turns whose answer was marked 👎."),
) -> None:
    """Re-plan stored messages with the current planner and show which plans changed.

    With --answers, re-answer them against the current KB and show old and new reply
    (bot/replay_answers.py). Nothing is written either way: no ticket, refund or pending action.

    Example:  deskhand replay --limit 500
    Example:  deskhand replay --answers --downvoted
    """
    from bot.hands.registry import default_registry
    from bot.replay import replay
    from bot.runtime import build_planner
    from bot.store.factory import open_store

    settings = _settings()
    if answers:
        from bot.replay_answers import print_answer_replay

        _run(print_answer_replay(settings, limit=limit, tenant_id=tenant, downvoted=downvoted,
                                 show_all=show_all, echo=typer.echo))
        return
    registry = default_registry()

    async def main() -> list:
        async with open_store(settings) as store:
            return await replay(store, build_planner(settings, registry), settings, registry, limit, tenant,
                                downvoted=downvoted)

    diffs = _run(main())
    for d in diffs:
        if d.changed or show_all:
            mark = "CHANGED" if d.changed else "same   "
            typer.echo(f"{mark} {d.inbox_id}  {d.before[0]} {d.before[1]} -> {d.after[0]} {d.after[1]}  | {d.text}")
    changed = sum(d.changed for d in diffs)
    typer.echo(f"{len(diffs)} replayed, {changed} changed")


def _mount_optional(name: str, module: str, attr: str) -> None:
    # Sub-apps register themselves here; a missing optional part never breaks the CLI.
    try:
        sub = getattr(__import__(module, fromlist=[attr]), attr)
    except ImportError:
        return
    app.add_typer(sub, name=name)


_mount_optional("kb", "kb_loader.cli", "kb_app")
_mount_optional("dlq", "bot.dlq_cli", "dlq_app")
_mount_optional("store", "bot.store_cli", "store_app")

from mailbridge.cli import mail_app  # noqa: E402

app.add_typer(mail_app, name="mail")

from bot.reporting import report  # noqa: E402

app.command("report")(report)


def main() -> None:
    from bot.config_errors import ConfigError

    try:
        app()
    except ConfigError as exc:  # every command validates the config first (bot/config.py)
        typer.echo(f"deskhand: config error: {exc}", err=True)
        raise SystemExit(2) from None
