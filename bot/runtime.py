"""One lifespan owns every resource: `async with open_runtime(settings) as rt:`.

It opens SQLite, the demo shop (or a team's HTTP backends), the knowledge base, the hands
and the brain, wires the orchestrator, and closes all of it on exit. Surfaces (Slack, the
mail bridge, the CLI) are given a runtime; they never build these pieces themselves.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.brain.base import Planner
from bot.config import FIXTURES, Settings, load_settings
from bot.contracts import PendingAction, PlanStep, ToolResult
from bot.hands import approvals
from bot.hands.backends.base import Backends
from bot.hands.backends.http import HttpBackend
from bot.hands.backends.sqlite_demo import DemoShop
from bot.hands.breaker import BreakerBoard
from bot.hands.context import HandContext
from bot.hands.executor import HandsExecutor
from bot.hands.gate import PolicyGate
from bot.hands.registry import ToolRegistry, default_registry
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.logs import get_logger
from bot.metrics import DeskhandMetrics
from bot.orchestrator import Orchestrator
from bot.store import AsyncStore
from bot.store.factory import open_store, store_location

if TYPE_CHECKING:
    from kb_loader import KnowledgeBase

log = get_logger("deskhand.runtime")


def intent_classifier(settings: Settings):
    """The rules planner's classifier: lexical plus the KB's sentence encoder when it loads."""
    from bot.brain.intents import IntentClassifier

    encoder = None
    if settings.intent_semantic:
        try:
            from kb_loader.encoder import get_encoder

            encoder = get_encoder(settings)
        except Exception as exc:  # no encoder: the lexical classifier alone still works
            log.warning("intent_encoder_unavailable", error=str(exc))
    return IntentClassifier.default(encoder, cache_dir=settings.cache_path)


def build_planner(settings: Settings, registry: ToolRegistry, brain: Executor | None = None) -> Planner:
    from bot.brain.rules import RulesPlanner

    rules = RulesPlanner(intent_classifier(settings), clarify_threshold=settings.clarify_threshold,
                         kb_floor=settings.kb_relevance_floor, brain=brain)
    if settings.planner == "rules":
        return rules
    from bot.brain.llm import build_llm_planner  # only imported when asked for

    return build_llm_planner(settings, registry, fallback=rules)


def open_kb(settings: Settings) -> KnowledgeBase | None:
    """The tenant knowledge bases, or None when the KB package cannot be used here."""
    try:
        from kb_loader import KnowledgeBase
    except ImportError:
        return None
    return KnowledgeBase.from_settings(settings)


@dataclass
class Runtime:
    settings: Settings
    store: AsyncStore
    registry: ToolRegistry
    executor: HandsExecutor
    orchestrator: Orchestrator
    shop: DemoShop
    gate: PolicyGate  # which tools a tenant may use, and who may approve (bot/hands/gate.py)
    kb: KnowledgeBase | None = None
    metrics: DeskhandMetrics | None = None  # /metrics (bot/ops_http.py)
    kb_lifecycle: Any = None  # bot/kb_lifecycle.py KBLifecycle, in `deskhand run`
    _http_backends: dict[str, Backends] = field(default_factory=dict)

    def backends_for(self, tenant_id: str) -> Backends:
        policy = self.settings.policy(tenant_id)
        if policy.backend is None:
            return Backends(orders=self.shop, tickets=self.shop, refunds=self.shop)
        if tenant_id not in self._http_backends:
            http = HttpBackend(policy.backend.base_url, policy.backend.token, policy.backend.timeout_s)
            self._http_backends[tenant_id] = Backends(orders=http, tickets=http, refunds=http)
        return self._http_backends[tenant_id]

    def hand_context(self, tenant_id: str, session_id: str, user_id: str, channel: str, correlation_id: str, *,
                     verified_email: str | None = None, inbox_id: str | None = None, shadow: bool = False,
                     store: AsyncStore | None = None) -> HandContext:
        """The one way a `HandContext` is made (bot/hands/context.py `MakeHandContext`)."""
        return HandContext(
            tenant_id=tenant_id, session_id=session_id, user_id=user_id, channel=channel,
            correlation_id=correlation_id, policy=self.settings.policy(tenant_id),
            backends=self.backends_for(tenant_id), store=store or self.store, kb=self.kb,
            verified_email=verified_email, inbox_id=inbox_id, shadow=shadow,
        )

    def context_for_action(self, action: PendingAction) -> HandContext:
        return self.hand_context(action.tenant_id, action.session_id, action.requested_by, "approval",
                                 f"approval-{action.id}")

    async def close_backends(self) -> None:
        for backends in self._http_backends.values():
            await backends.close()

    async def decide(self, action_id: str, decider: str, approve: bool) -> approvals.Decision:
        """Approve or reject a pending action, then tell the customer's conversation. Who is an
        approver is the gate's answer, on every surface."""
        decision = await approvals.decide(
            action_id, decider, approve, store=self.store, executor=self.executor,
            make_context=self.context_for_action, is_approver=self.gate.is_approver,
        )
        # A failed execution is not told: the request is pending again, and the customer hears
        # when it is approved, rejected, or expires.
        if decision.status in ("approved", "rejected") and decision.action:
            await self.orchestrator.notify(decision.action.session_id, customer_notice(decision),
                                           action_id=action_id, decision=decision.status)
        return decision

    async def hand_off(self, session_id: str, user_id: str, reason: str, trigger: str) -> ToolResult | None:
        """Hand a conversation to a human outside a turn (a "Talk to a human" button), through
        the same escalate_to_human hand a turn uses. `trigger` names the click, so a redelivered
        click is the same handoff. None if there is no such session."""
        session = await self.store.session_get(session_id)
        if session is None:
            return None
        tenant_id = session["tenant_id"]
        history = await self.store.history(session_id, 12)
        excerpt = "\n".join(f"{m['role']}: {m['text']}" for m in history)[-4000:]
        ctx = self.hand_context(tenant_id, session_id, user_id, session["channel"], f"handoff-{trigger}"[:64],
                                inbox_id=trigger)
        return await self.executor.run(PlanStep(tool="escalate_to_human", args={
            "reason": reason[:500], "transcript_excerpt": excerpt}), ctx)

    async def hand_back(self, session_id: str, user_id: str) -> bool:
        """Return a handed-off conversation to the bot. False if it was not handed off."""
        session = await self.store.session_get(session_id)
        if session is None or session["status"] != HANDED_OFF:
            return False
        await self.store.session_update(session_id, status="active")
        await self.store.audit(session["tenant_id"], user_id, "handback", session_id)
        return True

    async def ensure_kb(self, tenant_id: str) -> None:
        """Index the tenant's KB folder (bot/kb_status.py `kb_folder`) the first time it has no index."""
        from bot.kb_status import kb_folder

        folder = kb_folder(self.settings, tenant_id)
        if self.kb is None or not folder.exists():
            return
        status = await asyncio.to_thread(self.kb.status, tenant_id)
        if status.chunks == 0:
            await asyncio.to_thread(self.kb.reload, tenant_id, folder)

    async def kb_state(self, tenant_id: str):
        """The tenant's KB facts (bot/kb_status.py), with the live scheduler's next run."""
        from bot.kb_status import kb_state

        if self.kb_lifecycle is not None:
            return await asyncio.to_thread(self.kb_lifecycle.state, tenant_id)
        return await asyncio.to_thread(kb_state, self.settings, self.kb, tenant_id)


