"""Row helpers for the store: timestamps, and JSON columns (redacted on the way in)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from bot.redact import redact_value


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def dumps(value: Any) -> str:
    return json.dumps(redact_value(value), default=str, sort_keys=True)


def loads(value: str | None, default: Any = None) -> Any:
    return json.loads(value) if value else default
