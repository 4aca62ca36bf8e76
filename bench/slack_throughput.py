#!/usr/bin/env python
"""Slack throughput: N events through the Slack emulator into a real `deskhand run`.

    .venv/bin/python bench/slack_throughput.py [--events 2000] [--users 1000] [--rate 0]
                                               [--planner rules|lookup]

The emulator (tests/slack_emulator.py) runs in this process; Deskhand runs as its own
process, exactly as deployed (`deskhand run`, Socket Mode, rules planner, demo shop, SQLite
on disk in a temp directory), with DESKHAND_SLACK_API_URL pointing at the emulator. Each
event is a DM from one of `--users` people (Bitext customer-support phrasings with demo
order IDs, greetings, thanks); every DM is its own thread.

Slack allows about one post per second per channel, and Deskhand paces itself to that
(a burst of 3). A benchmark that sent everything through a few channels would measure the
pacer, so events are spread over many DM channels, as a busy workspace's are: with the
defaults each person sends two messages.

`--planner rules` (the default) runs exactly `deskhand run`. Its intent classifier runs the
sentence encoder on every message (tens of ms of CPU), which then bounds the whole
process; `--planner lookup` runs the same `serve` wiring with a planner that only looks up
order IDs (any other message gets a greeting), to measure the Slack path itself: Socket
Mode, middleware, dedup, the turn's bookkeeping, the placeholder and the update.

`--rate 0` pushes every event at once (the throughput ceiling; latencies then include
queueing); `--rate R` pushes R events a second (latency at that load). Measured from
the emulator's side: events/s answered (first push to last answer), p50/p95/p99 from
envelope push to the chat.update that puts the (first) answer in place, push-to-ack times (Slack
wants acks within 3 s), the Deskhand process's CPU time during the run and its peak RSS. Fails if any event is not answered exactly once; a turn past its SLA that answers with what it knows and then follows up once (bot/deadline.py) counts as one answer, and the follow-ups are counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bot.brain.intents import load_examples  # noqa: E402
from bot.deadline import FOLLOW_UP  # noqa: E402
from slack_emulator import SlackEmulator, Workspace  # noqa: E402

TEAM = "T0BENCH001"
ORDERS = [f"A-{n}" for n in range(1001, 1121)]
PLACEHOLDER = "Looking into it…"


def texts(n: int, rng: random.Random) -> list[str]:
    examples = [text for text, _ in load_examples()]
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.85:
            out.append(re.sub(r"\b\d{6,}\b", rng.choice(ORDERS), rng.choice(examples)))
        elif roll < 0.95:
            out.append(f"where is order {rng.choice(ORDERS)}?")
        else:
            out.append(rng.choice(["hi", "hello", "thanks!", "thank you so much"]))
    return out


class LookupPlanner:
    """Order IDs are looked up, anything else is greeted: a planner that costs nothing."""

    name = "lookup"

    async def plan(self, context):
        from bot.brain.extract import extract
        from bot.contracts import BrainPlan, PlanStep

        order_id = extract(context.text).order_id
        if order_id:
            return BrainPlan(intent="track_order", confidence=1.0,
                             steps=[PlanStep(tool="get_order_status", args={"order_id": order_id})])
        return BrainPlan(intent="greeting", confidence=1.0)


async def serve_app() -> None:
    """The app process for `--planner lookup`: `deskhand run`'s wiring with LookupPlanner."""
    from bot.config import load_settings
    from bot.logs import configure_logging
    from bot.run import run_deskhand
    from bot.runtime import open_runtime
    from bot.slack.app import wait_for_shutdown

    settings = load_settings()
    configure_logging(settings.log_level, log_file=settings.home / "deskhand.log")
    async with open_runtime(settings, planner=LookupPlanner()) as rt, run_deskhand(rt):
        await wait_for_shutdown()


