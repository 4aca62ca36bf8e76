"""The queries behind `deskhand report` (bot/reporting.py and its feedback and abuse sections):
plain rows from the traces, tool_calls, inbox and feedback tables, for one tenant or all and
since a moment or ever. The report itself (grouping, percentiles, rates) is computed by its
callers. Each function takes the sqlite-utils `Database` of a `Store` (`store.db`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def _scope(tenant: str | None, since: datetime | None, *, time_column: str,
           tenant_column: str = "tenant_id") -> tuple[str, list[Any]]:
    where, params = ["1 = 1"], []
    if tenant:
        where.append(f"{tenant_column} = ?")
        params.append(tenant)
    if since:
        where.append(f"{time_column} >= ?")
        params.append(since.astimezone(timezone.utc).isoformat())
    return " AND ".join(where), params


def turn_channels(db) -> dict[str, str]:
    """The channel of each turn, by correlation id."""
    return dict(db.execute("SELECT correlation_id, channel FROM inbox WHERE correlation_id IS NOT NULL").fetchall())


def trace_rows(db, tenant: str | None, since: datetime | None) -> list[tuple]:
    """(correlation_id, tenant_id, span, data, duration_ms) of every span, in order."""
    cond, params = _scope(tenant, since, time_column="ts")
    return db.execute(f"SELECT correlation_id, tenant_id, span, data, duration_ms FROM traces WHERE {cond}"
                      " ORDER BY id", params).fetchall()


def tool_call_rows(db, tenant: str | None, since: datetime | None) -> list[tuple]:
    """(tool, ok, cost_ms) of every hand call."""
    cond, params = _scope(tenant, since, time_column="ts")
    return db.execute(f"SELECT tool, ok, cost_ms FROM tool_calls WHERE {cond}", params).fetchall()


def inbox_outcomes(db, tenant: str | None, since: datetime | None) -> list[str]:
    """The stored outcome (JSON) of every finished inbox message received in scope."""
    cond, params = _scope(tenant, since, time_column="received_at")
    return [row[0] for row in db.execute(
        f"SELECT outcome FROM inbox WHERE {cond} AND outcome IS NOT NULL", params).fetchall()]


def flagged_inbox_rows(db, tenant: str | None, since: datetime | None, flag_prefix: str) -> list[tuple]:
    """(id, session_id, received_at, flags, correlation_id) of inbox messages with a flag
    starting `flag_prefix`, newest first."""
    cond, params = _scope(tenant, since, time_column="received_at")
    return db.execute(f"SELECT id, session_id, received_at, flags, correlation_id FROM inbox WHERE {cond}"
                      " AND flags LIKE ? ORDER BY received_at DESC", [*params, f"%{flag_prefix}%"]).fetchall()


def feedback_rows(db, tenant: str | None, since: datetime | None) -> list[tuple]:
    """(id, tenant_id, inbox_id, user_id, value, ts, reasons, comment, envelope, outcome,
    correlation_id) of every vote in scope, oldest first, with the answered message's row."""
    cond, params = _scope(tenant, since, time_column="f.ts", tenant_column="f.tenant_id")
    return db.execute(
        "SELECT f.id, f.tenant_id, f.inbox_id, f.user_id, f.value, f.ts, f.reasons, f.comment,"
        " i.envelope, i.outcome, i.correlation_id FROM feedback f LEFT JOIN inbox i ON i.id = f.inbox_id"
        f" WHERE {cond} ORDER BY f.id", params).fetchall()
