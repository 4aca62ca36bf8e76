"""`deskhand mail …`: run the mail bridge, look at its outbox, read email as Deskhand does.

`parse` only reads; `serve` receives and answers mail; `outbox` and `retry` look at and
re-queue what is waiting to be sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import typer

from mailbridge.parse import DEFAULT_MAX_BYTES, parse_message

mail_app = typer.Typer(
    help="The email sidecar: receive and answer mail, inspect the outbox, parse a message.",
    no_args_is_help=True,
)


@mail_app.callback()
def _mail() -> None:
    """The email sidecar: receive and answer mail, inspect the outbox, parse a message."""


def _settings():
    from bot.config import load_settings
    from bot.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, log_file=settings.log_file or settings.home / "deskhand.log")
    return settings


@mail_app.command("serve")
def serve_cmd() -> None:
    """Receive and answer email until stopped (SMTP, plus IMAP when configured).

    Runs the mail bridge with the orchestrator's workers (no Slack). Replies go out through
    the relay. It first finishes whatever a previous run left (messages not yet
    answered, replies not yet sent). Stops cleanly on Ctrl-C or SIGTERM.
    Configured by DESKHAND_SMTP_HOST/PORT, DESKHAND_SMTP_RECIPIENTS, DESKHAND_MAIL_TENANT,
    DESKHAND_MAIL_FROM, DESKHAND_RELAY_* and DESKHAND_IMAP_*.

    Example:

        DESKHAND_SMTP_PORT=8025 DESKHAND_RELAY_PORT=2525 deskhand mail serve
    """
    from bot.runtime import open_runtime
    from mailbridge.service import serve_until_stopped

    settings = _settings()

    def ready(bridge) -> None:
        imap = f", IMAP {settings.imap_host}:{settings.imap_port}" if settings.imap_host else ""
        typer.echo(f"Deskhand mail bridge: SMTP on {settings.smtp_host}:{bridge.smtp_port}{imap}; "
                   f"replies via {settings.relay_host}:{settings.relay_port}. Ctrl-C to stop.")
        sys.stdout.flush()

    async def main() -> None:
        async with open_runtime(settings) as rt:
            await rt.ensure_kb(settings.mail_tenant)
            await serve_until_stopped(rt, on_ready=ready)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        raise typer.Exit(130)


@mail_app.command("outbox")
def outbox_cmd(
    status: str = typer.Option("all", "--status", help="pending, sent, failed, dropped, or all."),
    limit: int = typer.Option(50, "--limit", help="Show at most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List outgoing email (pending, sent, failed, dropped) with attempts and the last error.

    An item is failed once the outbox's retry policy gave up on it (DESKHAND_OUTBOX_*); it is
    also in `deskhand dlq list` as outbox:ID. `deskhand mail retry ID` queues it again.

    Example:

        deskhand mail outbox --status failed
    """
    from bot.store.factory import open_store

    if status not in ("pending", "sent", "failed", "dropped", "all"):
        typer.echo("--status must be pending, sent, failed, dropped or all", err=True)
        raise typer.Exit(2)
    settings = _settings()

    async def read() -> list[dict]:
        async with open_store(settings) as store:
            return await store.outbox_rows(None if status == "all" else status, channel="email")

    rows = list(reversed(asyncio.run(read())))[:limit]
    if not rows:
        typer.echo("No outgoing email." if status == "all" else f"No {status} email.")
        return
    for row in rows:
        payload = row["payload"]
        item = {
            "id": row["id"], "status": row["status"], "attempts": row["attempts"], "to": payload.get("to", ""),
            "subject": payload.get("subject", ""), "message_id": payload.get("message_id", ""),
            "session_id": row["session_id"], "created_at": row["created_at"], "sent_at": row["sent_at"],
            "next_attempt_at": row["next_attempt_at"], "last_error": row["last_error"],
        }
        if as_json:
            typer.echo(json.dumps(item))
            continue
        when = {"sent": f"sent {row['sent_at']}", "pending": f"next try {row['next_attempt_at']}"}.get(row["status"], "")
        typer.echo(f"{row['id']:>5}  {row['status']:<7}  {row['attempts']} attempt(s)  to {item['to']}  "
                   f"\"{item['subject']}\"  {when}".rstrip())
        if row["last_error"]:
            typer.echo(f"       last error: {row['last_error']}")


