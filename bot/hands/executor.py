"""The only place that runs hands, and the only place their limits are enforced.

For each call: validate the args against the tool's model, check the tenant's policy (the
tool and its scopes, bot/hands/gate.py), turn a needs-approval call into a `PendingAction`,
serve reads from the TTL cache and repeated writes from their idempotency record, then apply
the circuit breaker, the rate limit, the timeout and the retry. In a shadow turn a write is
only described (bot/shadow.py). Every call is recorded in `tool_calls`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter
from cachetools import TTLCache
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from bot.contracts import PendingAction, PlanStep, ToolResult
from bot.hands.breaker import BreakerBoard
from bot.hands.context import HandContext
from bot.hands.errors import (
    CircuitOpen, HandError, InvalidArgs, RateLimited, ToolTimeout, TransientError,
)
from bot.hands.gate import check_tool
from bot.hands.registry import ToolRegistry, ToolSpec
from bot.logs import get_logger
from bot.shadow import would_be_result

log = get_logger("deskhand.hands")


def canonical(args: BaseModel | dict) -> str:
    data = args.model_dump(mode="json") if isinstance(args, BaseModel) else args
    return json.dumps(data, sort_keys=True, default=str)


def default_idempotency_key(ctx: HandContext, spec: ToolSpec, args: BaseModel) -> str:
    raw = f"{ctx.tenant_id}|{ctx.session_id}|{spec.name}|{canonical(args)}"
    return hashlib.sha256(raw.encode()).hexdigest()


class HandsExecutor:
    def __init__(
        self,
        registry: ToolRegistry,
        *,
        default_timeout_s: float = 2.0,
        default_rate_per_s: float = 20.0,
        breakers: BreakerBoard | None = None,
        backoff_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.registry = registry
        self.default_timeout_s = default_timeout_s
        self.default_rate_per_s = default_rate_per_s
        self.breakers = breakers or BreakerBoard(clock=clock)
        self.backoff_s = backoff_s
        self._limiters: dict[tuple[str, str], AsyncLimiter] = {}
        self._cache: TTLCache = TTLCache(maxsize=10_000, ttl=3600)  # per-entry TTL checked below
        self._clock = clock
        self.metrics = None  # bot/metrics.py DeskhandMetrics, set by the runtime

    # -- public ------------------------------------------------------------------------
    def validate(self, step: PlanStep, ctx: HandContext) -> BaseModel:
        """Args model for a step, or raise InvalidArgs / NotAllowed. Used by planners too."""
        spec = self.registry.get(step.tool)
        if spec is None:
            raise InvalidArgs(f"unknown tool {step.tool!r}")
        check_tool(ctx.policy, spec)  # forbidden, not allowed, or a scope not granted: NotAllowed
        try:
            return spec.args_model.model_validate(step.args)
        except ValidationError as exc:
            raise InvalidArgs(f"{spec.name}: {exc.errors(include_url=False, include_input=False)}") from exc

    async def run(self, step: PlanStep, ctx: HandContext) -> ToolResult:
        started = time.perf_counter()
        spec = self.registry.get(step.tool)
        try:
            args = self.validate(step, ctx)
            assert spec is not None
            if ctx.shadow and (spec.side_effect == "write" or spec.needs_approval):
                result = await self._would_run(spec, args, ctx)
            elif spec.needs_approval and not ctx.approved:
                result = await self._propose(spec, args, ctx)
            else:
                result = await self._execute(spec, args, ctx)
        except HandError as exc:  # validation, policy, or a call below: each says which tool and system
            exc.tool = exc.tool or step.tool
            exc.system = exc.system or (spec.system if spec is not None else None)
            result = ToolResult(tool=step.tool, ok=False, error=str(exc), error_kind=exc.kind,
                                error_system=exc.system)
        result.cost_ms = round((time.perf_counter() - started) * 1000, 3)
        if self.metrics is not None:
            self.metrics.tool_finished(result)
        await ctx.store.record_tool_call(
            correlation_id=ctx.correlation_id, tenant_id=ctx.tenant_id, session_id=ctx.session_id,
            tool=step.tool, args=step.args, ok=int(result.ok), result=result.data, error=result.error,
            error_kind=result.error_kind, cost_ms=result.cost_ms, cached=int(result.cached),
            attempts=ctx.attempt, idempotency_key=None,
        )
        log.info("tool_call", tool=step.tool, ok=result.ok, error_kind=result.error_kind,
                 cached=result.cached, cost_ms=result.cost_ms)
        return result

    async def run_approved(self, action: PendingAction, ctx: HandContext) -> ToolResult:
        """Execute a pending action a teammate approved. Idempotent by the action's key."""
        ctx.approved = True
        return await self.run(PlanStep(tool=action.tool, args=action.args), ctx)

    # -- steps of a call ---------------------------------------------------------------
    async def _would_run(self, spec: ToolSpec, args: BaseModel, ctx: HandContext) -> ToolResult:
        """A write in a shadow turn: described, never run. A proposal's `prepare` is a read
        (the order and its refundable amount), so it runs and the description is exact."""
        if spec.needs_approval and not ctx.approved and spec.prepare is not None:
            args = await self._guarded(spec, ctx, spec.prepare, args)
        return would_be_result(spec, args, ctx)

    async def _propose(self, spec: ToolSpec, args: BaseModel, ctx: HandContext) -> ToolResult:
        if spec.prepare is not None:
            args = await self._guarded(spec, ctx, spec.prepare, args)
        key = self._idempotency_key(spec, args, ctx)
        action = await ctx.store.pending_create(PendingAction(
            tenant_id=ctx.tenant_id, session_id=ctx.session_id, tool=spec.name,
            args=args.model_dump(mode="json"), requested_by=ctx.user_id, idempotency_key=key,
        ), {"inbox_id": ctx.inbox_id, "channel": ctx.channel})
        await ctx.store.audit(ctx.tenant_id, ctx.user_id, "propose", action.id,
                              {"tool": spec.name, "args": action.args})
        return ToolResult(tool=spec.name, ok=True, pending_action_id=action.id,
                          data={"status": "pending_approval", "action_id": action.id, **action.args})

    async def _execute(self, spec: ToolSpec, args: BaseModel, ctx: HandContext) -> ToolResult:
        if spec.side_effect == "read" and spec.cache_ttl_s > 0:
            key = (ctx.tenant_id, spec.name, canonical(args))
            hit = self._cache.get(key)
            if hit is not None and self._clock() - hit[0] < spec.cache_ttl_s:
                return ToolResult(tool=spec.name, ok=True, data=hit[1], cached=True)
            output = await self._guarded(spec, ctx, spec.fn, args)
            data = output.model_dump(mode="json")
            self._cache[key] = (self._clock(), data)
            return ToolResult(tool=spec.name, ok=True, data=data)

        if spec.side_effect == "write":
            key = self._idempotency_key(spec, args, ctx)
            done = await ctx.store.idempotent_result(key)
            if done is not None:
                return ToolResult(tool=spec.name, ok=True, data=done, cached=True)
            output = await self._guarded(spec, ctx, spec.fn, args)
            data = await ctx.store.save_idempotent_result(key, ctx.tenant_id, spec.name,
                                                          output.model_dump(mode="json"))
            # A write may change what reads return (an order's refunds): drop this tenant's cache.
            for cached_key in [k for k in list(self._cache) if k[0] == ctx.tenant_id]:
                self._cache.pop(cached_key, None)
            return ToolResult(tool=spec.name, ok=True, data=data)

        output = await self._guarded(spec, ctx, spec.fn, args)
        return ToolResult(tool=spec.name, ok=True, data=output.model_dump(mode="json"))

    async def _guarded(self, spec: ToolSpec, ctx: HandContext, fn, args: BaseModel):
        """Breaker, rate limit, timeout and retry around one backend-touching call. An error
        from here names the tool and the system this call touches (`prepare`'s may be another)."""
        where = {"tool": spec.name,
                 "system": spec.prepare_system if fn is spec.prepare and spec.prepare_system else spec.system}
        breaker = self.breakers.get(spec.name, ctx.tenant_id)
        if not breaker.allow():
            raise CircuitOpen(f"{spec.name} is failing for this tenant; paused", **where)
        limiter = self._limiter(spec, ctx.tenant_id)
        if not limiter.has_capacity():
            raise RateLimited(f"{spec.name} rate limit reached", **where)
        await limiter.acquire()
        timeout = spec.timeout_s or self.default_timeout_s
        retrying = AsyncRetrying(
            stop=stop_after_attempt(spec.retries + 1),
            wait=wait_exponential(multiplier=self.backoff_s, min=self.backoff_s),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    ctx.attempt = attempt.retry_state.attempt_number
                    try:
                        async with asyncio.timeout(timeout):
                            output = await fn(ctx, args)
                    except TimeoutError as exc:
                        raise ToolTimeout(f"{spec.name} timed out after {timeout:.1f}s", **where) from exc
        except TransientError as exc:
            breaker.record_failure()
            exc.tool, exc.system = exc.tool or where["tool"], exc.system or where["system"]
            raise
        except HandError as exc:
            # A client error says nothing about the backend's health.
            breaker.record_success()
            exc.tool, exc.system = exc.tool or where["tool"], exc.system or where["system"]
            raise
        breaker.record_success()
        return output

    def _limiter(self, spec: ToolSpec, tenant_id: str) -> AsyncLimiter:
        key = (spec.name, tenant_id)
        if key not in self._limiters:
            rate = spec.rate_per_s or self.default_rate_per_s
            self._limiters[key] = AsyncLimiter(max_rate=rate, time_period=1.0)
        return self._limiters[key]

    def _idempotency_key(self, spec: ToolSpec, args: BaseModel, ctx: HandContext) -> str:
        if spec.idempotency_key is not None:
            return spec.idempotency_key(ctx, args)
        return default_idempotency_key(ctx, spec, args)
