"""The knowledge base's life in `deskhand run`: built at start, reloaded on a schedule, and the
golden conversations replayed every night.

- At start every tenant Deskhand serves (the tenants file's, each connected Slack team, the
  default tenant and the mail tenant) whose index is empty, stale or built from another folder
  is built in the background, one tenant at a time, off the event loop. Until it is done, KB
  questions are told the help centre is being indexed, with a human offered; everything else
  is answered as usual.
- Every `DESKHAND_KB_RELOAD_MINUTES` each tenant's folder is reloaded incrementally
  (kb_loader/scheduler.py); the next run is written beside the KB's records so that
  `deskhand kb status`, in another process, can show it.
- At `DESKHAND_EVAL_CRON` (UTC), and at start with `DESKHAND_EVAL_AT_START`, the golden
  conversations and the KB question set run against the demo shop and demo KB in a throwaway
  home, so live data is never touched; the summary is logged, kept for status and written to
  `<home>/eval/YYYY-MM-DD.json`, and a figure lower than in the previous report is posted to
  each Slack tenant's support channel (bot/eval_reports.py).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.config import DEFAULT_TENANT, FIXTURES, Settings
from bot.kb_status import KBState, kb_folder, kb_state, write_last_eval
from bot.logs import get_logger

log = get_logger("deskhand.kb")

BUILD_JOB, EVAL_JOB, RELOAD_PREFIX = "kb-build", "kb-eval", "kb-reload:"


def served_tenants(settings: Settings, slack=None) -> list[str]:
    """Every tenant this process answers for, each once, in a stable order."""
    tenants = [*settings.tenants, *(getattr(slack, "teams", None) or {}), settings.default_tenant]
    if settings.smtp_enabled or settings.imap_host:
        tenants.append(settings.mail_tenant)
    return list(dict.fromkeys(tenants))


class KBLifecycle:
    def __init__(self, scheduler: AsyncIOScheduler, settings: Settings, kb, tenants: list[str]):
        self.scheduler = scheduler
        self.settings = settings
        self.kb = kb
        self.folders = {t: kb_folder(settings, t) for t in tenants}

    def start(self) -> None:
        from kb_loader.scheduler import schedule_reloads

        for tenant_id in self.folders:
            self.kb.queue_build(tenant_id)  # answered "being indexed" until the build decides
        self.scheduler.add_job(self.build_at_start, id=BUILD_JOB, name="KB build at start",
                               next_run_time=datetime.now(timezone.utc), replace_existing=True)
        schedule_reloads(self.scheduler, self.kb, self.folders, self.settings.kb_reload_minutes)
        self.scheduler.add_listener(self._record_next_run, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        for tenant_id in self.folders:
            self._write_next_run(tenant_id)

    async def build_at_start(self) -> None:
        """Build each tenant's index that needs it, one after the other."""
        for tenant_id, folder in self.folders.items():
            try:
                if await asyncio.to_thread(self._needs_build, tenant_id, folder):
                    log.info("kb_build_started", tenant_id=tenant_id, kb_dir=str(folder))
                    report = await asyncio.to_thread(self.kb.reload, tenant_id, folder)
                    log.info("kb_build_finished", tenant_id=tenant_id, docs=report.docs, chunks=report.chunks,
                             seconds=report.seconds)
            except Exception as exc:  # recorded in the run record; the next scheduled reload retries
                log.warning("kb_build_failed", tenant_id=tenant_id, error=str(exc)[:300])
            finally:
                self.kb.unqueue_build(tenant_id)

    def _needs_build(self, tenant_id: str, folder: Path) -> bool:
        status = self.kb.status(tenant_id)
        return not status.available or status.kb_dir != str(folder)

    def next_run(self, tenant_id: str) -> datetime | None:
        job = self.scheduler.get_job(RELOAD_PREFIX + tenant_id)
        return job.next_run_time if job is not None else None

    def state(self, tenant_id: str) -> KBState:
        """The tenant's facts, with the next run from the live scheduler (blocking: to_thread)."""
        return kb_state(self.settings, self.kb, tenant_id, next_run_at=self.next_run(tenant_id))

    def _record_next_run(self, event: JobExecutionEvent) -> None:
        if event.job_id.startswith(RELOAD_PREFIX):
            self._write_next_run(event.job_id.removeprefix(RELOAD_PREFIX))

    def _write_next_run(self, tenant_id: str) -> None:
        from kb_loader.runs import next_run_scheduled

        try:
            next_run_scheduled(self.settings.home, tenant_id, self.next_run(tenant_id))
        except OSError as exc:
            log.warning("kb_next_run_not_recorded", tenant_id=tenant_id, error=type(exc).__name__)


def eval_settings(settings: Settings, home: Path) -> Settings:
    """The golden conversations' settings: the demo tenant, shop and KB in `home`; the
    planner and encoder as configured, and the real home's caches (derived data, the same
    for both: the intent vectors are not encoded again for every eval)."""
    return Settings(**{**settings.model_dump(exclude={"home", "tenants_file", "kb_dir", "default_tenant"}),
                       "home": home, "tenants_file": FIXTURES / "tenants.yml", "kb_dir": FIXTURES / "kb",
                       "default_tenant": DEFAULT_TENANT, "log_file": None, "cache_dir": settings.cache_path})


async def nightly_eval(settings: Settings, golden: Path | None = None, slack=None,
                       questions: Path | None = None) -> dict:
    """Run the golden conversations and the KB question set in a throwaway home; log and
    keep the summary, write the day's report, and post any drop to the support channels."""
    from bot.eval_reports import report_and_alert, run_throwaway

    failures: list[str] = []
    try:
        golden_report, answer_report = await run_throwaway(settings, golden, questions)
        summary = {**golden_report.summary(), **answer_report.summary()}
        failures = [*golden_report.failures, *answer_report.failures]
        log.info("nightly_eval_finished", **summary)
        for failure in failures[:20]:
            log.warning("nightly_eval_failure", failure=failure[:300])
    except Exception as exc:
        log.exception("nightly_eval_failed")
        summary = {"error": type(exc).__name__}
    finished_at = datetime.now(timezone.utc)
    write_last_eval(settings.home, finished_at, summary)
    await report_and_alert(settings, slack, finished_at, summary, failures)
    return summary


def register(scheduler: AsyncIOScheduler, runtime, slack) -> None:
    """Registration for bot/schedule.py: the KB build and reloads, and the nightly eval."""
    settings = runtime.settings
    if runtime.kb is not None:
        lifecycle = KBLifecycle(scheduler, settings, runtime.kb, served_tenants(settings, slack))
        lifecycle.start()
        runtime.kb_lifecycle = lifecycle  # surfaces read the next run from it
    try:
        nightly = CronTrigger.from_crontab(settings.eval_cron, timezone=timezone.utc)
    except ValueError as exc:  # the process still serves; the operator sees why there is no eval
        log.error("eval_cron_invalid", eval_cron=settings.eval_cron, error=str(exc))
        return
    at_start = {"next_run_time": datetime.now(timezone.utc)} if settings.eval_at_start else {}
    scheduler.add_job(nightly_eval, nightly, args=[settings], kwargs={"slack": slack}, id=EVAL_JOB,
                      name="nightly golden eval", replace_existing=True, coalesce=True, max_instances=1,
                      misfire_grace_time=3600, **at_start)
