"""The grounding guard on real replies: how many it replaces, and what it costs per reply.

Runs every user turn of the golden conversations and every KB question through the real
runtime (offline drafter, demo shop, demo KB) in a throwaway home, records each draft and
its tool results as the guard saw them, and reports the drafts the guard replaced (each a
reply whose fact no source states) and the guard's time per reply.

    .venv/bin/python bench/grounding.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import orchestrator  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.contracts import Channel, MessageEnvelope  # noqa: E402
from bot.guards import facts_in, guard_reply  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402

seen: list[tuple] = []


def recording_guard(draft, results):
    guarded, missing = guard_reply(draft, results)
    seen.append((draft, list(results), missing))
    return guarded, missing


def conversations() -> list[tuple[str, list[str], dict]]:
    convs = []
    for path in sorted((ROOT / "fixtures/golden").glob("*.yml")):
        for conv in yaml.safe_load(path.read_text()) or []:
            users = [t["user"] for t in conv["turns"] if "user" in t]
            meta = {"verified_email": conv["email"]} if conv.get("email") else {}
            convs.append((conv.get("user", "U_EVAL"), users, meta))
    questions = ROOT / "fixtures/kb_questions.yml"
    if questions.exists():
        convs += [("U_EVAL", [q["question"]], {}) for q in yaml.safe_load(questions.read_text())]
    return convs


async def main() -> None:
    orchestrator.guard_reply = recording_guard  # the orchestrator's own reference
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(home=Path(home))
        async with open_runtime(settings) as rt:
            await rt.ensure_kb(settings.default_tenant)
            for user, turns, meta in conversations():
                session = f"bench:{uuid.uuid4().hex[:8]}"
                for text in turns:
                    await rt.orchestrator.handle(MessageEnvelope(
                        tenant_id=settings.default_tenant, channel=Channel.cli, user_id=user,
                        session_id=session, text=text, metadata=meta))
    replaced = [(d.text, m) for d, _, m in seen if m]
    passes = []
    for _ in range(20):
        start = time.perf_counter()
        for draft, results, _ in seen:
            guard_reply(draft, results)
        passes.append((time.perf_counter() - start) / len(seen) * 1e6)
    longest = max(seen, key=lambda s: len(s[0].text))
    start = time.perf_counter()
    for _ in range(100):
        guard_reply(longest[0], longest[1])
    longest_us = (time.perf_counter() - start) / 100 * 1e6
    print(f"replies guarded: {len(seen)}; with a fact: {sum(1 for d, _, _ in seen if facts_in(d.text))}; "
          f"replaced as ungrounded: {len(replaced)}")
    for text, missing in replaced:
        print(f"  {sorted(missing)}: {text[:160]!r}")
    print(f"guard time per reply: median {statistics.median(passes):.0f} µs, best pass {min(passes):.0f} µs; "
          f"longest reply ({len(longest[0].text)} chars) {longest_us:.0f} µs")

if __name__ == "__main__":
    asyncio.run(main())
