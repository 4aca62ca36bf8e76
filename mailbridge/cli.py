"""`deskhand mail …`: look at email the way Deskhand sees it. Nothing here sends mail."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mailbridge.parse import DEFAULT_MAX_BYTES, parse_message

mail_app = typer.Typer(
    help="Inspect email the way Deskhand's mail bridge reads it (nothing is sent).",
    no_args_is_help=True,
)


@mail_app.callback()
def _mail() -> None:
    """Inspect email the way Deskhand's mail bridge reads it (nothing is sent)."""


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
