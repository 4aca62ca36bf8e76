"""`deskhand report`: how the bot is doing, read from what it already records.

- latency: a turn's latency is the sum of its state spans (ROUTE … RESPOND) in `traces`;
- intents and planners: the PLAN span of each turn;
- tool success: the `tool_calls` table;
- handoffs: the outcome stored on each `inbox` row (HANDED_OFF, or a human offered);
- model tokens and cost: the `llm_call` spans, grouped by tenant, intent and channel;
- feedback: 👍/👎 rates by intent, the 👎 reasons and the latest 👎 (bot/feedback.py).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer

from bot.abuse_turn import build_abuse_report, render_abuse_lines
from bot.feedback import build_feedback_report, render_feedback_lines

TURN_SPANS = ("ROUTE", "PLAN", "TOOL_LOOP", "DRAFT", "GUARD", "RESPOND")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _ms(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


async def build_report(store, *, tenant: str | None = None, since: datetime | None = None) -> dict:
    """The report as a dict, from the store (an `AsyncStore` or a `PgStore`: its rows come from
    the `report_…` methods, bot/store/reports.py)."""
    channel_of = await store.report_turn_channels()

    turns: dict[str, dict] = {}
    llm_calls: list[dict] = []
    for cid, tenant_id, span, data, duration in await store.report_trace_rows(tenant, since):
        payload = json.loads(data) if data else {}
        if span == "llm_call":
            llm_calls.append({"cid": cid, "tenant": tenant_id, **payload, "latency_ms": duration})
            continue
        if span not in TURN_SPANS:
            continue
        turn = turns.setdefault(cid, {"tenant": tenant_id, "ms": 0.0, "intent": None, "planner": None,
                                      "channel": channel_of.get(cid, "unknown")})
        turn["ms"] += duration or 0.0
        if span == "PLAN" and payload.get("intent"):
            turn.update(intent=payload["intent"], planner=payload.get("planner"))

    latencies = [t["ms"] for t in turns.values()]
    by_channel: dict[str, list[float]] = defaultdict(list)
    for t in turns.values():
        by_channel[t["channel"]].append(t["ms"])

    tools: dict[str, dict] = {}
    for tool, ok, cost_ms in await store.report_tool_call_rows(tenant, since):
        entry = tools.setdefault(tool, {"calls": 0, "ok": 0, "ms": []})
        entry["calls"] += 1
        entry["ok"] += int(bool(ok))
        entry["ms"].append(cost_ms or 0.0)

    answered = handed_off = offered = failed = 0
    for outcome in await store.report_inbox_outcomes(tenant, since):
        data = json.loads(outcome)
        answered += 1
        handed_off += data.get("state") == "HANDED_OFF"
        failed += data.get("state") == "FAILED"
        offered += bool(data.get("offer_human")) and data.get("state") != "HANDED_OFF"

    cost_groups: dict[str, dict[tuple, dict]] = {"tenant": {}, "intent": {}, "channel": {}, "model": {}}
    for call in llm_calls:
        turn = turns.get(call["cid"], {})
        keys = {"tenant": call["tenant"], "intent": turn.get("intent") or "unknown",
                "channel": call.get("channel") or channel_of.get(call["cid"], "unknown"),
                "model": call.get("model") or "unknown"}
        for group, key in keys.items():
            g = cost_groups[group].setdefault(key, {"calls": 0, "failed": 0, "tokens_in": 0,
                                                    "tokens_out": 0, "cost_usd": 0.0, "ms": []})
            g["calls"] += 1
            g["failed"] += not call.get("ok", True)
            g["tokens_in"] += int(call.get("tokens_in") or 0)
            g["tokens_out"] += int(call.get("tokens_out") or 0)
            g["cost_usd"] += float(call.get("cost_usd") or 0.0)
            g["ms"].append(call.get("latency_ms") or 0.0)

    def finish(groups: dict) -> list[dict]:
        rows = []
        for key, g in sorted(groups.items(), key=lambda kv: (-kv[1]["cost_usd"], str(kv[0]))):
            rows.append({"key": key, "calls": g["calls"], "failed": g["failed"], "tokens_in": g["tokens_in"],
                         "tokens_out": g["tokens_out"], "cost_usd": round(g["cost_usd"], 6),
                         "p50_ms": _ms(percentile(g["ms"], 50)), "p95_ms": _ms(percentile(g["ms"], 95))})
        return rows

    return {
        "filters": {"tenant": tenant, "since": since.isoformat() if since else None},
        "turns": len(turns),
        "latency_ms": {"p50": _ms(percentile(latencies, 50)), "p95": _ms(percentile(latencies, 95)),
                       "by_channel": {ch: {"turns": len(v), "p50": _ms(percentile(v, 50)),
                                           "p95": _ms(percentile(v, 95))} for ch, v in sorted(by_channel.items())}},
        "intents": dict(Counter(t["intent"] or "unknown" for t in turns.values()).most_common()),
        "planners": dict(Counter(t["planner"] or "unknown" for t in turns.values()).most_common()),
        "tools": {name: {"calls": e["calls"], "ok": e["ok"], "success_rate": _rate(e["ok"], e["calls"]),
                         "p95_ms": _ms(percentile(e["ms"], 95))} for name, e in sorted(tools.items())},
        "outcomes": {"answered": answered, "handed_off": handed_off, "handoff_rate": _rate(handed_off, answered),
                     "human_offered": offered, "human_offered_rate": _rate(offered, answered),
                     "failed": failed},
        "feedback": await build_feedback_report(store, tenant=tenant, since=since),
        "abuse": await build_abuse_report(store, tenant=tenant, since=since),
        "llm": {
            "calls": len(llm_calls),
            "tokens_in": sum(int(c.get("tokens_in") or 0) for c in llm_calls),
            "tokens_out": sum(int(c.get("tokens_out") or 0) for c in llm_calls),
            "cost_usd": round(sum(float(c.get("cost_usd") or 0.0) for c in llm_calls), 6),
            **{f"by_{group}": finish(groups) for group, groups in cost_groups.items()},
        },
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value < 1 else f"{value:.2f}"
    return str(value)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(r: list[str]) -> str:
        return "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return [line(headers), *(line(r) for r in cells)] if cells else [line(headers), "  (none)"]


def render_text(rep: dict) -> str:
    lat, out, llm = rep["latency_ms"], rep["outcomes"], rep["llm"]
    scope = ", ".join(f"{k}={v}" for k, v in rep["filters"].items() if v) or "all tenants, all time"
    lines = [f"Deskhand report ({scope})", "",
             f"Turns: {rep['turns']}   latency p50 {_fmt(lat['p50'])} ms   p95 {_fmt(lat['p95'])} ms"]
    lines += _table(["channel", "turns", "p50 ms", "p95 ms"],
                    [[ch, v["turns"], v["p50"], v["p95"]] for ch, v in lat["by_channel"].items()])
    lines += ["", f"Handoffs: {out['handed_off']} of {out['answered']} answered "
              f"(rate {_fmt(out['handoff_rate'])}); human offered {out['human_offered']}; failed {out['failed']}"]
    lines += ["", "Intents:"] + _table(["intent", "turns"], [[k, v] for k, v in rep["intents"].items()])
    lines += ["", "Planners:"] + _table(["planner", "turns"], [[k, v] for k, v in rep["planners"].items()])
    lines += ["", "Tools:"] + _table(["tool", "calls", "ok", "success", "p95 ms"], [
        [k, v["calls"], v["ok"], v["success_rate"], v["p95_ms"]] for k, v in rep["tools"].items()])
    lines += ["", f"Model calls: {llm['calls']}   tokens in {llm['tokens_in']}   out {llm['tokens_out']}   "
              f"cost ${llm['cost_usd']:.6f}"]
    for group in ("tenant", "intent", "channel", "model"):
        lines += ["", f"Model tokens and cost by {group}:"] + _table(
            [group, "calls", "failed", "tokens in", "tokens out", "cost usd", "p50 ms", "p95 ms"],
            [[r["key"], r["calls"], r["failed"], r["tokens_in"], r["tokens_out"], r["cost_usd"], r["p50_ms"],
              r["p95_ms"]] for r in llm[f"by_{group}"]])
    if "abuse" in rep:
        lines += render_abuse_lines(rep["abuse"], _table)
    if "feedback" in rep:
        lines += render_feedback_lines(rep["feedback"], _table)
    return "\n".join(lines)


def report(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant (Slack team_id)."),
    since_hours: Optional[float] = typer.Option(None, "--since-hours", help="Only the last N hours."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    shadow: bool = typer.Option(False, "--shadow", help="List shadow turns: message, intent, would-be "
                                "actions and reply."),
    db: Optional[Path] = typer.Option(None, "--db", help="The SQLite file; default from config."),
) -> None:
    """Show latency, intents, tool success, handoffs, model tokens and cost, and feedback.

    Latency is p50/p95 per turn; model tokens and cost are broken down by tenant, intent,
    channel and model; feedback is 👍/👎 by intent, the 👎 reasons, and the latest 👎 with
    the question, the answer and the correlation id for `deskhand trace`. Reads the traces,
    inbox, tool_calls and feedback tables.

    With --shadow, lists what Deskhand would have done and said in shadow mode instead.

    Example:  deskhand report --tenant T_DEMO --since-hours 24
    Example:  deskhand report --shadow --since-hours 168
    """
    from bot.config import load_settings
    from bot.store.factory import open_store

    since = datetime.now(timezone.utc) - timedelta(hours=since_hours) if since_hours else None
    # The configured store (PostgreSQL when DESKHAND_DATABASE_URL is set); --db names a SQLite file.
    opened = open_store(load_settings()) if db is None else _sqlite_file(db)
    typer.echo(asyncio.run(_report_text(opened, tenant=tenant, since=since, as_json=as_json, shadow=shadow)))


@asynccontextmanager
async def _sqlite_file(path: Path) -> AsyncIterator:
    from bot.store import AsyncStore, Store

    store = AsyncStore(Store(path))
    try:
        yield store
    finally:
        store.close()


async def _report_text(opened, *, tenant: str | None, since: datetime | None, as_json: bool,
                       shadow: bool) -> str:
    """The report (or, with `shadow`, the shadow turns) as printed, from the store `opened` opens."""
    async with opened as store:
        if shadow:
            from bot.shadow_report import build_shadow_report, render_shadow_text

            rep = await build_shadow_report(store, tenant=tenant, since=since)
            return json.dumps(rep, indent=2, ensure_ascii=False) if as_json else render_shadow_text(rep)
        rep = await build_report(store, tenant=tenant, since=since)
    return json.dumps(rep, indent=2) if as_json else render_text(rep)
