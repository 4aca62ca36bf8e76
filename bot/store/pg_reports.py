"""`PgReportTables`: the reads `deskhand report` is computed from, on PostgreSQL.

The statements are reports.py's, with psycopg's placeholder; rows come back as tuples in the
order they are selected, as the SQLite `Store`'s `report_…` methods return them.
"""

from __future__ import annotations

from datetime import datetime

from bot.store.pg_base import PgBase
from bot.store.reports import (
    PG_MARK,
    Statement,
    feedback_rows_sql,
    flagged_inbox_rows_sql,
    inbox_outcomes_sql,
    tool_call_rows_sql,
    trace_rows_sql,
    turn_channels_sql,
)


class PgReportTables(PgBase):
    async def _report_rows(self, statement: Statement) -> list[tuple]:
        return [tuple(row.values()) for row in await self._rows(*statement)]

    async def report_turn_channels(self) -> dict[str, str]:
        """The channel of each turn, by correlation id."""
        return dict(await self._report_rows(turn_channels_sql()))

    async def report_trace_rows(self, tenant: str | None, since: datetime | None) -> list[tuple]:
        """(correlation_id, tenant_id, span, data, duration_ms) of every span, in order."""
        return await self._report_rows(trace_rows_sql(tenant, since, PG_MARK))

    async def report_tool_call_rows(self, tenant: str | None, since: datetime | None) -> list[tuple]:
        """(tool, ok, cost_ms) of every hand call."""
        return await self._report_rows(tool_call_rows_sql(tenant, since, PG_MARK))

    async def report_inbox_outcomes(self, tenant: str | None, since: datetime | None) -> list[str]:
        """The stored outcome (JSON) of every finished inbox message received in scope."""
        return [row[0] for row in await self._report_rows(inbox_outcomes_sql(tenant, since, PG_MARK))]

    async def report_flagged_inbox_rows(self, tenant: str | None, since: datetime | None,
                                        flag_prefix: str) -> list[tuple]:
        """(id, session_id, received_at, flags, correlation_id) of inbox messages with a flag
        starting `flag_prefix`, newest first."""
        return await self._report_rows(flagged_inbox_rows_sql(tenant, since, flag_prefix, PG_MARK))

    async def report_feedback_rows(self, tenant: str | None, since: datetime | None) -> list[tuple]:
        """(id, tenant_id, inbox_id, user_id, value, ts, reasons, comment, envelope, outcome,
        correlation_id) of every vote in scope, oldest first, with the answered message's row."""
        return await self._report_rows(feedback_rows_sql(tenant, since, PG_MARK))


__all__ = ["PgReportTables"]
