"""`deskhand kb …`: reload the knowledge base, check its freshness, try a search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kb_loader.kb import CHANNELS, KnowledgeBase, ReloadError

kb_app = typer.Typer(
    help="Knowledge base: reload help articles, check freshness, try a search.",
    no_args_is_help=True,
)

TenantOpt = Annotated[
    Optional[str], typer.Option("--tenant", "-t", help="Tenant id (default: DESKHAND_DEFAULT_TENANT).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_STAGES = {"load": "Reading files", "chunk": "Chunking", "embed": "Embedding", "index": "Indexing"}


def _settings():
    from bot.config import load_settings
    from bot.logs import configure_logging

    settings = load_settings()
    # Logs go to the log file, as for every deskhand command, so stdout stays clean for --json.
    configure_logging(settings.log_level, log_file=settings.log_file or settings.home / "deskhand.log")
    return settings


def _kb() -> tuple[KnowledgeBase, str]:
    settings = _settings()
    return KnowledgeBase.from_settings(settings), settings.default_tenant


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


@kb_app.command("reload")
def reload_cmd(
    kb_dir: Annotated[
        Optional[Path], typer.Argument(help="Folder of articles (default: the tenant's kb_dir in the tenants "
                                       "file, else DESKHAND_KB_DIR).", show_default=False)
    ] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with status 2 if any file was skipped.")] = False,
) -> None:
    """Reload the knowledge base from a folder, re-embedding only chunks that changed.

    Markdown, HTML and text files are read recursively. Files that cannot be read are
    skipped and listed; the rest are still indexed.

    Example:

        deskhand kb reload fixtures/kb --tenant T_DEMO
    """
    from bot.kb_status import kb_folder

    settings = _settings()
    kb = KnowledgeBase.from_settings(settings)
    tenant = tenant or settings.default_tenant
    kb_dir = kb_dir or kb_folder(settings, tenant)
    console = _console()
    try:
        if as_json:
            report = kb.reload(tenant, kb_dir)
        else:
            with Progress(
                TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=False,
            ) as bar:
                tasks: dict[str, int] = {}

                def progress(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=max(total, 1))
                    bar.update(tasks[stage], completed=done if total else 1, total=max(total, 1))

                report = kb.reload(tenant, kb_dir, progress=progress)
    except ReloadError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        console.print(
            f"[bold]{tenant}[/bold]: {report.docs} documents, {report.chunks} chunks "
            f"in {report.seconds:.1f} s. Added {len(report.added)}, updated {len(report.updated)}, "
            f"unchanged {len(report.unchanged)}, removed {len(report.removed)}; "
            f"{report.chunks_embedded} chunks embedded."
        )
        for error in report.errors:
            console.print(f"[yellow]skipped[/yellow] {error.source}: {error.error}")
        if report.kept:
            console.print(f"kept the previous version of: {', '.join(report.kept)}")
    if strict and report.errors:
        raise typer.Exit(2)


@kb_app.command("status")
def status_cmd(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Show the knowledge base's state, size, last and next run, and what failed.

    The state is indexing, ready, stale (older than DESKHAND_KB_STALE_HOURS), empty (never
    built) or unavailable; KB questions go to a human unless it is ready. The next run is
    shown while `deskhand run` is running. These are the facts `/deskhand kb status` and
    App Home show.

    Example:

        deskhand kb status --tenant T_DEMO --json
    """
    from bot.kb_status import kb_facts, kb_state

    settings = _settings()
    tenant = tenant or settings.default_tenant
    state = kb_state(settings, KnowledgeBase.from_settings(settings), tenant)
    if as_json:
        typer.echo(state.model_dump_json(indent=2))
        return
    colour = {"ready": "green", "indexing": "yellow"}.get(state.state, "red")
    table = Table(show_header=False, box=None)
    table.add_row("[bold]tenant[/bold]", tenant)
    for label, value in kb_facts(state):
        table.add_row(f"[bold]{label}[/bold]", f"[{colour}]{value}[/{colour}]" if label == "state" else value)
    console = _console()
    console.print(table)
    for skipped in state.skipped:
        console.print(f"  [yellow]skipped[/yellow] {skipped}")


@kb_app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    tenant: TenantOpt = None,
    channel: Annotated[
        Optional[str],
        typer.Option("--channel", "-c", help="Only chunks this channel may see: slack_dm, slack_channel, "
                     "slack_thread, email or cli (default: no filter)."),
    ] = None,
    top_k: Annotated[int, typer.Option("--top", "-k", min=1, max=20, help="Number of results.")] = 3,
    as_json: JsonOpt = False,
) -> None:
    """Search the knowledge base as the bot does (hybrid, filtered by channel).

    Example:

        deskhand kb search "how long do refunds take" --channel slack_dm
    """
    if channel is not None and channel not in CHANNELS:
        raise typer.BadParameter(f"unknown channel {channel!r}; one of {', '.join(sorted(CHANNELS))}",
                                 param_hint="--channel")
    kb, default_tenant = _kb()
    hits = kb.search(tenant or default_tenant, query, channel=channel, top_k=top_k)
    if as_json:
        typer.echo(json.dumps([h.model_dump(mode="json") for h in hits], indent=2))
        return
    console = _console()
    if not hits:
        console.print("No results." + ("" if kb.is_available(tenant or default_tenant)
                                       else " The knowledge base is not available: run `deskhand kb reload`."))
        return
    for n, hit in enumerate(hits, start=1):
        c = hit.citation
        heading = c.section if c.section.startswith(c.title) else f"{c.title} > {c.section}" if c.section else c.title
        console.print(f"[bold]{n}. {heading}[/bold]  relevance {hit.relevance:.2f}")
        console.print(f"   {c.url}")
        console.print(f"   [dim]{c.snippet}[/dim]")
