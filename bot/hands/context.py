"""What a hand may use: passed in, never global (see bot/hands/executor.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.config import TenantPolicy
from bot.hands.backends.base import Backends


@dataclass
class HandContext:
    tenant_id: str
    session_id: str
    user_id: str
    channel: str
    correlation_id: str
    policy: TenantPolicy
    backends: Backends
    store: Any  # bot.store.AsyncStore
    kb: Any = None  # kb_loader.KnowledgeBase, or None when no KB is configured
    # The address this customer is proven to own (email sender, Slack profile), if any.
    verified_email: str | None = None
    # True only when a teammate approved this exact call (see bot/hands/approvals.py).
    approved: bool = False
    inbox_id: str | None = None
    # A shadow turn (bot/shadow.py): the executor runs reads and only describes writes.
    shadow: bool = False
    attempt: int = 0
    extra: dict = field(default_factory=dict)
