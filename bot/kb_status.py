"""The knowledge base's facts, one way for every surface: which folder a tenant indexes, and
its state (indexing / ready / stale / empty / unavailable), size, last and next run, last error.

`/deskhand status`, `/deskhand kb status`, App Home and `deskhand kb status` all render
`kb_state(...)` through `kb_facts(...)`, so they never disagree.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from bot.config import FIXTURES, Settings
from bot.logs import get_logger

log = get_logger("deskhand.kb")

State = Literal["indexing", "ready", "stale", "empty", "unavailable"]


def tenants_file_path(settings: Settings) -> Path:
    """The tenants file `settings.tenants` reads (the demo one when none is set)."""
    return Path(settings.tenants_file) if settings.tenants_file else FIXTURES / "tenants.yml"


def kb_folder(settings: Settings, tenant_id: str) -> Path:
    """The folder a tenant's KB is built from: its `kb_dir` in the tenants file (relative to
    that file's folder), else DESKHAND_KB_DIR."""
    own = settings.policy(tenant_id).kb_dir
    if own is None:
        return Path(settings.kb_dir)
    return own if own.is_absolute() else tenants_file_path(settings).resolve().parent / own


class KBState(BaseModel):
    tenant_id: str
    state: State
    documents: int = 0
    chunks: int = 0
    kb_dir: str = ""
    indexed_at: datetime | None = None  # the index's last successful build
    last_run_at: datetime | None = None  # the last run's end (or start, while it runs)
    last_run_ok: bool | None = None
    last_error: str = ""
    next_run_at: datetime | None = None
    stale_after_hours: float = 0.0
    last_eval: str = ""  # the nightly golden eval's summary line
    skipped: list[str] = Field(default_factory=list)  # "file: why" for files the last build skipped


def kb_state(settings: Settings, kb, tenant_id: str, *, next_run_at: datetime | None = None) -> KBState:
    """A tenant's KB facts. Synchronous (reads small files and counts chunks): call it through
    `asyncio.to_thread` on the loop. `next_run_at` is the live scheduler's; without it, the one
    the running `deskhand run` wrote down."""
    from kb_loader.runs import read_runs

    folder = str(kb_folder(settings, tenant_id))
    runs = read_runs(settings.home, tenant_id)
    base = dict(tenant_id=tenant_id, kb_dir=folder, last_error=runs.error, last_run_ok=runs.ok,
                last_run_at=runs.finished_at or runs.started_at,
                next_run_at=next_run_at or runs.scheduled_next(),
                stale_after_hours=float(settings.kb_stale_hours), last_eval=last_eval_line(settings.home))
    if kb is None:
        return KBState(state="unavailable", **base)
    try:
        status = kb.status(tenant_id)
    except Exception as exc:  # e.g. the encoder cannot load: say so, never raise into a surface
        log.warning("kb_status_failed", tenant_id=tenant_id, error=type(exc).__name__)
        return KBState(state="unavailable", **{**base, "last_error": base["last_error"] or type(exc).__name__})
    indexing = runs.running() or (hasattr(kb, "is_indexing") and kb.is_indexing(tenant_id))
    if indexing:
        state: State = "indexing"
    elif status.available:
        state = "ready"
    else:
        state = "stale" if status.reason == "stale" else "empty"
    return KBState(state=state, documents=status.docs, chunks=status.chunks, indexed_at=status.last_reload_at,
                   skipped=[f"{e.source}: {e.error}" for e in status.errors], **base)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def kb_facts(state: KBState) -> list[tuple[str, str]]:
    """The facts as (label, value) rows, in the order every surface shows them."""
    last = _when(state.last_run_at)
    if state.last_run_at is not None and state.last_run_ok is not None:
        last += " (ok)" if state.last_run_ok else " (failed)"
    rows = [("state", state.state), ("documents", str(state.documents)), ("chunks", str(state.chunks)),
            ("last run", last), ("next run", _when(state.next_run_at)),
            ("indexed at", _when(state.indexed_at)), ("folder", state.kb_dir or "-"),
            ("skipped files", str(len(state.skipped)))]
    if state.last_error:
        rows.append(("last error", state.last_error))
    if state.last_eval:
        rows.append(("nightly eval", state.last_eval))
    return rows


def kb_summary(state: KBState) -> str:
    """One line: the state, the size, the last and next run."""
    return (f"{state.state} · {state.documents} documents · {state.chunks} chunks · "
            f"last run {_when(state.last_run_at)} · next run {_when(state.next_run_at)}")


# -- the nightly eval's last summary, kept beside the KB's records --------------------------

def eval_path(home: Path) -> Path:
    return Path(home) / "kb" / "last_eval.json"


def write_last_eval(home: Path, finished_at: datetime, summary: dict) -> None:
    path = eval_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"finished_at": finished_at.isoformat(), "summary": summary}, indent=2))
    os.replace(tmp, path)


def read_last_eval(home: Path) -> dict | None:
    try:
        return json.loads(eval_path(home).read_text())
    except (OSError, ValueError):
        return None


def last_eval_line(home: Path) -> str:
    record = read_last_eval(home)
    if not record:
        return ""
    summary = record.get("summary") or {}
    if "error" in summary:
        return f"{record.get('finished_at', '')[:19]} · failed to run ({summary['error']})"
    line = (f"{record.get('finished_at', '')[:19]} · pass rate {summary.get('pass_rate', '?')} · "
            f"{summary.get('turns', '?')} turns")
    if summary.get("kb_questions"):
        line += f" · answer correctness {summary['answer_correctness']} on {summary['kb_questions']} KB questions"
    return line
