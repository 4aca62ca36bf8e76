"""What `GET /readyz` reports: each dependency of `deskhand run`, checked now.

    report = await readiness(runtime, slack, model_probe)
    report["ready"]   # every check in DESKHAND_OPS_READY_REQUIRES is ok

Checks: each Slack workspace's socket, the store (its thread answers, its file takes a write
lock), each tenant's KB state (ready, indexing, stale, empty or unavailable), the model server
(when an LLM planner is configured; the probe runs in the background, so a request never
waits on it), and the circuit breakers.
By default only Slack and the store decide readiness: without a fresh KB or a model the bot
still answers (KB questions go to a human, the rules planner takes over), so those make the
process "degraded", not unready. Every check is time-boxed; none raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timezone
from typing import Any

import aiohttp

from bot.hands.breaker import CLOSED
from bot.logs import get_logger
from bot.store.factory import store_location
from bot.store.probes import take_write_lock

log = get_logger("deskhand.ops")

CHECK_TIMEOUT_S = 3.0


def model_configured(settings) -> bool:
    """True when turns are planned by a model (`planner=llm`, or `auto` with a model set)."""
    if settings.planner == "rules":
        return False
    if settings.planner == "llm":
        return True
    from bot.brain.llm import llm_configured  # only imported when a model may be in use

    return llm_configured(settings)


class ModelProbe:
    """Whether the model server answers `GET <base_url>/models`, refreshed every
    `DESKHAND_OPS_MODEL_PROBE_S`. Any answer but 401/403/5xx counts as reachable."""

    def __init__(self, settings):
        self.settings = settings
        self.ok: bool | None = None  # None until the first probe has finished
        self.error = ""
        self.checked_at: datetime | None = None

    async def probe_once(self, http: aiohttp.ClientSession) -> None:
        url = self.settings.openai_base_url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {self.settings.openai_api_key}"} if self.settings.openai_api_key else {}
        try:
            timeout = aiohttp.ClientTimeout(total=self.settings.llm_timeout_s)
            async with http.get(url, headers=headers, timeout=timeout) as response:
                bad = response.status in (401, 403) or response.status >= 500
                self.ok, self.error = not bad, f"HTTP {response.status}" if bad else ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.ok, self.error = False, type(exc).__name__
        self.checked_at = datetime.now(timezone.utc)
        if not self.ok:
            log.warning("model_unreachable", error=self.error)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                await self.probe_once(http)
                await asyncio.sleep(self.settings.ops_model_probe_s)

    def report(self) -> dict[str, Any]:
        error = self.error if self.ok is not None else "not probed yet"
        return {"ok": bool(self.ok), "configured": True, "error": error,
                "checked_at": self.checked_at.isoformat() if self.checked_at else None}


async def slack_check(slack) -> dict[str, Any]:
    workspaces = {}
    for handler in slack.handlers if slack is not None else []:
        team = next((t for t in slack.teams.values() if t.client is handler.app.client), None)
        team_id = team.team_id if team is not None else "unknown"
        workspaces[team_id] = {"connected": await handler.is_connected()}  # the socket, or the Request URL serving
    return {"ok": bool(workspaces) and all(w["connected"] for w in workspaces.values()), "workspaces": workspaces}


async def store_check(runtime) -> dict[str, Any]:
    await runtime.store.inbox_get("")  # the store thread answers (a primary-key read of nothing)
    await asyncio.to_thread(take_write_lock, store_location(runtime.settings))
    return {"ok": True}


async def kb_check(runtime, slack) -> dict[str, Any]:
    """Each tenant's KB state, the same facts `/deskhand status` shows (bot/kb_status.py)."""
    tenants = sorted(set(runtime.settings.tenants) | set(slack.teams if slack is not None else ()))
    report = {}
    for tenant in tenants:
        state = await runtime.kb_state(tenant)
        report[tenant] = state.model_dump(mode="json", include={
            "state", "documents", "chunks", "indexed_at", "next_run_at", "last_error"})
    return {"ok": all(t["state"] == "ready" for t in report.values()), "tenants": report}


def breaker_check(runtime) -> dict[str, Any]:
    tripped = [{"tool": tool, "tenant": tenant, "state": state}
               for (tool, tenant), state in sorted(runtime.executor.breakers.states().items()) if state != CLOSED]
    return {"ok": not tripped, "tripped": tripped}


async def _boxed(check: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # a failing check is a "not ok", never a failing endpoint
        log.warning("readiness_check_failed", error=type(exc).__name__)
        return {"ok": False, "error": type(exc).__name__}


async def readiness(runtime, slack, model_probe: ModelProbe | None) -> dict[str, Any]:
    names = ("slack", "store", "kb")
    results = await asyncio.gather(_boxed(slack_check(slack)), _boxed(store_check(runtime)),
                                   _boxed(kb_check(runtime, slack)))
    checks = dict(zip(names, results))
    checks["model"] = model_probe.report() if model_probe is not None else {"ok": True, "configured": False}
    checks["breakers"] = breaker_check(runtime)
    required = set(runtime.settings.ops_ready_requires)
    for name, check in checks.items():
        check["required"] = name in required
    ready = all(check["ok"] for check in checks.values() if check["required"])
    healthy = all(check["ok"] for check in checks.values())
    return {"ready": ready, "status": "ready" if healthy else "degraded" if ready else "not_ready",
            "checks": checks}