def pct(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1) if len(values) > 1 else values[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class Progress:
    """Incremental scan of the emulator's calls: which pushed messages have been answered."""

    def __init__(self, emu: SlackEmulator):
        self.emu, self.seen = emu, 0
        self.placeholders: dict[tuple[str, str], str] = {}  # (channel, placeholder ts) -> message ts
        self.answered: dict[tuple[str, str], float] = {}  # (channel, message ts) -> time answered
        self.duplicates = 0
        # A turn past its SLA answers with what it knows and FOLLOW_UP, then once more when done
        # (bot/deadline.py): that second answer is the designed follow-up, not a duplicate.
        self.degraded: set[tuple[str, str]] = set()
        self.late_answers = 0

    def scan(self) -> int:
        calls = self.emu.calls
        for call in calls[self.seen:]:
            p = call.params
            if call.method == "chat.postMessage" and call.response.get("ok") and p["channel"].startswith("D"):
                if p.get("text") == PLACEHOLDER:
                    self.placeholders[(p["channel"], call.response["ts"])] = p["thread_ts"]
                else:  # an answer posted without a placeholder
                    self._answer((p["channel"], p["thread_ts"]), call.time, p.get("text", ""))
            elif call.method == "chat.update" and call.response.get("ok") and p["text"] != PLACEHOLDER:
                message = self.placeholders.get((p["channel"], p["ts"]))
                if message is not None:
                    self._answer((p["channel"], message), call.time, p.get("text", ""))
        self.seen = len(calls)
        return len(self.answered)

    def _answer(self, key: tuple[str, str], when: float, text: str) -> None:
        if key in self.degraded:
            self.degraded.discard(key)
            self.late_answers += 1
        elif key in self.answered:
            self.duplicates += 1
        else:
            self.answered[key] = when
            if FOLLOW_UP in text:
                self.degraded.add(key)


async def run(events: int, users: int, rate: float, seed: int, planner: str) -> dict:
    rng = random.Random(seed)
    workspace = Workspace(TEAM, name="Bench")
    workspace.add_channel("C0SUPPORT1", "support", ["U0LEAD0001"])
    home = Path(tempfile.mkdtemp(prefix="deskhand-bench-"))
    tenants = home / "tenants.yml"
    tenants.write_text(f"tenants:\n  {TEAM}:\n    support_channel: C0SUPPORT1\n    approvers: [U0LEAD0001]\n")
    async with SlackEmulator([workspace]) as emu:
        env = {**os.environ, "SLACK_BOT_TOKEN": workspace.bot_token, "SLACK_APP_TOKEN": workspace.app_token,
               "DESKHAND_SLACK_API_URL": emu.api_url, "DESKHAND_HOME": str(home / "home"),
               "DESKHAND_TENANTS_FILE": str(tenants), "DESKHAND_LOG_LEVEL": "INFO"}
        if planner == "rules":
            command = [str(Path(sys.executable).with_name("deskhand")), "run"]
        else:
            command = [sys.executable, str(Path(__file__).resolve()), "--serve-app"]
        proc = await asyncio.create_subprocess_exec(*command, env=env, cwd=str(home),
                                                    stdout=asyncio.subprocess.DEVNULL)
        try:
            await emu.wait_for(lambda e: e.connection_count == 1, timeout=60)
            people = [f"U0B{i:07d}" for i in range(users)]
            built = [emu.dm(TEAM, people[i % users], text) for i, text in enumerate(texts(events, rng))]
            pushed: dict[tuple[str, str], float] = {}
            envelope_ids = []
            progress = Progress(emu)
            pushed_at: dict[str, float] = {}
            cpu_before, emulator_cpu_before = cpu_seconds(proc.pid), time.process_time()
            started = time.monotonic()
            for i, event in enumerate(built):
                if rate > 0 and (ahead := started + i / rate - time.monotonic()) > 0:
                    await asyncio.sleep(ahead)  # pacing the load generator, not synchronising
                pushed[(event["channel"], event["ts"])] = now = time.monotonic()
                envelope_ids.append(await emu.push_event(TEAM, event))
                pushed_at[envelope_ids[-1]] = now
            await emu.wait_for(lambda e: progress.scan() >= events, timeout=max(120, events / 10))
            finished = max(progress.answered.values())
            app_cpu = cpu_seconds(proc.pid) - cpu_before
            emulator_cpu = time.process_time() - emulator_cpu_before
            acked = set(emu.acks)
            rss = peak_rss_mb(proc.pid)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), timeout=60)
            shutil.rmtree(home, ignore_errors=True)
    latencies = [(progress.answered[k] - t) * 1000 for k, t in pushed.items() if k in progress.answered]
    ack_ms = [(emu.ack_times[e] - pushed_at[e]) * 1000 for e in envelope_ids if e in emu.ack_times]
    lost = events - len(latencies)
    result = {
        "planner": planner, "events": events, "users": users, "push_rate": rate or "burst",
        "elapsed_s": round(finished - started, 2),
        "events_per_s": round(events / (finished - started), 1),
        "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "p99_ms": pct(latencies, 99),
        "max_ms": round(max(latencies), 1),
        "ack_p50_ms": pct(ack_ms, 50), "ack_p95_ms": pct(ack_ms, 95), "ack_max_ms": round(max(ack_ms), 1),
        "acked": sum(1 for e in envelope_ids if e in acked), "lost": lost, "duplicates": progress.duplicates,
        "degraded_then_followed_up": progress.late_answers,
        "app_cpu_s": round(app_cpu, 2), "app_cpu_ms_per_event": round(app_cpu / events * 1000, 2),
        "emulator_cpu_s": round(emulator_cpu, 2), "peak_rss_mb": rss, "exit_code": code,
    }
    assert lost == 0 and progress.duplicates == 0, result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1000, help="distinct people, each in their own DM")
    parser.add_argument("--rate", type=float, default=0.0, help="events pushed per second; 0 = all at once")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--planner", choices=["rules", "lookup"], default="rules")
    parser.add_argument("--serve-app", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_app:
        asyncio.run(serve_app())
        return
    result = asyncio.run(run(args.events, args.users, args.rate, args.seed, args.planner))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
