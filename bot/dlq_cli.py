"""`deskhand dlq …`: the messages whose turn kept killing the process (bot/dead_letters.py).

`list` and `show` only read. `retry` puts a message back in the inbox (its attempts reset);
the next start of `deskhand run` (or `deskhand resume`) runs its turn once more. `drop` marks
it dropped for good; the row stays, for the audit trail. Both are recorded in the audit log.
"""

from __future__ import annotations

import getpass
import json
from typing import Optional

import typer

from bot.contracts import MessageEnvelope
from bot.store.dead_letters import DEAD

dlq_app = typer.Typer(
    help="Dead letters: messages whose turn kept crashing Deskhand. List, show, retry, drop.",
    no_args_is_help=True, rich_markup_mode=None,
)

StatusOpt = typer.Option(DEAD, "--status", help="dead, retried or dropped.")
AllOpt = typer.Option(False, "--all", help="Every dead letter, whatever its status.")
TenantOpt = typer.Option(None, "--tenant", help="Only this tenant (Slack team_id).")


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container): still say it was the CLI
        return "cli"


ActorOpt = typer.Option(None, "--as", help="Who decides, for the audit log (default: your login name).")


@dlq_app.callback()
def _dlq() -> None:
    """Dead letters: messages whose turn kept crashing Deskhand. List, show, retry, drop."""


def _open_store():
    from bot.cli import _settings  # the CLI's settings and logging, loaded at call time
    from bot.store import Store

    return Store(_settings().db_path)


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _preview(envelope_json: str, width: int = 60) -> str:
    text = MessageEnvelope.model_validate_json(envelope_json).text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq_app.command("list")
def list_cmd(status: str = StatusOpt, every: bool = AllOpt, tenant: Optional[str] = TenantOpt) -> None:
    """List dead letters (by default the ones still parked).

    Example:  deskhand dlq list --all
    """
    store = _open_store()
    try:
        rows = store.dead_letters(None if every else status, tenant)
        for row in rows:
            typer.echo(f"{row['inbox_id']}  {row['tenant_id']}  {row['status']}  attempts={row['attempts']}"
                       f"  {row['dead_at']}  {row['error']}")
        typer.echo(f"{len(rows)} dead letter(s)")
    finally:
        store.close()


@dlq_app.command("show")
def show_cmd(inbox_id: str, as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Show one dead letter: its message, its last error and its audit trail.

    Example:  deskhand dlq show slack:T0123:D0456:1764745200.000100
    """
    store = _open_store()
    try:
        row = store.dead_letter_get(inbox_id)
        if row is None:
            _fail(f"No dead letter {inbox_id!r}; `deskhand dlq list --all` lists them.")
        audit = [{"ts": a["ts"], "actor": a["actor"], "action": a["action"]}
                 for a in store.audit_entries(inbox_id)]
    finally:
        store.close()
    envelope = MessageEnvelope.model_validate_json(row["envelope"])
    details = {
        "inbox_id": row["inbox_id"], "tenant_id": row["tenant_id"], "session_id": row["session_id"],
        "channel": row["channel"], "status": row["status"], "attempts": row["attempts"],
        "error": row["error"], "dead_at": row["dead_at"], "retries": row["retries"],
        "decided_by": row["decided_by"] or None, "received_at": row["received_at"],
        "inbox_status": row["inbox_status"], "text": envelope.text, "audit": audit,
    }
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        if key != "audit":
            typer.echo(f"{key:>12}: {value}")
    for entry in audit:
        typer.echo(f"{'audit':>12}: {entry['ts']}  {entry['action']}  by {entry['actor']}")


def _decide(inbox_id: str, actor: str | None, verb: str) -> None:
    store = _open_store()
    try:
        who = actor or _default_actor()
        if verb == "retry":
            was = store.dead_letter_retry(inbox_id, who)
        else:
            was = store.dead_letter_drop(inbox_id, who)
    finally:
        store.close()
    if was is None:
        _fail(f"No dead letter {inbox_id!r}; `deskhand dlq list --all` lists them.")
    if was != DEAD:
        done = "retried" if verb == "retry" else "dropped"
        _fail(f"Dead letter {inbox_id!r} is already {was}; only a parked (dead) one can be {done}.")
    if verb == "retry":
        typer.echo(f"Retrying {inbox_id}: its turn runs at the next start of `deskhand run` (or `deskhand resume`).")
    else:
        typer.echo(f"Dropped {inbox_id}; it stays in `deskhand dlq list --all` for the record.")


@dlq_app.command("retry")
def retry_cmd(inbox_id: str, actor: Optional[str] = ActorOpt) -> None:
    """Put a dead letter back in the inbox, attempts reset: the next start runs its turn.

    Example:  deskhand dlq retry slack:T0123:D0456:1764745200.000100 --as U_LEAD
    """
    _decide(inbox_id, actor, "retry")


@dlq_app.command("drop")
def drop_cmd(inbox_id: str, actor: Optional[str] = ActorOpt) -> None:
    """Drop a dead letter for good (kept, marked dropped, for the audit trail).

    Example:  deskhand dlq drop slack:T0123:D0456:1764745200.000100 --as U_LEAD
    """
    _decide(inbox_id, actor, "drop")
