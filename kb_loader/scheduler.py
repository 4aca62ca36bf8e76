"""Periodic KB reloads on the bot's apscheduler `AsyncIOScheduler`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path

import structlog
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from kb_loader.kb import KnowledgeBase

log = structlog.get_logger("kb_loader")


async def reload_in_thread(kb: KnowledgeBase, tenant_id: str, kb_dir: Path | None = None) -> None:
    """One scheduled reload: off the event loop, and never raising into the scheduler."""
    try:
        await asyncio.to_thread(kb.reload, tenant_id, kb_dir)
    except Exception:
        log.exception("kb.scheduled_reload_failed", tenant_id=tenant_id)


def schedule_reloads(
    scheduler: AsyncIOScheduler,
    kb: KnowledgeBase,
    tenants: Iterable[str] | Mapping[str, Path | None],
    interval_minutes: float,
) -> list[Job]:
    """Add one interval job per tenant (id `kb-reload:<tenant>`), replacing any earlier one.

    `tenants` is a list of tenant ids (each reloads `settings.kb_dir`) or a mapping of tenant
    id to its own folder. Jobs coalesce and never overlap, and the first run is one interval
    from now: run `kb.reload` at start-up if the index must be fresh sooner.
    """
    folders = dict(tenants) if isinstance(tenants, Mapping) else {t: None for t in tenants}
    jobs = []
    for tenant_id, folder in folders.items():
        jobs.append(scheduler.add_job(
            reload_in_thread, "interval", minutes=interval_minutes, args=[kb, tenant_id, folder],
            id=f"kb-reload:{tenant_id}", name=f"KB reload {tenant_id}", replace_existing=True,
            coalesce=True, max_instances=1, misfire_grace_time=max(1, int(interval_minutes * 60)),
        ))
    return jobs
