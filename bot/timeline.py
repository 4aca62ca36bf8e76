"""`deskhand trace`: one message's timeline, from its intake to its reply.

The spans of one correlation id (`Store.traces_for`, in start order) as lines: first the
intake (surface, the surface's own id for the message, when it was received and how long
until it was stored), then every span with its start offset from the first one, its
duration and what it recorded. A turn re-run after a crash shows its steps twice, under
the same id.
"""

from __future__ import annotations

import json
from datetime import datetime

from bot.store.sqlite import INTAKE


def _source(data: dict) -> str:
    if data.get("event_id"):
        retry = f" (retry {data['retry_attempt']})" if data.get("retry_attempt") else ""
        return f"event {data['event_id']}{retry}"
    if data.get("message_id"):
        return f"Message-ID {data['message_id']}"
    return f"inbox {data.get('inbox_id', '?')}"


def timeline(spans: list[dict]) -> list[str]:
    """The lines `deskhand trace` prints for `spans` (not empty)."""
    intake = next((s for s in spans if s["span"] == INTAKE), None)
    if intake is None:  # stored before intake spans were recorded
        lines = ["intake  (not recorded)"]
    else:
        data = intake["data"]
        lines = [f"intake  {data.get('surface', '?')}  {_source(data)}  received {intake['ts']}"
                 f"  stored after {intake['duration_ms']:.2f} ms"]
    first = datetime.fromisoformat(spans[0]["ts"])
    for span in spans:
        offset = (datetime.fromisoformat(span["ts"]) - first).total_seconds()
        lines.append(f"{f'+{offset:.3f}s':>10}  {span['span']:<10} {span['duration_ms']:8.2f} ms  "
                     f"{json.dumps(span['data'], default=str)}")
    return lines
