"""Feedback that teaches: what `deskhand report` says about 👍/👎.

- rates by intent: each person's latest vote on an answer counts once (a changed mind is
  not two votes); the intent is the one the answered turn was planned with;
- the reasons ticked in the 👎 modal (bot/slack/feedback_modal.py), counted;
- the latest 👎 conversations: when, tenant, the question, the answer, the reasons and
  comment, and the correlation id to open with `deskhand trace`.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

LATEST_DOWNVOTES = 10
EXCERPT = 160


def _json(value: str | None, default: Any) -> Any:
    try:
        return json.loads(value) if value else default
    except ValueError:
        return default


def _excerpt(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


async def build_feedback_report(store, *, tenant: str | None = None, since: datetime | None = None,
                          latest: int = LATEST_DOWNVOTES) -> dict:
    """The feedback section of the report, from the store (either backend)."""
    rows = await store.report_feedback_rows(tenant, since)

    votes: dict[tuple[str, str], dict] = {}  # (answer, person) -> their latest vote
    for fid, tenant_id, inbox_id, user, value, ts, reasons, comment, envelope, outcome, cid in rows:
        turn = _json(outcome, {})
        votes[(inbox_id, user)] = {
            "id": fid, "tenant": tenant_id, "inbox_id": inbox_id, "value": value, "ts": ts,
            "reasons": _json(reasons, []), "comment": comment or "",
            "intent": (turn.get("plan") or {}).get("intent") or "unknown",
            "question": _json(envelope, {}).get("text", ""), "answer": turn.get("reply") or "",
            "correlation_id": cid or turn.get("correlation_id") or ""}

    by_intent: dict[str, Counter] = {}
    for vote in votes.values():
        by_intent.setdefault(vote["intent"], Counter())[vote["value"]] += 1
    downs = sorted((v for v in votes.values() if v["value"] == "down"), key=lambda v: v["id"], reverse=True)
    reasons = Counter(reason for v in downs for reason in v["reasons"])

    def rate(part: int, whole: int) -> float | None:
        return round(part / whole, 4) if whole else None

    ups = sum(c["up"] for c in by_intent.values())
    return {
        "votes": len(votes), "up": ups, "down": len(downs), "down_rate": rate(len(downs), len(votes)),
        "by_intent": {intent: {"votes": c["up"] + c["down"], "up": c["up"], "down": c["down"],
                               "up_rate": rate(c["up"], c["up"] + c["down"]),
                               "down_rate": rate(c["down"], c["up"] + c["down"])}
                      for intent, c in sorted(by_intent.items(), key=lambda kv: (-kv[1]["down"], kv[0]))},
        "reasons": dict(reasons.most_common()),
        "latest_down": [{k: v[k] for k in ("ts", "tenant", "intent", "question", "answer", "reasons", "comment",
                                           "correlation_id", "inbox_id")} for v in downs[:latest]],
    }


def render_feedback_lines(rep: dict, table) -> list[str]:
    """The feedback section as text lines; `table` is the report's table renderer."""
    lines = ["", f"Feedback: {rep['votes']} answers rated, 👍 {rep['up']}  👎 {rep['down']} "
                 f"(👎 rate {'-' if rep['down_rate'] is None else rep['down_rate']})"]
    lines += table(["intent", "votes", "up", "down", "up rate", "down rate"],
                   [[k, v["votes"], v["up"], v["down"], v["up_rate"], v["down_rate"]]
                    for k, v in rep["by_intent"].items()])
    lines += ["", "What went wrong (👎 reasons):"] + table(["reason", "count"],
                                                          [[k, v] for k, v in rep["reasons"].items()])
    lines += ["", f"Latest 👎 ({len(rep['latest_down'])}):"]
    if not rep["latest_down"]:
        lines.append("  (none)")
    for d in rep["latest_down"]:
        lines += [f"  {d['ts'][:19]}  {d['tenant']}  {d['intent']}  trace: deskhand trace {d['correlation_id']}",
                  f"    asked:   {_excerpt(d['question'])}",
                  f"    answer:  {_excerpt(d['answer'])}",
                  f"    reasons: {', '.join(d['reasons']) or '-'}"
                  + (f"   comment: {_excerpt(d['comment'])}" if d["comment"] else "")]
    return lines
