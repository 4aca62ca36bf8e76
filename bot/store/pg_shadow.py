"""`PgShadowTables`: the PostgreSQL side of the turns looked at again: shadow turns
(shadow.py: what Deskhand would have done and said) and the answered turns `deskhand replay`
re-plans (feedback.py's `replayable_turns`).

Same names, parameters and shapes as the SQLite `Store`'s. Where SQLite breaks ties in time
order by rowid, these break them by the inbox's insertion counter (`seq`) or the key.
"""

from __future__ import annotations

import json

from bot.store.feedback import DOWNVOTED_INBOX_IDS
from bot.store.pg_base import INBOX_COLUMNS, PgBase
from bot.store.rows import dumps, loads, now_iso


class PgShadowTables(PgBase):
    async def shadow_record(self, *, inbox_id: str, tenant_id: str, session_id: str, channel: str,
                            correlation_id: str, text: str, intent: str | None, plan: dict | None,
                            reply: str | None, state: str, error: str | None = None) -> dict:
        """Record a shadow turn once; return the row this message holds (the first record)."""
        actions, reads = await self._shadow_calls(correlation_id)
        await self._execute(
            "INSERT INTO shadow_runs (inbox_id, tenant_id, session_id, channel, correlation_id, ts, text, intent,"
            " plan, actions, reads, reply, state, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s) ON CONFLICT DO NOTHING",
            [inbox_id, tenant_id, session_id, channel, correlation_id, now_iso(), text, intent,
             dumps(plan) if plan is not None else None, dumps(actions), dumps(reads), reply, state, error])
        return await self._row("SELECT * FROM shadow_runs WHERE inbox_id = %s", [inbox_id])

    async def _shadow_calls(self, correlation_id: str) -> tuple[list[dict], list[dict]]:
        actions, reads = [], []
        for call in await self._rows("SELECT tool, args, ok, result, error_kind FROM tool_calls"
                                     " WHERE correlation_id = %s ORDER BY id", [correlation_id]):
            data = loads(call["result"], {}) or {}
            if isinstance(data, dict) and data.get("shadow"):
                actions.append({"tool": call["tool"], "would": data.get("would", "run"),
                                "args": data.get("args", loads(call["args"], {}))})
            else:
                reads.append({"tool": call["tool"], "ok": bool(call["ok"]), "error_kind": call["error_kind"]})
        return actions, reads

    async def shadow_runs(self, *, tenant_id: str | None = None, since: str | None = None) -> list[dict]:
        """Shadow turns, oldest first, optionally of one tenant and from an ISO time on."""
        sql, params = "SELECT * FROM shadow_runs WHERE 1 = 1", []
        if tenant_id:
            sql += " AND tenant_id = %s"
            params.append(tenant_id)
        if since:
            sql += " AND ts >= %s"
            params.append(since)
        rows = await self._rows(sql + " ORDER BY ts, inbox_id", params)
        for row in rows:
            for column in ("plan", "actions", "reads"):
                row[column] = json.loads(row[column]) if row[column] else None
        return rows

    async def replayable_turns(self, limit: int, tenant_id: str | None = None, downvoted: bool = False) -> list[dict]:
        """The latest `limit` answered inbox rows, oldest first: what `deskhand replay` re-plans
        or re-answers; with `downvoted`, only answers someone still marks 👎."""
        sql, params = f"SELECT {INBOX_COLUMNS} FROM inbox WHERE outcome IS NOT NULL", []
        if tenant_id:
            sql += " AND tenant_id = %s"
            params.append(tenant_id)
        if downvoted:
            sql += f" AND id IN ({DOWNVOTED_INBOX_IDS})"
        rows = await self._rows(sql + " ORDER BY received_at DESC, seq DESC LIMIT %s", [*params, limit])
        return list(reversed(rows))


__all__ = ["PgShadowTables"]
