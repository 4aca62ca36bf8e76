"""The queries behind `deskhand report` (bot/reporting.py and its feedback and abuse sections):
plain rows from the traces, tool_calls, inbox and feedback tables, for one tenant or all and
since a moment or ever. The report itself (grouping, percentiles, rates) is computed by its
callers, from `await store.report_…(…)` on either backend.

Each statement is written once, with the backend's placeholder filled in (`?` for SQLite,
`%s` for PostgreSQL): `ReportTables` runs them on the SQLite `Store`, `PgReportTables`
(pg_reports.py) on `PgStore`. Rows come back as tuples, in the order the statement selects.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

SQLITE_MARK, PG_MARK = "?", "%s"
Statement = tuple[str, list[Any]]


def _scope(tenant: str | None, since: datetime | None, mark: str, *, time_column: str,
           tenant_column: str = "tenant_id") -> Statement:
    where, params = ["1 = 1"], []
    if tenant:
        where.append(f"{tenant_column} = {mark}")
        params.append(tenant)
    if since:
        where.append(f"{time_column} >= {mark}")
        params.append(since.astimezone(timezone.utc).isoformat())
    return " AND ".join(where), params


def turn_channels_sql() -> Statement:
    return "SELECT correlation_id, channel FROM inbox WHERE correlation_id IS NOT NULL", []


def trace_rows_sql(tenant: str | None, since: datetime | None, mark: str) -> Statement:
    cond, params = _scope(tenant, since, mark, time_column="ts")
    return (f"SELECT correlation_id, tenant_id, span, data, duration_ms FROM traces WHERE {cond} ORDER BY id",
            params)


def tool_call_rows_sql(tenant: str | None, since: datetime | None, mark: str) -> Statement:
    cond, params = _scope(tenant, since, mark, time_column="ts")
    return f"SELECT tool, ok, cost_ms FROM tool_calls WHERE {cond}", params


def inbox_outcomes_sql(tenant: str | None, since: datetime | None, mark: str) -> Statement:
    cond, params = _scope(tenant, since, mark, time_column="received_at")
    return f"SELECT outcome FROM inbox WHERE {cond} AND outcome IS NOT NULL", params


def flagged_inbox_rows_sql(tenant: str | None, since: datetime | None, flag_prefix: str, mark: str) -> Statement:
    cond, params = _scope(tenant, since, mark, time_column="received_at")
    return (f"SELECT id, session_id, received_at, flags, correlation_id FROM inbox WHERE {cond}"
            f" AND flags LIKE {mark} ORDER BY received_at DESC", [*params, f"%{flag_prefix}%"])


def feedback_rows_sql(tenant: str | None, since: datetime | None, mark: str) -> Statement:
    cond, params = _scope(tenant, since, mark, time_column="f.ts", tenant_column="f.tenant_id")
    return ("SELECT f.id, f.tenant_id, f.inbox_id, f.user_id, f.value, f.ts, f.reasons, f.comment,"
            " i.envelope, i.outcome, i.correlation_id FROM feedback f LEFT JOIN inbox i ON i.id = f.inbox_id"
            f" WHERE {cond} ORDER BY f.id", params)


class ReportTables:
    """The report's reads on the SQLite `Store` (a mixin, using its connection `self.db`)."""

    db: Any  # Store's connection

    def _report_rows(self, statement: Statement) -> list[tuple]:
        return [tuple(row) for row in self.db.execute(*statement).fetchall()]

    def report_turn_channels(self) -> dict[str, str]:
        """The channel of each turn, by correlation id."""
        return dict(self._report_rows(turn_channels_sql()))

    def report_trace_rows(self, tenant: str | None, since: datetime | None) -> list[tuple]:
        """(correlation_id, tenant_id, span, data, duration_ms) of every span, in order."""
        return self._report_rows(trace_rows_sql(tenant, since, SQLITE_MARK))

    def report_tool_call_rows(self, tenant: str | None, since: datetime | None) -> list[tuple]:
        """(tool, ok, cost_ms) of every hand call."""
        return self._report_rows(tool_call_rows_sql(tenant, since, SQLITE_MARK))

    def report_inbox_outcomes(self, tenant: str | None, since: datetime | None) -> list[str]:
        """The stored outcome (JSON) of every finished inbox message received in scope."""
        return [row[0] for row in self._report_rows(inbox_outcomes_sql(tenant, since, SQLITE_MARK))]

    def report_flagged_inbox_rows(self, tenant: str | None, since: datetime | None, flag_prefix: str) -> list[tuple]:
        """(id, session_id, received_at, flags, correlation_id) of inbox messages with a flag
        starting `flag_prefix`, newest first."""
        return self._report_rows(flagged_inbox_rows_sql(tenant, since, flag_prefix, SQLITE_MARK))

    def report_feedback_rows(self, tenant: str | None, since: datetime | None) -> list[tuple]:
        """(id, tenant_id, inbox_id, user_id, value, ts, reasons, comment, envelope, outcome,
        correlation_id) of every vote in scope, oldest first, with the answered message's row."""
        return self._report_rows(feedback_rows_sql(tenant, since, SQLITE_MARK))
