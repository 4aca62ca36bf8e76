"""Every guard of the Hands, proven with real faults from a real HTTP backend."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import load_settings
from bot.contracts import PlanStep
from bot.hands.context import HandContext
from bot.runtime import open_runtime
from tests.shop_server import tenants_yaml


class Clock:
    """Monotonic time the test moves by hand (for the breaker's window and cooldown)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def rt(tmp_path, shop, clock):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(tenants_yaml(shop.url))
    settings = load_settings(home=tmp_path / "home", tenants_file=tenants, tool_timeout_s=0.3,
                             rate_per_second=1000)
    async with open_runtime(settings, clock=clock) as runtime:
        runtime.executor.backoff_s = 0.01  # keep retries quick; the schedule itself is tested below
        yield runtime


def ctx(rt, session="s1", tenant="T_HTTP", **kw) -> HandContext:
    return rt.hand_context(tenant, session, "U1", "cli", "c1", **kw)


ORDER = PlanStep(tool="get_order_status", args={"order_id": "A-2001"})


async def test_a_hanging_backend_times_out_and_is_retried_once(rt, shop):
    shop.script("order", "hang")
    result = await rt.executor.run(ORDER, ctx(rt))
    assert not result.ok and result.error_kind == "timeout"
    assert len([r for r in shop.requests if r["route"] == "order"]) == 2  # first try + one retry


async def test_a_transient_failure_is_retried_and_succeeds(rt, shop):
    shop.script("order", 503, "ok")
    result = await rt.executor.run(ORDER, ctx(rt))
    assert result.ok and result.data["orders"][0]["status"] == "shipped"
    assert len(shop.requests) == 2


async def test_client_errors_are_not_retried(rt, shop):
    shop.script("order", 400)
    result = await rt.executor.run(ORDER, ctx(rt))
    assert result.error_kind == "client_error"
    assert len(shop.requests) == 1


async def test_breaker_opens_after_three_failures_then_half_opens(rt, shop, clock):
    shop.script("order", 503)
    for _ in range(3):
        result = await rt.executor.run(ORDER, ctx(rt))
        assert result.error_kind == "transient"
    calls_before = len(shop.requests)
    assert calls_before == 6  # 3 calls, each tried twice

    blocked = await rt.executor.run(ORDER, ctx(rt))
    assert blocked.error_kind == "circuit_open"
    assert len(shop.requests) == calls_before  # the backend was not touched

    # Another tenant's breaker for the same tool is unaffected.
    other = await rt.executor.run(PlanStep(tool="get_order_status", args={"order_id": "A-1042"}), ctx(rt, tenant="T_DEMO"))
    assert other.ok

    clock.now += 61  # past the cooldown: one trial call goes through
    shop.script("order", "ok")
    trial = await rt.executor.run(ORDER, ctx(rt))
    assert trial.ok
    assert rt.executor.breakers.get("get_order_status", "T_HTTP").state == "closed"


async def test_failures_outside_the_window_do_not_open_the_breaker(rt, shop, clock):
    shop.script("order", 503)
    for _ in range(3):
        await rt.executor.run(ORDER, ctx(rt))
        clock.now += 31  # 3 failures, but never 3 within 60 s
    assert rt.executor.breakers.get("get_order_status", "T_HTTP").state == "closed"


async def test_a_failed_half_open_trial_reopens_the_breaker(rt, shop, clock):
    shop.script("order", 503)
    for _ in range(3):
        await rt.executor.run(ORDER, ctx(rt))
    clock.now += 61
    await rt.executor.run(ORDER, ctx(rt))  # the trial fails
    assert (await rt.executor.run(ORDER, ctx(rt))).error_kind == "circuit_open"


async def test_rate_limit_burst(tmp_path, shop):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(tenants_yaml(shop.url))
    settings = load_settings(home=tmp_path / "h2", tenants_file=tenants, rate_per_second=5)
    async with open_runtime(settings) as rt:
        steps = [PlanStep(tool="create_ticket", args={"subject": f"burst {i}"}) for i in range(12)]
        results = await asyncio.gather(*(rt.executor.run(s, ctx(rt)) for s in steps))
    kinds = [r.error_kind for r in results]
    assert kinds.count(None) == 5
    assert kinds.count("rate_limited") == 7
    assert len([r for r in shop.requests if r["route"] == "ticket"]) == 5


async def test_a_duplicate_write_runs_once(rt, shop):
    step = PlanStep(tool="create_ticket", args={"subject": "Broken lamp", "body": "arrived broken"})
    first, second = await asyncio.gather(rt.executor.run(step, ctx(rt)), rt.executor.run(step, ctx(rt)))
    third = await rt.executor.run(step, ctx(rt))
    assert first.data["ticket_id"] == second.data["ticket_id"] == third.data["ticket_id"]
    assert third.cached
    # The helpdesk may see the concurrent pair, but both carry the same idempotency key.
    keys = {r["headers"]["Idempotency-Key"] for r in shop.requests if r["route"] == "ticket"}
    assert len(keys) == 1


async def test_reads_are_cached_for_their_ttl(rt, shop, clock):
    assert not (await rt.executor.run(ORDER, ctx(rt))).cached
    assert (await rt.executor.run(ORDER, ctx(rt))).cached
    clock.now += 61
    assert not (await rt.executor.run(ORDER, ctx(rt))).cached
    assert len(shop.requests) == 2


async def test_unknown_tools_and_bad_args_are_refused_before_anything_runs(rt, shop):
    unknown = await rt.executor.run(PlanStep(tool="drop_tables", args={}), ctx(rt))
    bad = await rt.executor.run(PlanStep(tool="create_ticket", args={"subject": ""}), ctx(rt))
    assert unknown.error_kind == bad.error_kind == "invalid_args"
    assert shop.requests == []


async def test_a_forbidden_tool_is_refused(tmp_path):
    tenants = tmp_path / "t.yml"
    tenants.write_text('{"tenants": {"T_X": {"forbidden_tools": ["create_ticket"]}}}')
    async with open_runtime(load_settings(home=tmp_path / "h", tenants_file=tenants)) as rt:
        result = await rt.executor.run(PlanStep(tool="create_ticket", args={"subject": "x"}), ctx(rt, tenant="T_X"))
    assert result.error_kind == "not_allowed"


async def test_email_lookup_answers_only_the_verified_sender(rt, shop):
    step = PlanStep(tool="get_order_status", args={"email": "pat@example.com"})
    refused = await rt.executor.run(step, ctx(rt, verified_email="mallory@example.com"))
    allowed = await rt.executor.run(step, ctx(rt, verified_email="pat@example.com"))
    assert refused.error_kind == "not_verified"
    assert allowed.ok and allowed.data["orders"][0]["order_id"] == "A-2001"


async def test_retry_backoff_is_200ms_then_400ms(tmp_path):
    # The schedule itself, read from the retry policy rather than timed.
    from tenacity import wait_exponential

    from bot.hands.executor import HandsExecutor
    from bot.hands.registry import default_registry

    executor = HandsExecutor(default_registry())
    wait = wait_exponential(multiplier=executor.backoff_s, min=executor.backoff_s)

    class State:
        def __init__(self, n):
            self.attempt_number = n

    assert [wait(State(1)), wait(State(2))] == [0.2, 0.4]


async def test_http_backend_sends_the_configured_token(rt, shop):
    await rt.executor.run(ORDER, ctx(rt))
    assert shop.requests[0]["headers"]["Authorization"] == "Bearer shop-token"
