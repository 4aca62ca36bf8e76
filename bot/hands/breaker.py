"""A circuit breaker per (tool, tenant).

Written here rather than taken from a library because we need: a sliding window of
failures ("3 failures in 60 s", not "3 in a row"), one half-open trial call after the
cooldown, independent state per tool *and* tenant, and an injectable clock so tests can
prove the cooldown without sleeping. The maintained breakers on PyPI count consecutive
failures or are synchronous.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class CircuitBreaker:
    failures_to_open: int = 3
    window_s: float = 60.0
    cooldown_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: deque = field(default_factory=deque)
    _opened_at: float | None = None
    _trial_in_flight: bool = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self.clock() - self._opened_at >= self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one trial call may."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures.clear()
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        now = self.clock()
        if self._opened_at is not None:
            # The half-open trial failed: open again for a full cooldown.
            self._opened_at = now
            self._trial_in_flight = False
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.failures_to_open:
            self._opened_at = now
            self._failures.clear()


class BreakerBoard:
    """All breakers of a process, created on first use per (tool, tenant)."""

    def __init__(self, failures_to_open: int = 3, window_s: float = 60.0, cooldown_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._params = dict(failures_to_open=failures_to_open, window_s=window_s,
                            cooldown_s=cooldown_s, clock=clock)
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, tool: str, tenant_id: str) -> CircuitBreaker:
        key = (tool, tenant_id)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(**self._params)
        return self._breakers[key]

    def states(self) -> dict[tuple[str, str], str]:
        """Each breaker's state now, by (tool, tenant): what `/metrics` and `/readyz` show."""
        return {key: breaker.state for key, breaker in list(self._breakers.items())}
