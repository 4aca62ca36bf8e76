"""`deskhand store …`: the store itself. `copy --to URL` moves a SQLite home's store into an
empty PostgreSQL database (bot/store/copy.py), so several workers can then share it through
`DESKHAND_DATABASE_URL`.
"""

from __future__ import annotations

import asyncio

import typer

SUMMARY = "The store itself: copy a SQLite home into PostgreSQL."
store_app = typer.Typer(help=SUMMARY, no_args_is_help=True, rich_markup_mode=None)


@store_app.callback()
def _store() -> None:
    """The store itself: copy a SQLite home into PostgreSQL."""


@store_app.command("copy")
def copy_cmd(
    to: str = typer.Option(..., "--to", help="The PostgreSQL database: postgresql://user:password@host/db."),
    force: bool = typer.Option(False, "--force", help="Empty the target's Deskhand tables first, if it holds rows."),
    batch: int = typer.Option(1000, "--batch", min=1, help="Rows read and written per batch."),
) -> None:
    """Copy this home's SQLite store into an empty PostgreSQL database.

    Every table is copied, ids kept, into a target migrated first; then each table's row
    count is printed for both sides, and the command exits 1 if any differs. A target that
    already holds rows is refused unless --force. Stop Deskhand first: messages that arrive
    during the copy stay in the SQLite file only.

    Example:  deskhand store copy --to postgresql://deskhand@db.internal/deskhand
    """
    from bot.cli import _settings  # the CLI's settings and logging, loaded at call time
    from bot.store.copy import CopyRefused, copy_to_postgres
    from bot.store.probes import is_database_url, redact_url

    if not is_database_url(to):
        typer.echo("deskhand store copy: --to must be a postgresql:// URL", err=True)
        raise typer.Exit(2)
    settings = _settings()
    typer.echo(f"copying {settings.db_path} -> {redact_url(to)}")
    try:
        counts = asyncio.run(copy_to_postgres(settings.db_path, to, force=force, batch_rows=batch))
    except CopyRefused as refused:
        typer.echo(f"deskhand store copy: {refused}", err=True)
        raise typer.Exit(1) from None
    width = max(len(c.table) for c in counts)
    typer.echo(f"{'table'.ljust(width)}  {'sqlite':>8}  {'postgres':>8}")
    for count in counts:
        mark = "" if count.ok else "  DIFFERS"
        typer.echo(f"{count.table.ljust(width)}  {count.source:>8}  {count.copied:>8}{mark}")
    if not all(c.ok for c in counts):
        typer.echo("deskhand store copy: the row counts differ (see above)", err=True)
        raise typer.Exit(1)
    typer.echo(f"copied {sum(c.copied for c in counts)} rows in {len(counts)} tables; all counts match")
