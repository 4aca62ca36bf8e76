#!/usr/bin/env python
"""Timing of the degrade path (bot/deadline.py): a turn past its SLA, then its late answer.

    .venv/bin/python bench/degrade.py [--turns 20] [--sla 0.5] [--backend-s 1.5]

The real runtime (rules planner, SQLite on disk, the Hands) against a real HTTP shop
(tests/shop_server.py) whose order lookup answers after `--backend-s` seconds, with the
tenant's `turn_sla_s` set to `--sla`. Per turn it measures, on the surface that delivers:

- degrade_overshoot_ms: from the SLA passing to the degrade reply handed to the surface
  (composing what is known, storing it, delivering it);
- late_after_backend_ms: from the shop sending the order to the late answer handed to the
  surface (the rest of the turn: draft, guard, store, follow-up).

Prints one JSON object with p50/p95/max of each. The ticket is opened after the degrade
reply, so it is not in the first figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import load_settings  # noqa: E402
from bot.contracts import Channel, MessageEnvelope  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402
from bot.surfaces import Surfaces  # noqa: E402
from tests.shop_server import ShopServer  # noqa: E402


class TimingResponder:
    def __init__(self):
        self.replied: dict[str, float] = {}
        self.followed_up: dict[str, float] = {}

    async def deliver(self, envelope, outcome) -> None:
        self.replied[envelope.id] = time.perf_counter()

    async def follow_up(self, envelope, outcome) -> None:
        self.followed_up[envelope.id] = time.perf_counter()

    async def notify(self, session, text, **info) -> None:
        pass


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1), "max": round(ordered[-1], 1)}


async def main(turns: int, sla: float, backend_s: float) -> dict:
    configure_logging("WARNING")
    shop = await ShopServer().start()
    shop.script("order", backend_s)
    home = Path(tempfile.mkdtemp(prefix="deskhand-degrade-"))
    tenants = home / "tenants.yml"
    tenants.write_text(json.dumps({"tenants": {"T_HTTP": {
        "turn_sla_s": sla, "backend": {"base_url": shop.url, "timeout_s": backend_s * 4}}}}))
    settings = load_settings(home=home / "home", tenants_file=tenants, tool_timeout_s=backend_s * 4,
                             rate_per_second=1000)
    overshoot, late = [], []
    try:
        async with open_runtime(settings) as rt:
            surface = TimingResponder()
            async with rt.orchestrator.delivering_to(Surfaces(cli=surface)):
                for n in range(turns):
                    env = MessageEnvelope(id=f"bench-{n}", tenant_id="T_HTTP", channel=Channel("cli"),
                                          session_id=f"cli:bench-{n}", user_id="U1", text="where is my order A-2001?")
                    await rt.store.inbox_add(env)
                    started = time.perf_counter()
                    rt.executor._cache.clear()  # every turn asks the slow shop, not the Hands' read cache
                    await rt.orchestrator.process(env.id)
                    # The SLA counts from the turn's start, a hair after `started`: a slight overstatement.
                    overshoot.append((surface.replied[env.id] - started - sla) * 1000)
                    late.append((surface.followed_up[env.id] - shop.answered_at[-1]) * 1000)
    finally:
        await shop.stop()
    return {"turns": turns, "sla_s": sla, "backend_s": backend_s,
            "degrade_overshoot_ms": summary(overshoot), "late_after_backend_ms": summary(late)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--sla", type=float, default=0.5)
    parser.add_argument("--backend-s", type=float, default=1.5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.turns, args.sla, args.backend_s)), indent=2))
