"""The outbox's one retry policy (bot/outbox_policy.py): exponential, capped, jittered,
bounded, and read from the settings."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from bot.config import load_settings
from bot.outbox_policy import RetryPolicy

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_delays_double_up_to_the_cap_without_jitter():
    policy = RetryPolicy(max_attempts=6, base_s=10, max_delay_s=60, jitter=0)
    assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [10, 20, 40, 60, 60]


def test_jitter_only_shortens_a_delay_and_spreads_rows_apart():
    policy = RetryPolicy(base_s=100, max_delay_s=100, jitter=0.5, rng=random.Random(7))
    delays = {policy.delay(3).total_seconds() for _ in range(50)}
    assert all(50 <= d <= 100 for d in delays) and len(delays) > 40


def test_the_policy_gives_up_after_max_attempts():
    policy = RetryPolicy(max_attempts=3, base_s=1, max_delay_s=1, jitter=0)
    assert policy.next_attempt(1, NOW) == NOW + timedelta(seconds=1)
    assert policy.next_attempt(2, NOW) == NOW + timedelta(seconds=1)
    assert policy.next_attempt(3, NOW) is None
    assert policy.delay(10_000).total_seconds() == 1  # no overflow however many failures


def test_the_policy_is_read_from_the_settings(tmp_path):
    settings = load_settings(home=tmp_path, outbox_max_attempts=4, outbox_backoff_base_s=2,
                             outbox_backoff_max_s=30, outbox_backoff_jitter=0)
    assert RetryPolicy.from_settings(settings) == RetryPolicy(max_attempts=4, base_s=2, max_delay_s=30, jitter=0)


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"jitter": 1.0}, {"base_s": -1}])
def test_a_policy_that_cannot_work_is_refused(bad):
    with pytest.raises(ValueError):
        RetryPolicy(**bad)
