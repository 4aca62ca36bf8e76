"""Work that outlives a Slack ack, owned by the Slack lifespan.

Listeners ack first and then hand slow work (posting a placeholder, running an approval,
reloading the KB, publishing App Home) to `Jobs.spawn`. `Jobs` owns every task it starts:
nothing is fire-and-forget, `drain` (at shutdown) waits for the jobs in flight, and a job
that fails is logged without taking the others down. (A `TaskGroup` would also own them, but
it wraps any error of the lifespan's body in an ExceptionGroup, and one failed job must not
cancel the rest.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from bot.logs import get_logger

log = get_logger("deskhand.slack.jobs")


class Jobs:
    def __init__(self) -> None:
        self._running: set[asyncio.Task] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "slack-job") -> asyncio.Task | None:
        if self.closed:
            coro.close()
            log.warning("job_refused_after_shutdown", job=name)
            return None
        task = asyncio.get_running_loop().create_task(self._guarded(coro, name), name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    @staticmethod
    async def _guarded(coro: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job_failed", job=name)

    def __len__(self) -> int:
        return len(self._running)

    async def idle(self) -> None:
        """Wait until no job is running (jobs may spawn jobs)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def drain(self) -> None:
        """Stop taking jobs and wait for the ones in flight."""
        self.closed = True
        await self.idle()
