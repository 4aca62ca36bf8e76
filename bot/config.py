"""Typed configuration: the one place Deskhand reads its settings.

Process-wide settings come from the environment (prefix `DESKHAND_`, plus the standard
`SLACK_*` and `OPENAI_*` names) or a `.env` file. Per-tenant policy comes from a YAML file
(`DESKHAND_TENANTS_FILE`); tenants not listed there get `TenantPolicy()` defaults.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config_errors import ConfigError, load_tenants, settings_error
from bot.brain.pii_regions import DEFAULT_PHONE_REGIONS, phone_region

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = PROJECT_ROOT / "fixtures"
DEFAULT_TENANT = "T_DEMO"
# The scopes the built-in hands declare (bot/hands/tools/), granted to every tenant by default.
BUILTIN_SCOPES = ("kb:read", "orders:read", "tickets:write", "refunds:write", "handoff:write")


class HttpBackendConfig(BaseModel):
    """A team's own shop/helpdesk API (see bot/hands/backends/http.py)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a default
    base_url: str
    token: str = ""
    timeout_s: float = 5.0


class TenantPolicy(BaseModel):
    """Per-team policy. The tenant is the Slack team_id or the mailbox's configured tenant."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a default
    name: str = ""
    support_channel: str = ""
    approvers: list[str] = Field(default_factory=list)
    approver_usergroup: str = ""
    admins: list[str] = Field(default_factory=list)
    # None means every registered tool; otherwise an allow-list.
    allowed_tools: list[str] | None = None
    forbidden_tools: list[str] = Field(default_factory=list)
    # What the tenant grants its tools: a tool whose declared scopes (`@hand(scopes=...)`) are
    # not all here is neither offered nor run (bot/hands/gate.py). The default grants the
    # built-in tools' scopes.
    scopes: list[str] = Field(default_factory=lambda: list(BUILTIN_SCOPES))
    # Shadow mode (bot/shadow.py `is_shadow`): plan and record, never act or post. True means
    # every surface; `shadow_channels` puts only some surfaces in shadow (live in Slack,
    # shadow on email: `shadow_channels: [email]`).
    shadow_mode: bool = False
    shadow_channels: list[Literal["slack", "email", "cli", "web"]] = Field(default_factory=list)
    # Whether raw PII (emails, phones, IBANs, names, addresses, …) may go to a third-party
    # model; when not, bot/brain/pii.py swaps them for per-turn placeholders.
    allow_pii_to_model: bool = False
    # Regions whose national phone formats are recognised ("020 7946 0958" needs GB);
    # numbers written with "+" are recognised whatever the list says.
    pii_phone_regions: list[Annotated[str, AfterValidator(phone_region)]] = Field(
        default_factory=lambda: list(DEFAULT_PHONE_REGIONS), min_length=1)
    # Overrides of the default intent -> tools mapping (DESIGN §4).
    intent_plans: dict[str, list[str]] = Field(default_factory=dict)
    # Senders whose forwarded mail is attributed to the original sender.
    trusted_forwarders: list[str] = Field(default_factory=list)
    backend: HttpBackendConfig | None = None
    # The tenant's own help-article folder; a relative path is resolved against the tenants
    # file's folder (bot/kb_status.py `kb_folder`). None: DESKHAND_KB_DIR.
    kb_dir: Path | None = None
    # Timers (bot/timers.py): a pending refund expires after this many hours; a handoff nobody
    # answered within this many minutes pings the support channel (0: never).
    pending_ttl_hours: float = Field(default=72.0, gt=0)
    handoff_sla_minutes: float = Field(default=30.0, ge=0)
    # The turn deadline (bot/deadline.py): a turn still running this many seconds after it
    # started sends what it knows so far, opens a ticket, and follows up once when done.
    turn_sla_s: float = Field(default=6.0, gt=0)


class SlackTokens(BaseModel):
    """One Slack app's credentials: the bot token (xoxb-), and the app-level token (xapp-) for
    Socket Mode or the app's signing secret for HTTP mode (`slack_mode`)."""

    model_config = ConfigDict(extra="forbid")
    bot_token: str
    app_token: str = ""
    signing_secret: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DESKHAND_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(default=Path(".deskhand"), description="Data directory (SQLite, Chroma, mail).")
    # Derived files that are slow to rebuild and safe to delete (the intent classifier's
    # example vectors). None: <home>/cache. Deskhand writes nothing outside these two.
    cache_dir: Path | None = None
    tenants_file: Path | None = None
    # A PostgreSQL database shared by several workers (postgresql://user:pass@host/db). None:
    # the SQLite file in `home` (bot/store/factory.py picks the store).
    database_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    default_tenant: str = DEFAULT_TENANT
    log_level: str = "INFO"
    log_file: Path | None = None

    # Brain
    planner: Literal["rules", "llm", "auto"] = "rules"
    # Threads that classify, encode and draft (bot/runtime.py): one per core is enough; the
    # encoder's own threads do the rest.
    brain_workers: int = Field(default=2, ge=1)
    clarify_threshold: float = 0.55
    # Use the KB's sentence encoder in the intent classifier (lexical only when False).
    intent_semantic: bool = True
    # Insults, threats, harassment and hate get the neutral reply and a human (bot/abuse_turn.py).
    abuse_filter: bool = True
    max_tool_calls: int = 3
    history_token_budget: int = 1500

    # Hands
    tool_timeout_s: float = 2.0
    breaker_failures: int = 3
    breaker_window_s: float = 60.0
    breaker_cooldown_s: float = 60.0
    rate_per_second: float = 20.0

    # Orchestrator
    # Turns run at once. A turn mostly waits (Slack, the shop, the store thread), so this is
    # well above the core count; turns of one conversation still run one at a time.
    workers: int = 32
    # A turn started this many times without finishing (each crash counts) is not started
    # again: it is dead-lettered, with the safe reply and a ticket (bot/dead_letters.py).
    turn_max_attempts: int = Field(default=3, ge=1)
    # The outbox (every channel: Slack posts, email; bot/outbox_policy.py): a failed delivery
    # is retried after base, 2 x base, … up to max, each wait shortened at random by up to
    # `jitter` of itself; after `outbox_max_attempts` failures it is given up, to `deskhand dlq`.
    outbox_max_attempts: int = Field(default=12, ge=1)
    outbox_backoff_base_s: float = Field(default=5.0, ge=0)
    outbox_backoff_max_s: float = Field(default=900.0, ge=0)
    outbox_backoff_jitter: float = Field(default=0.2, ge=0, lt=1)

    # Slack DMs (bot/conversations.py): a top-level DM message continues the person's latest
    # case there when it is open and had a message at most this many minutes ago, or ...
    dm_case_window_minutes: float = Field(default=30.0, ge=0)
    # ... up to this many hours when the bot asked them a question or a teammate has it.
    dm_question_window_hours: float = Field(default=24.0, ge=0)

    # Knowledge base
    kb_dir: Path = FIXTURES / "kb"
    kb_reload_minutes: float = Field(default=60.0, gt=0)  # the scheduled incremental reload
    kb_stale_hours: float = 24.0 * 7
    kb_encoder: Literal["minilm", "folder", "openai"] = "minilm"
    kb_encoder_path: Path | None = None
    # The model `kb_encoder=openai` asks `/embeddings` for ("" : text-embedding-3-small).
    kb_embedding_model: str = ""
    # Threads of numpy's BLAS for the local encoder (kb_loader/encoder.py `limit_blas_threads`);
    # one is fastest on two cores. 0 leaves numpy's own choice.
    kb_blas_threads: int = Field(default=1, ge=0)
    # What runs a local (minilm/folder) encoder: onnxruntime on a graph built from the weights
    # and cached under cache_path (kb_loader/onnx_encoder.py), its int8 variant, or numpy.
    # The onnx ones fall back to numpy, with a warning, when they cannot load. onnx is the
    # default: the same vectors as numpy, about 2x the throughput (README, Benchmarks); int8
    # is faster still but moves vectors by ~0.007 cosine.
    kb_encoder_runtime: Literal["numpy", "onnx", "onnx-int8"] = "onnx"
    kb_relevance_floor: float = 0.3
    # The nightly golden eval in `deskhand run` (bot/kb_lifecycle.py), a crontab line in UTC.
    eval_cron: str = "0 3 * * *"
    eval_at_start: bool = False  # also run it once as `deskhand run` starts (after a deploy)

    # Timers: how often refund expiries and handoff SLAs are checked (also once at start).
    timers_interval_s: float = Field(default=60.0, gt=0)

    # LLM planner (any OpenAI-compatible server)
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        validation_alias=AliasChoices("DESKHAND_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
    )
    openai_api_key: str = Field(
        default="", validation_alias=AliasChoices("DESKHAND_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    llm_small_model: str = "gpt-4o-mini"
    llm_large_model: str = "gpt-4o"
    llm_fallback_model: str = "gpt-4o-mini"
    llm_mode: Literal["tools", "json"] = "tools"
    llm_timeout_s: float = 8.0
    llm_large_threshold: float = 0.6
    # USD per million tokens (input, output) by model name, for the cost in `llm_call` spans
    # and `deskhand report`. Models not listed (a local server) cost 0.
    llm_prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: {
        "gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00)})

    # Slack
    slack_bot_token: str = Field(
        default="", validation_alias=AliasChoices("DESKHAND_SLACK_BOT_TOKEN", "SLACK_BOT_TOKEN")
    )
    slack_app_token: str = Field(
        default="", validation_alias=AliasChoices("DESKHAND_SLACK_APP_TOKEN", "SLACK_APP_TOKEN")
    )
    # More workspaces, one Slack app each (every app created from manifest.yml), as JSON:
    # DESKHAND_SLACK_WORKSPACES='[{"bot_token": "xoxb-…", "app_token": "xapp-…"}]'
    # (in HTTP mode "signing_secret" instead of "app_token").
    slack_workspaces: list[SlackTokens] = Field(default_factory=list)
    slack_api_url: str = "https://slack.com/api/"
    # Socket Mode keepalive: a dropped socket is noticed and replaced within about this long.
    slack_ping_interval_s: float = Field(default=10.0, gt=0)
    # How Slack reaches Deskhand: "socket" (Socket Mode: Deskhand dials out, needs the xapp-
    # token) or "http" (Slack POSTs to a Request URL, /slack/events, on slack_http_host:port;
    # each request is checked against the app's signing secret; bot/slack/request_url.py).
    slack_mode: Literal["socket", "http"] = "socket"
    slack_signing_secret: str = Field(
        default="", validation_alias=AliasChoices("DESKHAND_SLACK_SIGNING_SECRET", "SLACK_SIGNING_SECRET")
    )
    # Behind a load balancer or in a container, bind 0.0.0.0. Port 0 takes a free port; the
    # bound port is written to <home>/slack_http.port either way.
    slack_http_host: str = "127.0.0.1"
    slack_http_port: int = Field(default=3000, ge=0, le=65535)

    # Ops endpoints of `deskhand run` (/healthz, /readyz, /metrics; docs/operations.md).
    # Port 0 takes a free port; the bound port is written to <home>/ops.port either way.
    ops_enabled: bool = True
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9469, ge=0, le=65535)
    # What /readyz requires to say 200; the other checks are reported ("degraded") only.
    ops_ready_requires: list[Literal["slack", "store", "kb", "model", "breakers"]] = Field(
        default_factory=lambda: ["slack", "store"])
    ops_model_probe_s: float = Field(default=60.0, gt=0)  # how often /readyz's model probe refreshes
    # `deskhand check` (bot/check.py): how long each probe may take before it counts as a ✗.
    check_timeout_s: float = Field(default=5.0, gt=0)

    # Mail bridge
    smtp_enabled: bool = False
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_recipients: list[str] = Field(default_factory=lambda: ["support@deskhand.example"])
    mail_tenant: str = DEFAULT_TENANT
    mail_from: str = "support@deskhand.example"
    mail_max_bytes: int = 10 * 1024 * 1024
    relay_host: str = "127.0.0.1"
    relay_port: int = 2525
    relay_starttls: bool = False
    relay_username: str = ""
    relay_password: str = ""
    imap_host: str = ""
    imap_port: int = 993
    imap_username: str = ""
    imap_password: str = ""
    imap_ssl: bool = True  # TLS from the first byte (IMAPS, usually port 993)
    imap_poll_s: float = 60.0

    @property
    def db_path(self) -> Path:
        return self.home / "deskhand.db"

    @property
    def shop_db_path(self) -> Path:
        return self.home / "shop.db"

    @property
    def cache_path(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @cached_property
    def tenants(self) -> dict[str, TenantPolicy]:
        if not self.tenants_file:
            default = FIXTURES / "tenants.yml"
            path = default if default.exists() else None
        else:
            path = self.tenants_file
        if path is None:
            return {}
        return load_tenants(Path(path), TenantPolicy)  # strict: see bot/config_errors.py

    def policy(self, tenant_id: str) -> TenantPolicy:
        return self.tenants.get(tenant_id) or TenantPolicy()


def load_settings(**overrides) -> Settings:
    """The settings, validated now (tenants file included): any problem is a `ConfigError`."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc, Settings) from None
    settings.tenants  # noqa: B018 - read eagerly, so a broken tenants file stops every command at start
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"DESKHAND_HOME {settings.home}: cannot create it ({exc.strerror or exc})") from None
    return settings
