"""The per-tenant freshness record: when the KB was last reloaded, what it holds, what failed.

Stored as JSON in `<home>/kb/<tenant>/freshness.json`, apart from the bot's SQLite store, so
the knowledge base can be reloaded and inspected on its own.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from kb_loader.models import KBError


class FreshnessRecord(BaseModel):
    tenant_id: str
    last_reload_at: datetime
    kb_dir: str = ""
    docs: int = 0
    chunks: int = 0
    errors: list[KBError] = Field(default_factory=list)
    encoder: str = ""
    seconds: float = 0.0

    def age_hours(self, now: datetime | None = None) -> float:
        now = now or datetime.now(timezone.utc)
        return max(0.0, (now - self.last_reload_at).total_seconds() / 3600.0)


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def safe_name(tenant_id: str) -> str:
    """A file- and collection-safe name for a tenant id; distinct ids give distinct names."""
    if _SAFE.match(tenant_id):
        return tenant_id
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", tenant_id).strip("-_")[:40] or "tenant"
    return f"{slug}-{hashlib.sha1(tenant_id.encode()).hexdigest()[:10]}"


def record_path(home: Path, tenant_id: str) -> Path:
    return Path(home) / "kb" / safe_name(tenant_id) / "freshness.json"


def read_record(home: Path, tenant_id: str) -> FreshnessRecord | None:
    path = record_path(home, tenant_id)
    try:
        return FreshnessRecord.model_validate_json(path.read_text())
    except (OSError, ValidationError, ValueError):
        return None


def write_record(home: Path, record: FreshnessRecord) -> None:
    path = record_path(home, record.tenant_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    os.replace(tmp, path)