def customer_notice(decision: approvals.Decision) -> str:
    action = decision.action
    assert action is not None
    order = action.args.get("order_id", "")
    if decision.status == "approved" and decision.result and decision.result.ok:
        data = decision.result.data or {}
        return (f"Good news: your refund of {data.get('amount', 0):.2f} for order {data.get('order_id', order)} "
                f"was approved ({data.get('refund_id', '')}). It goes back to your original payment method.")
    return (f"A teammate reviewed the refund request for order {order} and couldn't approve it. "
            "They'll follow up with you about other options.")


@asynccontextmanager
async def open_runtime(settings: Settings | None = None, *, planner: Planner | None = None,
                       registry: ToolRegistry | None = None, clock=None):
    settings = settings or load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    # Each resource is registered as soon as it is open, so whatever fails later (a corrupt
    # shop file, a planner setting the HTTP client refuses) closes what was already open, in
    # reverse order; so does the end of the block.
    async with AsyncExitStack() as resources:
        # SQLite in `home`, or PostgreSQL when DESKHAND_DATABASE_URL is set: the same methods.
        store = await resources.enter_async_context(open_store(settings))
        shop = DemoShop(settings.shop_db_path, FIXTURES / "shop.json")
        resources.push_async_callback(shop.close)
        registry = registry or default_registry()
        breaker_args = dict(failures_to_open=settings.breaker_failures, window_s=settings.breaker_window_s,
                            cooldown_s=settings.breaker_cooldown_s)
        if clock is not None:
            breaker_args["clock"] = clock
        executor = HandsExecutor(
            registry, default_timeout_s=settings.tool_timeout_s, default_rate_per_s=settings.rate_per_second,
            breakers=BreakerBoard(**breaker_args), **({"clock": clock} if clock else {}),
        )
        kb = open_kb(settings)
        if kb is not None:
            resources.callback(kb.close)
        # A planner built here is closed here (the LLM planner's HTTP client); one passed in
        # belongs to the caller.
        if planner is None:
            # Classifying, encoding and drafting run on these threads, never on the event loop,
            # so acks and other turns do not wait on the encoder; bounded, so a burst of
            # messages queues here instead of starting a thread each.
            brain = resources.enter_context(ThreadPoolExecutor(settings.brain_workers, "deskhand-brain"))
            planner = build_planner(settings, registry, brain)
            if hasattr(planner, "aclose"):
                resources.push_async_callback(planner.aclose)
        rt = Runtime(settings=settings, store=store, registry=registry, executor=executor,
                     orchestrator=None, shop=shop, kb=kb,  # type: ignore[arg-type]
                     gate=PolicyGate(settings.policy, registry, store))
        resources.push_async_callback(rt.close_backends)
        rt.orchestrator = Orchestrator(
            settings=settings, store=store, executor=executor, planner=planner, registry=registry,
            hand_context=rt.hand_context,
        )
        rt.metrics = rt.orchestrator.metrics = executor.metrics = DeskhandMetrics(store_location(settings), executor.breakers)
        yield rt
