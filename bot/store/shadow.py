"""The store's shadow table: what a shadow turn would have done and said (bot/shadow.py).

A mixin of `Store` (bot/store/sqlite.py), using its connection (`self.db`) and `_row`. The would-be
actions are read back from the turn's own `tool_calls` rows (the executor records every call,
shadow or not), so the failure ticket of a failed or dead-lettered turn is listed too.
"""

from __future__ import annotations

import json
from typing import Any

from bot.store.rows import dumps, loads, now_iso


class ShadowTables:
    db: Any  # Store's connection; `_row` is Store's too

    def shadow_record(self, *, inbox_id: str, tenant_id: str, session_id: str, channel: str,
                      correlation_id: str, text: str, intent: str | None, plan: dict | None,
                      reply: str | None, state: str, error: str | None = None) -> dict:
        """Record a shadow turn once; return the row this message holds (the first record)."""
        actions, reads = self._shadow_calls(correlation_id)
        self.db.execute(
            "INSERT OR IGNORE INTO shadow_runs (inbox_id, tenant_id, session_id, channel, correlation_id, ts,"
            " text, intent, plan, actions, reads, reply, state, error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [inbox_id, tenant_id, session_id, channel, correlation_id, now_iso(), text, intent,
             dumps(plan) if plan is not None else None, dumps(actions), dumps(reads), reply, state, error])
        return self._row("SELECT * FROM shadow_runs WHERE inbox_id = ?", [inbox_id])

    def _shadow_calls(self, correlation_id: str) -> tuple[list[dict], list[dict]]:
        actions, reads = [], []
        for tool, args, ok, result, error_kind in self.db.execute(
                "SELECT tool, args, ok, result, error_kind FROM tool_calls WHERE correlation_id = ? ORDER BY id",
                [correlation_id]).fetchall():
            data = loads(result, {}) or {}
            if isinstance(data, dict) and data.get("shadow"):
                actions.append({"tool": tool, "would": data.get("would", "run"),
                                "args": data.get("args", loads(args, {}))})
            else:
                reads.append({"tool": tool, "ok": bool(ok), "error_kind": error_kind})
        return actions, reads

    def shadow_runs(self, *, tenant_id: str | None = None, since: str | None = None) -> list[dict]:
        """Shadow turns, oldest first, optionally of one tenant and from an ISO time on."""
        sql, params = "SELECT * FROM shadow_runs WHERE 1 = 1", []
        if tenant_id:
            sql += " AND tenant_id = ?"
            params.append(tenant_id)
        if since:
            sql += " AND ts >= ?"
            params.append(since)
        sql += " ORDER BY ts, rowid"
        cur = self.db.execute(sql, params)
        names = [c[0] for c in cur.description]
        rows = []
        for raw in cur.fetchall():
            row = dict(zip(names, raw))
            for column in ("plan", "actions", "reads"):
                row[column] = json.loads(row[column]) if row[column] else None
            rows.append(row)
        return rows
