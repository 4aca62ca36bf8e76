#!/usr/bin/env python
"""Latency of a full offline turn: ROUTE → PLAN → TOOL_LOOP → DRAFT → GUARD → RESPOND.

    .venv/bin/python bench/turn_latency.py [--messages 1000] [--home DIR]

Rules planner, demo shop, SQLite on disk (a fresh temp directory unless --home), the
demo knowledge base when available. 1,000 varied messages: Bitext utterances of every intent
with demo order IDs swapped in, everyday phrasings, follow-ups to clarifying questions,
out-of-scope questions and greetings. Prints one JSON object with p50/p95/p99 and the
share of each state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.brain.intents import load_examples  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.contracts import Channel, MessageEnvelope  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402

ORDERS = ["A-1001", "A-1017", "A-1042", "A-1055", "A-1063", "A-1077", "A-1088", "A-1093", "A-1101", "A-1120"]


def messages(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """(session suffix, text) pairs; some sessions get a follow-up turn."""
    examples = load_examples()
    oos_file = ROOT / "tests/data/intents/clinc150_oos_dev.jsonl"
    oos = [json.loads(line)["text"] for line in oos_file.read_text().splitlines()]
    out: list[tuple[str, str]] = []
    while len(out) < n:
        roll = rng.random()
        session = f"s{len(out)}"
        if roll < 0.75:
            text = re.sub(r"\b\d{6,}\b", rng.choice(ORDERS), rng.choice(examples)[0])
        elif roll < 0.85:
            text = rng.choice(oos)
        elif roll < 0.9:
            text = rng.choice(["hi", "hello", "thanks!", "thank you so much"])
        else:
            out.append((session, "where is my order?"))
            text = rng.choice(ORDERS)
        out.append((session, text))
    return out[:n]


async def run(n: int, home: Path) -> dict:
    settings = load_settings(home=home, rate_per_second=100_000)
    rng = random.Random(11)
    async with open_runtime(settings) as rt:
        await rt.ensure_kb(settings.default_tenant)
        kb_on = rt.kb is not None and rt.kb.is_available(settings.default_tenant)
        # Warm-up: first-use costs (imports, caches) are not a turn's latency.
        for text in ("hello", "where is order A-1042?", "what is your refund policy"):
            await rt.orchestrator.handle(MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U_W",
                                                         session_id="warm", text=text))
        latencies, states = [], Counter()
        started = time.perf_counter()
        for i, (session, text) in enumerate(messages(n, rng)):
            env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id=f"U{i % 50}",
                                  session_id=f"bench:{session}", text=text)
            t0 = time.perf_counter()
            outcome = await rt.orchestrator.handle(env)
            latencies.append((time.perf_counter() - t0) * 1000)
            states[outcome.state] += 1
        wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {"messages": n, "kb": kb_on, "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2),
            "p99_ms": round(q[98], 2), "mean_ms": round(statistics.fmean(latencies), 2),
            "turns_per_s": round(n / wall, 1), "states": dict(states)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(run(args.messages, args.home or Path(tmp)))))


if __name__ == "__main__":
    main()