@mail_app.command("retry")
def retry_cmd(item_id: int = typer.Argument(..., help="The outbox item's id (see `deskhand mail outbox`).")) -> None:
    """Queue a failed outgoing email again, with every attempt the retry policy allows.

    A running bridge sends it within its poll interval (15 s), or at its next start.

    Example:

        deskhand mail retry 12
    """
    from bot.store.factory import open_store

    settings = _settings()

    async def requeue() -> str | None:
        """None once queued again; else why not."""
        async with open_store(settings) as store:
            rows = [r for r in await store.outbox_rows(channel="email") if r["id"] == item_id]
            if not rows:
                return f"No outgoing email {item_id}."
            if not await store.outbox_requeue(item_id):
                return f"Email {item_id} was already {rows[0]['status']}."
            return None

    if (refused := asyncio.run(requeue())) is not None:
        typer.echo(refused, err=True)
        raise typer.Exit(1)
    typer.echo(f"Email {item_id} is queued again.")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


@mail_app.command("parse")
def parse_cmd(
    file: str = typer.Argument(..., help="A raw .eml file, or - for standard input."),
    as_json: bool = typer.Option(False, "--json", help="Print the full parsed result as JSON."),
    max_bytes: int = typer.Option(DEFAULT_MAX_BYTES, "--max-bytes", help="Parse only this many bytes."),
) -> None:
    """Parse one email and print what Deskhand would answer: sender, text, thread keys, flags.

    Also shows a forward's original sender, the quoted text removed, and attachments.

    Example:

        deskhand mail parse tests/data/mail/forwards/gmail_forward.eml

        deskhand mail parse message.eml --json | jq .original_sender
    """
    if file == "-":
        raw = sys.stdin.buffer.read()
    else:
        path = Path(file)
        if not path.is_file():
            typer.echo(f"No such file: {file}", err=True)
            raise typer.Exit(2)
        raw = path.read_bytes()
    parsed = parse_message(raw, max_bytes=max_bytes)
    if as_json:
        typer.echo(parsed.model_dump_json(indent=2))
        return
    sender = f"{parsed.from_name} <{parsed.from_addr}>" if parsed.from_name else parsed.from_addr
    rows = [
        ("From", sender or "(none)"),
        ("Subject", parsed.subject or "(none)"),
        ("Date", parsed.date.isoformat() if parsed.date else "(none)"),
        ("Message-ID", parsed.message_id),
    ]
    if parsed.is_forward:
        original = parsed.original_sender or "(unknown)"
        if parsed.original_name:
            original = f"{parsed.original_name} <{original}>"
        rows += [("Forwarded", "yes"), ("Original sender", original)]
        rows += [("Original subject", parsed.original_subject or "(none)")]
    rows += [
        ("Thread keys", ", ".join(parsed.thread_keys) or "(none)"),
        ("HTML converted", "yes" if parsed.html_converted else "no"),
        ("Flags", ", ".join(parsed.flags) or "(none)"),
    ]
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        typer.echo(f"{label + ':':<{width}}{value}")
    if parsed.attachments:
        typer.echo("Attachments:")
        for att in parsed.attachments:
            typer.echo(f"  - {att.name} ({att.content_type}, {_size(att.size)})")
    typer.echo("\n--- text ---")
    typer.echo(parsed.text or "(empty)")
    if parsed.is_forward and parsed.original_text:
        typer.echo("\n--- forwarded message ---")
        typer.echo(parsed.original_text)
    if parsed.quoted_text:
        lines = parsed.quoted_text.splitlines()
        typer.echo(f"\n--- quoted text removed ({len(lines)} lines) ---")
        typer.echo("\n".join(lines[:10]) + ("\n…" if len(lines) > 10 else ""))
