"""The store's user-group table: the members Slack last returned for a group (bot/hands/gate.py).

A mixin of `Store` (sqlite.py), using its connection (`self.db`). One row per tenant and
group, replaced by each answer Slack gives, so a surface without Slack (the CLI) can still tell
a user-group approver from anyone else.
"""

from __future__ import annotations

import json
from typing import Any

from bot.store.rows import now_iso


class MembershipTables:
    db: Any  # Store's connection

    def usergroup_members_save(self, tenant_id: str, usergroup: str, members: list[str]) -> None:
        """Keep what Slack just said the group's members are, replacing the last answer."""
        self.db.execute(
            "INSERT INTO usergroup_members (tenant_id, usergroup, members, fetched_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (tenant_id, usergroup) DO UPDATE SET members = excluded.members,"
            " fetched_at = excluded.fetched_at",
            [tenant_id, usergroup, json.dumps(sorted(members)), now_iso()])

    def usergroup_members(self, tenant_id: str, usergroup: str) -> set[str] | None:
        """The members Slack last returned for this group, or None if it was never asked."""
        row = self.db.execute("SELECT members FROM usergroup_members WHERE tenant_id = ? AND usergroup = ?",
                              [tenant_id, usergroup]).fetchone()
        return None if row is None else set(json.loads(row[0]))
