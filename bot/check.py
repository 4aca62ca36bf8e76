"""`deskhand check`: probe every configured part and say, per part, ✓ or ✗ with a hint.

    results = await run_checks(settings)   # list[CheckResult], never raises
    print(render_table(results)); exit(0 if all_ok(results) else 1)

Probes: Slack `auth.test` per workspace (and the granted scopes against manifest.yml's),
the bot's membership of each tenant's support channel (`conversations.info`), the SMTP relay
(connect + EHLO) and the IMAP login when mail is on, the LLM endpoint when a model plans
(one tiny request), the encoder, each tenant's KB freshness, and a write + rollback on the
store. Each probe is time-boxed (`DESKHAND_CHECK_TIMEOUT_S`, default 5 s), so a dead host cannot hang the check.
`deskhand run` runs the same probes at start and logs one line per check (`log_checks`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from bot.config import PROJECT_ROOT, Settings
from bot.logs import get_logger
from bot.store.factory import store_location
from bot.store.probes import StoreUnavailable, redact_url, write_probe

log = get_logger("deskhand.check")

MANIFEST = PROJECT_ROOT / "manifest.yml"


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    hint: str = ""  # what to do about a ✗


Probe = Callable[[], Awaitable[CheckResult]]


def manifest_scopes(path: Path = MANIFEST) -> set[str]:
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    return set(manifest["oauth_config"]["scopes"]["bot"])


def bot_tokens(settings: Settings) -> list[str]:
    tokens = [settings.slack_bot_token] if settings.slack_bot_token else []
    return tokens + [w.bot_token for w in settings.slack_workspaces if w.bot_token not in tokens]


async def slack_probes(settings: Settings) -> list[CheckResult]:
    """auth.test and the scopes for each workspace, then each of its tenants' support channel."""
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    results = []
    wanted = manifest_scopes()
    for index, token in enumerate(bot_tokens(settings), 1):
        client = AsyncWebClient(token=token, base_url=settings.slack_api_url,
                                timeout=max(1, round(settings.check_timeout_s)))
        name = f"slack workspace {index}"
        try:
            auth = await client.auth_test()
        except SlackApiError as exc:
            results.append(CheckResult(name, False, f"auth.test: {exc.response.get('error')}",
                                       "check SLACK_BOT_TOKEN / DESKHAND_SLACK_WORKSPACES (docs/slack.md)"))
            continue
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            results.append(CheckResult(name, False, f"{settings.slack_api_url}: {type(exc).__name__}",
                                       "is Slack reachable from here (proxy, firewall, DESKHAND_SLACK_API_URL)?"))
            continue
        team = auth["team_id"]
        results.append(CheckResult(f"slack {team}", True, f"auth.test ok as {auth.get('user')}"))
        granted = {s.strip() for s in (auth.headers.get("x-oauth-scopes") or "").split(",") if s.strip()}
        missing = sorted(wanted - granted)
        results.append(CheckResult(
            f"slack {team} scopes", not missing,
            f"missing {', '.join(missing)}" if missing else f"{len(wanted)} scopes from manifest.yml granted",
            "add the scopes from manifest.yml to the app and reinstall it" if missing else ""))
        policy = settings.tenants.get(team)
        if policy is not None and policy.support_channel:
            results.append(await _membership(client, team, policy.support_channel, SlackApiError))
    return results


async def _membership(client, team: str, channel: str, error_type) -> CheckResult:
    name = f"slack {team} channel {channel}"
    try:
        info = await client.conversations_info(channel=channel)
    except error_type as exc:
        error = exc.response.get("error")
        hint = ("conversations.info needs channels:read (groups:read for a private channel)"
                if error == "missing_scope" else "check the tenant's support_channel in the tenants file")
        return CheckResult(name, False, f"conversations.info: {error}", hint)
    if info["channel"].get("is_member"):
        return CheckResult(name, True, "the bot is a member")
    return CheckResult(name, False, "the bot is not a member",
                       f"invite it: /invite @deskhand in #{info['channel'].get('name') or channel}")


def mail_on(settings: Settings) -> bool:
    return settings.smtp_enabled or bool(settings.imap_host)


async def smtp_probe(settings: Settings) -> CheckResult:
    import aiosmtplib

    where = f"{settings.relay_host}:{settings.relay_port}"
    try:
        smtp = aiosmtplib.SMTP(hostname=settings.relay_host, port=settings.relay_port,
                               timeout=settings.check_timeout_s, start_tls=False)
        await smtp.connect()
        await smtp.ehlo()
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError) as exc:
        return CheckResult("smtp relay", False, f"{where}: {type(exc).__name__}",
                           "check DESKHAND_RELAY_HOST / DESKHAND_RELAY_PORT and that the relay is up")
    return CheckResult("smtp relay", True, f"{where}: EHLO ok")


async def imap_probe(settings: Settings) -> CheckResult:
    import aioimaplib

    where = f"{settings.imap_host}:{settings.imap_port}"
    hint = "check DESKHAND_IMAP_HOST, _PORT, _SSL, _USERNAME and _PASSWORD"
    cls = aioimaplib.IMAP4_SSL if settings.imap_ssl else aioimaplib.IMAP4
    client = cls(host=settings.imap_host, port=settings.imap_port, timeout=settings.check_timeout_s)
    try:
        await client.wait_hello_from_server()
        response = await client.login(settings.imap_username, settings.imap_password)
        if response.result != "OK":
            return CheckResult("imap login", False, f"{where}: login refused", hint)
        await client.logout()
    except (OSError, asyncio.TimeoutError, aioimaplib.Abort) as exc:
        return CheckResult("imap login", False, f"{where}: {type(exc).__name__}", hint)
    return CheckResult("imap login", True, f"{where}: logged in")


