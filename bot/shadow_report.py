"""`deskhand report --shadow`: what Deskhand would have done and said in shadow mode.

One entry per shadow turn (the `shadow_runs` table, bot/shadow.py): when, tenant, channel,
the customer's message as stored (masked), the intent, the would-be writes (tool and args)
and the would-be reply. A team reads a week of these before switching a surface on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone


async def build_shadow_report(store, *, tenant: str | None = None, since: datetime | None = None) -> dict:
    """The shadow turns as a dict, from the store (either backend), oldest first."""
    runs = await store.shadow_runs(tenant_id=tenant, since=since.astimezone(timezone.utc).isoformat() if since else None)
    return {
        "filters": {"tenant": tenant, "since": since.isoformat() if since else None},
        "count": len(runs),
        "runs": [{
            "ts": r["ts"], "tenant": r["tenant_id"], "channel": r["channel"], "inbox_id": r["inbox_id"],
            "session_id": r["session_id"], "message": r["text"], "intent": r["intent"], "state": r["state"],
            "actions": r["actions"] or [], "reads": r["reads"] or [], "reply": r["reply"], "error": r["error"],
        } for r in runs],
    }


def _args(args: dict) -> str:
    return json.dumps(args, sort_keys=True, ensure_ascii=False, default=str)


def render_shadow_text(rep: dict) -> str:
    scope = ", ".join(f"{k}={v}" for k, v in rep["filters"].items() if v) or "all tenants, all time"
    lines = [f"Deskhand shadow turns ({scope}): {rep['count']}"]
    for run in rep["runs"]:
        when = run["ts"][:19].replace("T", " ")
        lines += ["", f"{when}  {run['tenant']}  {run['channel']}  {run['inbox_id']}",
                  f"  message: {run['message']}",
                  f"  intent:  {run['intent'] or '-'}  (would end {run['state']})"]
        for action in run["actions"] or [{}]:
            would = f"{action['would']} {action['tool']} {_args(action['args'])}" if action else "no writes"
            lines.append(f"  would:   {would}")
        reply = run["reply"] if run["reply"] is not None else "(silent)"
        lines.append(f"  reply:   {reply}")
        if run["error"]:
            lines.append(f"  error:   {run['error']}")
    return "\n".join(lines)
