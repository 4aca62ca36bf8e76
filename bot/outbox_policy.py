"""The outbox's retry policy, one for every channel (Slack posts and email alike).

    policy = RetryPolicy.from_settings(settings)
    retry_at = policy.next_attempt(failed_attempts, now)   # None: give up

A delivery that fails is tried again after `base_s`, then twice that, four times that, … up
to `max_delay_s`, each delay shortened at random by up to `jitter` of itself, so that many
rows failing together (Slack or the relay down) do not all come back at the same instant.
After `max_attempts` failed attempts the row is given up: the store marks it `failed`, the
outbox's dead end, which `deskhand dlq list` shows and `deskhand dlq retry outbox:ID` puts
back. A failure that retrying cannot mend (an SMTP 5xx) is given up at once by its sender.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    base_s: float = 5.0
    max_delay_s: float = 900.0
    jitter: float = 0.2  # 0 <= jitter < 1: how much of a delay may be taken off at random
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s < 0 or self.max_delay_s < 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"not a retry policy: {self!r}")

    @classmethod
    def from_settings(cls, settings) -> RetryPolicy:
        """From `bot.config.Settings` (DESKHAND_OUTBOX_*)."""
        return cls(max_attempts=settings.outbox_max_attempts, base_s=settings.outbox_backoff_base_s,
                   max_delay_s=settings.outbox_backoff_max_s, jitter=settings.outbox_backoff_jitter)

    def delay(self, failed_attempts: int) -> timedelta:
        """The wait after the n-th failed attempt (n >= 1), jitter included."""
        doublings = min(max(failed_attempts - 1, 0), 64)  # past the cap long before; no float overflow
        ceiling = min(self.base_s * 2 ** doublings, self.max_delay_s)
        return timedelta(seconds=ceiling * (1 - self.jitter * self.rng.random()))

    def gives_up(self, failed_attempts: int) -> bool:
        return failed_attempts >= self.max_attempts

    def next_attempt(self, failed_attempts: int, now: datetime) -> datetime | None:
        """When to try again after `failed_attempts` failures in all; None: give up."""
        if self.gives_up(failed_attempts):
            return None
        return now + self.delay(failed_attempts)
