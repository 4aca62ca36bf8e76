"""The per-tenant run record: the last reload's start, end and error, and the next scheduled one.

Stored as JSON in `<home>/kb/<tenant>/runs.json`, beside the freshness record, so it survives
restarts and another process (`deskhand kb status`) can read it. A run that is still going
names its process: if that process is gone (killed mid-build), the run is not shown as going.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

from kb_loader.freshness import safe_name

_LOCK = threading.Lock()  # reloads (threads) and the scheduler (the loop) update one file


class RunRecord(BaseModel):
    tenant_id: str
    started_at: datetime | None = None
    finished_at: datetime | None = None  # None while the run is going
    ok: bool | None = None
    error: str = ""  # the last failed run's reason, kept until a run succeeds
    pid: int = 0  # the process that ran (or is running) the last run
    next_run_at: datetime | None = None  # written by the scheduler of `deskhand run`
    scheduler_pid: int = 0

    def running(self) -> bool:
        return self.started_at is not None and self.finished_at is None and process_alive(self.pid)

    def scheduled_next(self) -> datetime | None:
        """The next run, if the process that scheduled it is still alive."""
        return self.next_run_at if self.next_run_at and process_alive(self.scheduler_pid) else None


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def runs_path(home: Path, tenant_id: str) -> Path:
    return Path(home) / "kb" / safe_name(tenant_id) / "runs.json"


def read_runs(home: Path, tenant_id: str) -> RunRecord:
    try:
        return RunRecord.model_validate_json(runs_path(home, tenant_id).read_text())
    except (OSError, ValidationError, ValueError):
        return RunRecord(tenant_id=tenant_id)


def write_runs(home: Path, record: RunRecord) -> None:
    path = runs_path(home, record.tenant_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    os.replace(tmp, path)


def run_started(home: Path, tenant_id: str) -> None:
    with _LOCK:
        record = read_runs(home, tenant_id)
        record.started_at, record.finished_at, record.ok = datetime.now(timezone.utc), None, None
        record.pid = os.getpid()
        write_runs(home, record)


def run_finished(home: Path, tenant_id: str, error: str = "") -> None:
    with _LOCK:
        record = read_runs(home, tenant_id)
        record.finished_at, record.ok, record.error = datetime.now(timezone.utc), not error, error
        write_runs(home, record)


def next_run_scheduled(home: Path, tenant_id: str, when: datetime | None) -> None:
    with _LOCK:
        record = read_runs(home, tenant_id)
        record.next_run_at, record.scheduler_pid = when, os.getpid()
        write_runs(home, record)
