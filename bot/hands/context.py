"""What a hand may use: passed in, never global (see bot/hands/executor.py).

Every `HandContext` is made by one function, the runtime's `hand_context` (bot/runtime.py),
which `MakeHandContext` describes: a turn, an approval, a handoff button, the mail bridge and
a replay all ask it, so where a hand's policy, backends, store and knowledge base come from
is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bot.config import TenantPolicy
from bot.hands.backends.base import Backends

if TYPE_CHECKING:
    from bot.store import AsyncStore
    from kb_loader import KnowledgeBase


@dataclass
class HandContext:
    tenant_id: str
    session_id: str
    user_id: str
    channel: str
    correlation_id: str
    policy: TenantPolicy
    backends: Backends
    store: AsyncStore
    kb: KnowledgeBase | None = None  # None when the KB package cannot be used here
    # The address this customer is proven to own (email sender, Slack profile), if any.
    verified_email: str | None = None
    # True only when a teammate approved this exact call (see bot/hands/approvals.py).
    approved: bool = False
    inbox_id: str | None = None
    # A shadow turn (bot/shadow.py): the executor runs reads and only describes writes.
    shadow: bool = False
    attempt: int = 0
    extra: dict = field(default_factory=dict)


class MakeHandContext(Protocol):
    """The runtime's `hand_context`: the context for one call on behalf of `user_id`. `store`
    replaces the runtime's store (a replay's read-only one)."""

    def __call__(self, tenant_id: str, session_id: str, user_id: str, channel: str, correlation_id: str, *,
                 verified_email: str | None = None, inbox_id: str | None = None, shadow: bool = False,
                 store: AsyncStore | None = None) -> HandContext: ...
