"""Deskhand's Prometheus metrics, on a `CollectorRegistry` owned by the runtime.

    metrics = DeskhandMetrics(db_path, breakers)   # built by `open_runtime`
    metrics.turn_finished(turn)                    # the orchestrator, once per turn
    metrics.tool_finished(result)                  # the executor, once per hand call
    body = await metrics.render()                  # `GET /metrics` (bot/ops_http.py)

Counters and histograms are updated where things happen. Gauges that are facts about the
store (outbox depth, pending approvals) or the breakers are read when Prometheus scrapes,
so they are never out of date and nothing has to remember to update them. The store is read
on a worker thread through its own read-only connection (`bot.store.probes.store_gauges`):
the loop never waits on disk, and the store's own connection stays on the store's thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.hands.breaker import CLOSED, HALF_OPEN, OPEN, BreakerBoard
from bot.store.probes import store_gauges

# Seconds. A turn waits on the shop, the store and sometimes a model; an ack should be fast.
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0)  # Slack retries after 3 s
BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)


class BreakerCollector(Collector):
    """`deskhand_breaker_state{tool, tenant, state}`: 1 for each breaker's current state."""

    def __init__(self, board: BreakerBoard):
        self.board = board

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("deskhand_breaker_state", "Circuit breaker state per tool and tenant "
                                   "(1 for the current state).", labels=["tool", "tenant", "state"])
        for (tool, tenant), current in sorted(self.board.states().items()):
            for state in BREAKER_STATES:
                family.add_metric([tool, tenant, state], 1.0 if state == current else 0.0)
        yield family


class StoreCollector(Collector):
    """Gauges from the last `store_gauges` read (refreshed by `DeskhandMetrics.render`)."""

    def __init__(self) -> None:
        self.figures: dict[str, list[tuple]] = {"outbox": [], "pending": [], "dead": []}

    def collect(self) -> Iterator[Metric]:
        outbox = GaugeMetricFamily("deskhand_outbox_depth", "Deliveries waiting in the outbox "
                                   "(pending: will be retried; failed: given up, in `deskhand dlq list`).",
                                   labels=["channel", "status"])
        for channel, status, count in self.figures["outbox"]:
            outbox.add_metric([channel, status], count)
        pending = GaugeMetricFamily("deskhand_pending_approvals", "Actions waiting for an approver.",
                                    labels=["tenant"])
        for tenant, count in self.figures["pending"]:
            pending.add_metric([tenant], count)
        dead = GaugeMetricFamily("deskhand_dead_letters", "Messages parked after too many unfinished turns "
                                 "(`deskhand dlq list`).", labels=["tenant"])
        for tenant, count in self.figures["dead"]:
            dead.add_metric([tenant], count)
        yield outbox
        yield pending
        yield dead


class DeskhandMetrics:
    def __init__(self, db_path: Path | str, breakers: BreakerBoard):
        self.db_path = db_path  # the SQLite file, or a PostgreSQL URL (bot/store/factory.py store_location)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns = Counter("deskhand_turns", "Turns finished, by end state, intent, channel and tenant.",
                             ["state", "intent", "channel", "tenant"], registry=r)
        self.turn_seconds = Histogram("deskhand_turn_seconds", "Time a turn takes, from start to reply "
                                      "delivered.", ["channel"], buckets=TURN_BUCKETS, registry=r)
        self.tool_seconds = Histogram("deskhand_tool_seconds", "Time of one hand call, by tool and outcome.",
                                      ["tool", "ok"], buckets=TOOL_BUCKETS, registry=r)
        self.ack_seconds = Histogram("deskhand_slack_ack_seconds", "Time from a Socket Mode request reaching "
                                     "Deskhand to its ack being sent.", ["type"], buckets=ACK_BUCKETS, registry=r)
        self.degraded = Counter("deskhand_turns_degraded", "Turns past their SLA that sent a degrade reply "
                                "(bot/deadline.py), by channel and tenant.", ["channel", "tenant"], registry=r)
        self.llm_calls = Counter("deskhand_llm_calls", "HTTP calls to a model, by model and outcome.",
                                 ["model", "ok"], registry=r)
        self.llm_tokens = Counter("deskhand_llm_tokens", "Model tokens, by model and direction (in, out).",
                                  ["model", "direction"], registry=r)
        self.llm_cost = Counter("deskhand_llm_cost_usd", "Model cost in USD (DESKHAND_LLM_PRICES).",
                                ["model"], registry=r)
        self._store = StoreCollector()
        r.register(BreakerCollector(breakers))
        r.register(self._store)

    # -- hooks ---------------------------------------------------------------------------
    def turn_finished(self, turn: Any) -> None:
        """One finished turn (bot/orchestrator.py `Turn`), with the model calls it made."""
        env = turn.envelope
        intent = turn.plan.intent if turn.plan is not None else "none"
        self.turns.labels(str(turn.state), intent, env.channel.value, env.tenant_id).inc()
        self.turn_seconds.labels(env.channel.value).observe(time.perf_counter() - turn.started)
        for span in turn.spans:
            if span[2] == "llm_call":
                self.llm_call(span[4])
            elif span[2] == "DEGRADE":
                self.degraded.labels(env.channel.value, env.tenant_id).inc()

    def llm_call(self, call: dict) -> None:
        model = str(call.get("model") or "unknown")
        self.llm_calls.labels(model, str(bool(call.get("ok"))).lower()).inc()
        self.llm_tokens.labels(model, "in").inc(max(0, int(call.get("tokens_in") or 0)))
        self.llm_tokens.labels(model, "out").inc(max(0, int(call.get("tokens_out") or 0)))
        self.llm_cost.labels(model).inc(max(0.0, float(call.get("cost_usd") or 0.0)))

    def tool_finished(self, result: Any) -> None:
        """One hand call's `ToolResult` (its `cost_ms` is the call's duration)."""
        self.tool_seconds.labels(result.tool, str(result.ok).lower()).observe((result.cost_ms or 0.0) / 1000)

    def ack_sent(self, request_type: str, seconds: float) -> None:
        self.ack_seconds.labels(request_type or "unknown").observe(seconds)

    # -- scrape --------------------------------------------------------------------------
    async def render(self) -> bytes:
        """The registry in Prometheus text format, store gauges read just now."""
        self._store.figures = await asyncio.to_thread(store_gauges, self.db_path)
        return generate_latest(self.registry)
