"""The scheduler of `deskhand run`: one apscheduler `AsyncIOScheduler` on the bot's loop.

    async with scheduled(runtime, slack=surface) as scheduler:
        ...  # KB builds and reloads, the nightly eval, approval expiries, handoff SLA pings

Each part adds its own jobs through a `register(scheduler, runtime, slack)` function, so this
module only owns the scheduler's lifespan. Every job is derived from the store when it runs
(nothing lives only in the scheduler's memory), so a restarted process picks up where the
last one stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timezone
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.logs import get_logger

log = get_logger("deskhand.schedule")

# A part of Deskhand that schedules work: called once at start with the running scheduler.
Registration = Callable[[AsyncIOScheduler, Any, Any], None]


def registrations() -> list[Registration]:
    """The parts that add jobs, in the order they are registered."""
    from bot import kb_lifecycle, timers  # imported here: the parts import the Slack and store layers

    return [timers.register, kb_lifecycle.register]


@asynccontextmanager
async def scheduled(runtime, *, slack=None) -> AsyncIterator[AsyncIOScheduler]:
    scheduler = AsyncIOScheduler(timezone=timezone.utc)
    scheduler.start()
    try:
        for register in registrations():
            register(scheduler, runtime, slack)
        log.info("scheduler_started", jobs=[job.id for job in scheduler.get_jobs()])
        yield scheduler
    finally:
        scheduler.shutdown(wait=False)