async def llm_probe(settings: Settings) -> CheckResult:
    import openai

    client = openai.AsyncOpenAI(base_url=settings.openai_base_url, api_key=settings.openai_api_key or "unset",
                                timeout=settings.check_timeout_s, max_retries=0)
    try:
        await client.chat.completions.create(model=settings.llm_small_model, max_tokens=1,
                                             messages=[{"role": "user", "content": "ping"}])
    except openai.OpenAIError as exc:
        return CheckResult("llm", False, f"{settings.openai_base_url}: {type(exc).__name__}",
                           "check DESKHAND_OPENAI_BASE_URL, the API key and DESKHAND_LLM_SMALL_MODEL,"
                           " or set DESKHAND_PLANNER=rules")
    finally:
        await client.close()
    return CheckResult("llm", True, f"{settings.llm_small_model} at {settings.openai_base_url} answered")


def encoder_and_kb(settings: Settings, kb=None) -> list[CheckResult]:
    from kb_loader.encoder import get_encoder
    from kb_loader.kb import KnowledgeBase

    try:
        encoder = get_encoder(settings)
        encoder.encode(["deskhand check"])
    except Exception as exc:  # any failure to load a model is the encoder's ✗
        return [CheckResult("encoder", False, f"{settings.kb_encoder}: {type(exc).__name__}",
                            "check DESKHAND_KB_ENCODER and DESKHAND_KB_ENCODER_PATH")]
    results = [CheckResult("encoder", True, f"{settings.kb_encoder} loads")]
    kb = kb if kb is not None else KnowledgeBase(settings, encoder=encoder)  # `deskhand run` passes its own
    for tenant in sorted(set(settings.tenants) | {settings.default_tenant}):
        status = kb.status(tenant)
        fresh = status.available and status.age_hours is not None
        detail = f"{status.docs} docs, {status.age_hours:.1f} h old" if fresh else status.reason or "available"
        results.append(CheckResult(f"kb {tenant}", status.available, detail,
                                   "" if status.available else f"deskhand kb reload --tenant {tenant}"))
    return results


def store_probe(settings: Settings) -> CheckResult:
    if settings.database_url:
        where = redact_url(settings.database_url)
        fix = "check DESKHAND_DATABASE_URL: the server is up, the user may connect and create tables"
    else:
        where, fix = str(settings.db_path), "check DESKHAND_HOME is writable and no other process holds the lock"
    try:
        write_probe(store_location(settings), settings.check_timeout_s)
    except StoreUnavailable as exc:
        return CheckResult("store", False, f"{where}: {exc}", fix)
    return CheckResult("store", True, f"{where} writable")


async def _boxed(name: str, probe: Awaitable, timeout_s: float) -> list[CheckResult]:
    try:
        result = await asyncio.wait_for(probe, timeout_s)
    except TimeoutError:
        return [CheckResult(name, False, f"no answer within {timeout_s:g} s", "is the host reachable?")]
    except Exception as exc:  # a probe that breaks is a ✗, never a crashed check
        return [CheckResult(name, False, type(exc).__name__, "see the log for details")]
    return result if isinstance(result, list) else [result]


async def run_checks(settings: Settings, kb=None) -> list[CheckResult]:
    from bot.readiness import model_configured

    results = [CheckResult("config", True, "settings and tenants file valid")]
    t = settings.check_timeout_s
    probes: list[tuple[str, Awaitable, float]] = []  # (name, probe, backstop timeout)
    if tokens := bot_tokens(settings):
        probes.append(("slack", slack_probes(settings), 2 * t * len(tokens) + t))  # two calls a workspace
    if mail_on(settings):
        probes.append(("smtp relay", smtp_probe(settings), 2 * t))
        if settings.imap_host:
            probes.append(("imap login", imap_probe(settings), 3 * t))
    if model_configured(settings):
        probes.append(("llm", llm_probe(settings), 2 * t))
    # Loading the encoder is local work, not a network wait: it gets a minute on a busy host.
    probes.append(("encoder", asyncio.to_thread(encoder_and_kb, settings, kb), max(60.0, 2 * t)))
    probes.append(("store", asyncio.to_thread(store_probe, settings), 2 * t))
    for found in await asyncio.gather(*(_boxed(name, probe, box) for name, probe, box in probes)):
        results.extend(found)
    return results


def all_ok(results: list[CheckResult]) -> bool:
    return all(r.ok for r in results)


def render_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        lines.append(f"{'✓' if r.ok else '✗'} {r.name:<{width}}  {r.detail}")
        if not r.ok and r.hint:
            lines.append(f"  {'':<{width}}  hint: {r.hint}")
    return "\n".join(lines)


async def log_checks(settings: Settings, kb=None) -> list[CheckResult]:
    """`deskhand run`'s start-up check: one structured log line per check; a ✗ is not fatal."""
    results = await run_checks(settings, kb)
    for r in results:
        (log.info if r.ok else log.warning)("startup_check", check=r.name, ok=r.ok, detail=r.detail, hint=r.hint)
    return results
