"""`deskhand dlq …`: the dead ends. Messages whose turn kept killing the process
(bot/dead_letters.py), named by their inbox id, and outbox deliveries (a Slack post, an email)
given up after the outbox policy's last attempt (bot/outbox_policy.py), named `outbox:<id>`.

`list` and `show` only read. `retry` puts a message back in the inbox (its attempts reset):
the next start of `deskhand run` (or `deskhand resume`) runs its turn once more; for an
outbox row it puts the delivery back in the outbox, due now and its attempts reset, and the
running sender tries it at its next look. `drop` marks either dropped for good; the row
stays, for the audit trail. Both are recorded in the audit log.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Optional

import typer

from bot.contracts import MessageEnvelope
from bot.store.dead_letters import DEAD, outbox_id_of

SUMMARY = "Dead letters: turns that kept crashing Deskhand, deliveries given up. List, show, retry, drop."
dlq_app = typer.Typer(
    help=SUMMARY,
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
    """Dead letters: turns that kept crashing Deskhand, deliveries given up. List, show, retry, drop."""


def _open_store():
    """The configured store, to `async with`: PostgreSQL when DESKHAND_DATABASE_URL is set, else
    the SQLite file (bot/store/factory.py)."""
    from bot.cli import _settings  # the CLI's settings and logging, loaded at call time
    from bot.store.factory import open_store

    return open_store(_settings())


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _preview(envelope_json: str, width: int = 60) -> str:
    text = MessageEnvelope.model_validate_json(envelope_json).text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq_app.command("list")
def list_cmd(status: str = StatusOpt, every: bool = AllOpt, tenant: Optional[str] = TenantOpt) -> None:
    """List dead letters (by default the ones still parked): messages, then outbox deliveries.

    Example:  deskhand dlq list --all
    """
    async def read() -> tuple[list[dict], list[dict]]:
        async with _open_store() as store:
            return (await store.dead_letters(None if every else status, tenant),
                    await store.outbox_dead_letters(None if every else status, tenant))

    rows, given_up = asyncio.run(read())
    for row in rows:
        typer.echo(f"{row['inbox_id']}  {row['tenant_id']}  {row['status']}  attempts={row['attempts']}"
                   f"  {row['dead_at']}  {row['error']}")
    for row in given_up:
        typer.echo(f"{row['ref']}  {row['tenant_id']}  {row['dead_status']}  attempts={row['attempts']}"
                   f"  {row['created_at']}  {row['channel']}: {row['last_error']}")
    typer.echo(f"{len(rows) + len(given_up)} dead letter(s)")


@dlq_app.command("show")
def show_cmd(inbox_id: str, as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Show one dead letter: its message, its last error and its audit trail.

    Example:  deskhand dlq show slack:T0123:D0456:1764745200.000100
    Example:  deskhand dlq show outbox:42
    """
    if (outbox_id := outbox_id_of(inbox_id)) is not None:
        _show_outbox(inbox_id, outbox_id, as_json)
        return
    async def read() -> tuple[dict | None, list[dict]]:
        async with _open_store() as store:
            return await store.dead_letter_get(inbox_id), await store.audit_entries(inbox_id)

    row, entries = asyncio.run(read())
    if row is None:
        _fail(f"No dead letter {inbox_id!r}; `deskhand dlq list --all` lists them.")
    audit = [{"ts": a["ts"], "actor": a["actor"], "action": a["action"]} for a in entries]
    envelope = MessageEnvelope.model_validate_json(row["envelope"])
    details = {
        "inbox_id": row["inbox_id"], "tenant_id": row["tenant_id"], "session_id": row["session_id"],
        "channel": row["channel"], "status": row["status"], "attempts": row["attempts"],
        "error": row["error"], "dead_at": row["dead_at"], "retries": row["retries"],
        "decided_by": row["decided_by"] or None, "received_at": row["received_at"],
        "inbox_status": row["inbox_status"], "text": envelope.text, "audit": audit,
    }
    _echo_details(details, as_json)


def _show_outbox(ref: str, outbox_id: int, as_json: bool) -> None:
    async def read() -> tuple[dict | None, list[dict]]:
        async with _open_store() as store:
            return await store.outbox_dead_letter_get(outbox_id), await store.audit_entries(ref)

    row, entries = asyncio.run(read())
    audit = [{"ts": a["ts"], "actor": a["actor"], "action": a["action"]} for a in entries]
    if row is None:
        _fail(f"No dead letter {ref!r}; `deskhand dlq list --all` lists them.")
    payload = row["payload"]
    details = {
        "id": ref, "tenant_id": row["tenant_id"], "session_id": row["session_id"], "channel": row["channel"],
        "status": row["dead_status"], "attempts": row["attempts"], "error": row["last_error"],
        "created_at": row["created_at"], "inbox_id": row["inbox_id"] or None,
        "to": payload.get("to") or payload.get("channel"), "text": payload.get("subject") or payload.get("text"),
        "audit": audit,
    }
    _echo_details(details, as_json)


def _echo_details(details: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        if key != "audit":
            typer.echo(f"{key:>12}: {value}")
    for entry in details["audit"]:
        typer.echo(f"{'audit':>12}: {entry['ts']}  {entry['action']}  by {entry['actor']}")


def _decide(inbox_id: str, actor: str | None, verb: str) -> None:
    outbox_id = outbox_id_of(inbox_id)
    who = actor or _default_actor()

    async def decide() -> str | None:
        async with _open_store() as store:
            if outbox_id is not None:
                if verb == "retry":
                    return await store.outbox_dead_letter_retry(outbox_id, who)
                return await store.outbox_dead_letter_drop(outbox_id, who)
            if verb == "retry":
                return await store.dead_letter_retry(inbox_id, who)
            return await store.dead_letter_drop(inbox_id, who)

    was = asyncio.run(decide())
    if was is None:
        _fail(f"No dead letter {inbox_id!r}; `deskhand dlq list --all` lists them.")
    if was != DEAD:
        done = "retried" if verb == "retry" else "dropped"
        _fail(f"Dead letter {inbox_id!r} is already {was}; only a parked (dead) one can be {done}.")
    if verb == "retry" and outbox_id is not None:
        typer.echo(f"Retrying {inbox_id}: back in the outbox, due now; a running Deskhand sends it at its next "
                   "look at the outbox (or at its next start).")
    elif verb == "retry":
        typer.echo(f"Retrying {inbox_id}: its turn runs at the next start of `deskhand run` (or `deskhand resume`).")
    else:
        typer.echo(f"Dropped {inbox_id}; it stays in `deskhand dlq list --all` for the record.")


@dlq_app.command("retry")
def retry_cmd(inbox_id: str, actor: Optional[str] = ActorOpt) -> None:
    """Put a dead letter back, attempts reset: a turn runs at the next start, a delivery is sent again.

    Example:  deskhand dlq retry slack:T0123:D0456:1764745200.000100 --as U_LEAD
    Example:  deskhand dlq retry outbox:42
    """
    _decide(inbox_id, actor, "retry")


@dlq_app.command("drop")
def drop_cmd(inbox_id: str, actor: Optional[str] = ActorOpt) -> None:
    """Drop a dead letter for good (kept, marked dropped, for the audit trail).

    Example:  deskhand dlq drop slack:T0123:D0456:1764745200.000100 --as U_LEAD
    Example:  deskhand dlq drop outbox:42
    """
    _decide(inbox_id, actor, "drop")
