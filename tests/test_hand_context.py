"""What the hands get: one way to make a `HandContext`, and a replay's store that refuses writes."""

from __future__ import annotations

import re

import pytest

from bot.config import PROJECT_ROOT
from bot.replay_answers import ReadOnlyStore, ReplayWriteRefused
from bot.store import AsyncStore


def test_a_hand_context_is_made_in_one_place_only():
    makers = []
    for package in ("bot", "mailbridge", "kb_loader"):
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\bHandContext\(", line) and not line.lstrip().startswith("class "):
                    makers.append(f"{path.relative_to(PROJECT_ROOT)}:{number}")
    assert len(makers) == 1 and makers[0].startswith("bot/runtime.py:"), makers


async def test_the_runtime_makes_a_context_from_its_own_parts(runtime):
    ctx = runtime.hand_context("T_DEMO", "s1", "U1", "slack_dm", "c1", inbox_id="m1")
    assert ctx.store is runtime.store and ctx.kb is runtime.kb
    assert ctx.policy == runtime.settings.policy("T_DEMO")
    assert ctx.backends.orders is runtime.shop and not ctx.shadow and ctx.inbox_id == "m1"


async def test_a_replay_store_is_a_store_that_refuses_every_call_but_the_call_log(runtime):
    store = ReadOnlyStore(runtime.store)
    assert isinstance(store, AsyncStore)
    assert await store.record_tool_call(tool="search_kb") is None
    with pytest.raises(ReplayWriteRefused, match="store.audit"):
        await store.audit("T_DEMO", "U1", "refund", "s1")
    assert await runtime.store.inbox_count() == 0  # the real store still works
