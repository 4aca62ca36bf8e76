"""The orchestrator: one explicit state machine per turn, shared by Slack, email and the CLI.

    ROUTE → PLAN → TOOL_LOOP → DRAFT → GUARD → RESPOND
    ends: DONE, AWAITING_APPROVAL, HANDED_OFF, or FAILED (a safe reply plus a ticket)

The envelope is in `inbox` before any of this runs. A turn re-run after a crash finds its
writes already done (idempotency keys) and its reply already stored (one reply per inbox
row, enforced by a unique index), so every message gets exactly one reply.
A message whose turn keeps killing the process is dead-lettered instead of started again
(bot/dead_letters.py). A turn past its tenant's SLA sends what it knows meanwhile, and its
answer later as a follow-up (bot/deadline.py).

Replies leave through the `Surfaces` the wiring gives (`delivering_to`, bot/surfaces.py); a
surface that is absent leaves its turns answered and stored. Before a Slack message is
accepted the orchestrator also decides whose it is (`route`, bot/conversations.py) and
whether it was seen before (`first_delivery`), so that handlers only translate.
The module runs past 400 lines because the state machine, its entry points and its endings
read best together; what a step needs beyond that lives in the companions named above.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import structlog

from bot.abuse_turn import abuse_draft, abuse_plan, acknowledge, flag_inbox
from bot.brain.abuse import classify as classify_abuse
from bot.brain.base import PlanContext, Planner
from bot.brain.drafting import compose, failure_reply
from bot.contracts import MessageEnvelope, PlanStep, utcnow
from bot.conversations import Route, place_dm_message, route_slack_message
from bot.dead_letters import dead_letter, is_poison
from bot.deadline import TurnDeadline
from bot.guards import guard_reply, injection_score
from bot.hands.context import HandContext, MakeHandContext
from bot.hands.errors import HandError
from bot.hands.gate import allowed_tools
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.logs import get_logger
from bot.shadow import is_shadow, record_shadow_turn
from bot.store import ANSWERED, DELIVERED, FAILED, SKIPPED
from bot.surfaces import NO_SURFACES, Surfaces
from bot.turn import CUSTOMER_FIXABLE, Responder, State, Turn, TurnOutcome

log = get_logger("deskhand.turn")



class Orchestrator:
    def __init__(self, *, settings, store, executor, planner: Planner, registry, hand_context: MakeHandContext):
        self.settings = settings
        self.store = store
        self.executor = executor
        self.planner = planner
        self.registry = registry
        self.hand_context = hand_context  # the runtime's: what the hands get (bot/hands/context.py)
        self.surfaces: Surfaces = NO_SURFACES  # where replies go; given by the wiring (`delivering_to`)
        self._session_locks: dict[str, list] = {}  # session id -> [lock, turns holding or waiting]
        self._queue: asyncio.Queue[tuple[str, str]] | None = None
        self.metrics = None  # bot/metrics.py DeskhandMetrics, set by the runtime
        self.deadline = TurnDeadline(self)  # the per-tenant SLA and degrade mode (bot/deadline.py)

    @asynccontextmanager
    async def delivering_to(self, surfaces: Surfaces):
        """Deliver replies through `surfaces`, and ask them who wrote, while the block runs.
        The wiring gives them once (bot/run.py, the CLI, `deskhand mail serve`); surfaces never
        register themselves. Async only so that it chains with the other lifespans."""
        if self.surfaces:
            raise RuntimeError("the orchestrator already delivers to surfaces")
        self.surfaces = surfaces
        try:
            yield self
        finally:
            self.surfaces = NO_SURFACES

    # -- entry points ---------------------------------------------------------------------
    async def route(self, envelope: MessageEnvelope) -> Route:
        """Whose a Slack message is: Deskhand's to answer, a teammate's reply to an email
        customer, or nobody's (bot/conversations.py). Asked before it is accepted."""
        return await route_slack_message(self.store, envelope)

    async def first_delivery(self, keys: list[str], source: str, inbox_id: str | None = None) -> bool:
        """Whether an inbound delivery is new: none of its `keys` were seen (they are claimed
        now), or they were but its message `inbox_id` was never stored (the process stopped
        between the two)."""
        if await self.store.mark_processed_all(keys, source):
            return True
        return inbox_id is not None and await self.store.inbox_get(inbox_id) is None

    async def place(self, envelope: MessageEnvelope) -> MessageEnvelope:
        """The envelope in the conversation it belongs to, decided before it is accepted: a
        Slack DM message may continue the person's open case (bot/conversations.py)."""
        return await place_dm_message(self.store, self.settings, envelope)

    async def accept(self, envelope: MessageEnvelope, *, flags: list[str] | None = None,
                     raw_path: str = "") -> bool:
        """Persist an inbound message and queue it. False if it was already accepted."""
        fresh = await self._intake(envelope, flags=flags, raw_path=raw_path)
        if fresh and self._queue is not None:
            self._queue.put_nowait((envelope.id, envelope.session_id))
        return fresh

    async def handle(self, envelope: MessageEnvelope) -> TurnOutcome:
        """Persist and run one turn now (the CLI path). Idempotent per envelope id."""
        await self._intake(envelope)
        return await self.process(envelope.id)

    async def _intake(self, envelope: MessageEnvelope, **stored: Any) -> bool:
        # The intake's log line, under the correlation id its surface minted: the first line
        # of the message's story; the turn's lines and spans carry the same id.
        fresh = await self.store.inbox_add(envelope, **stored)
        log.info("message_received", correlation_id=envelope.correlation_id, fresh=fresh, **envelope.intake())
        return fresh

    async def process(self, inbox_id: str, session_id: str | None = None) -> TurnOutcome:
        """Run (or finish delivering) one stored message's turn. Turns of one session run one
        at a time; `session_id`, when the caller knows it, saves a read."""
        if session_id is None:
            row = await self.store.inbox_get(inbox_id)
            if row is None:
                raise KeyError(inbox_id)
            session_id = row["session_id"]
        async with self._session_lock(session_id):
            row = await self.store.inbox_get(inbox_id)
            if row is None:
                raise KeyError(inbox_id)
            envelope = MessageEnvelope.model_validate_json(row["envelope"])
            if row["correlation_id"] and row["correlation_id"] != envelope.correlation_id:
                # Stored before envelopes carried their id: keep the one its first run used.
                envelope = envelope.model_copy(update={"correlation_id": row["correlation_id"]})
            with structlog.contextvars.bound_contextvars(correlation_id=envelope.correlation_id):
                if row["status"] in (ANSWERED, DELIVERED, SKIPPED, FAILED) and row["outcome"]:
                    outcome = TurnOutcome.from_row(row)
                    if row["status"] == ANSWERED:
                        await self._deliver(envelope, outcome)
                    return outcome
                if is_poison(row, self.settings.turn_max_attempts):  # it crashed us that often: park it
                    error = await dead_letter(self.store, envelope, row)
                    return await self._fail(Turn(envelope=envelope, correlation_id=envelope.correlation_id,
                                                 error=error))
                return await self._run_turn(envelope)

    @asynccontextmanager
    async def _session_lock(self, session_id: str):
        # One lock per session with a turn running or waiting; dropped when the last one
        # leaves, so the map stays as small as the work in flight.
        entry = self._session_locks.setdefault(session_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._session_locks[session_id]

    async def resume(self) -> list[TurnOutcome]:
        """Finish every turn a previous process left unfinished (called at start-up)."""
        outcomes = []
        for row in await self.store.inbox_unfinished():
            log.info("resume_turn", inbox_id=row["id"], status=row["status"], correlation_id=row["correlation_id"])
            outcomes.append(await self.process(row["id"], row["session_id"]))
        return outcomes

    @asynccontextmanager
    async def running(self, workers: int | None = None):
        """Run queue workers for `accept`ed messages; on exit, drain the queue first."""
        # Unbounded on purpose: the inbox is the durable queue and this only holds ids. A
        # bounded queue would hold up `accept`, and with it Slack's ack, behind the backlog.
        self._queue = asyncio.Queue()
        for row in await self.store.inbox_unfinished():
            self._queue.put_nowait((row["id"], row["session_id"]))
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._worker(), name=f"turn-worker-{i}")
                     for i in range(workers or self.settings.workers)]
            try:
                yield self
                await self._queue.join()
            finally:
                for task in tasks:
                    task.cancel()
        self._queue = None

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            inbox_id, session_id = await self._queue.get()
            try:
                await self.process(inbox_id, session_id)
            except Exception:  # the turn itself already answered safely; this is a bug trail
                log.exception("worker_error", inbox_id=inbox_id)
            finally:
                self._queue.task_done()

    # -- the state machine ----------------------------------------------------------------
    async def _run_turn(self, envelope: MessageEnvelope) -> TurnOutcome:
        identified = await self._identify(envelope)
        turn = Turn(envelope=identified, correlation_id=envelope.correlation_id)  # minted at intake
        steps = {
            State.ROUTE: self._route, State.PLAN: self._plan, State.TOOL_LOOP: self._tool_loop,
            State.DRAFT: self._draft, State.GUARD: self._guard, State.RESPOND: self._respond,
        }
        with structlog.contextvars.bound_contextvars(
            correlation_id=turn.correlation_id, tenant_id=envelope.tenant_id,
            session_id=envelope.session_id, channel=envelope.channel.value,
        ):
            # The identified envelope is stored, so a replay sees what this turn saw.
            await self.store.inbox_start(envelope.id, turn.correlation_id,
                                         envelope=identified if identified is not envelope else None)
            async with self.deadline.watch(turn):  # past the SLA: the degrade reply, meanwhile
                while turn.state in steps:
                    state = turn.state
                    started, started_at = time.perf_counter(), utcnow()
                    try:
                        turn.state = await steps[state](turn)
                    except Exception as exc:  # any crash in a step becomes a safe reply + ticket
                        log.exception("turn_step_failed", state=state.value)
                        turn.error = f"{state.value}: {type(exc).__name__}"
                        turn.state = State.FAILED
                    self._span(turn, state.value, started, started_at)
            try:
                if turn.state == State.FAILED:
                    return await self._fail(turn)
                return await self._finish(turn)
            finally:
                await self.store.trace_many(turn.spans)
                if self.metrics is not None:
                    self.metrics.turn_finished(turn)

    async def _identify(self, envelope: MessageEnvelope) -> MessageEnvelope:
        resolver = self.surfaces.identity(envelope.channel.value)
        if resolver is None or "verified_email" in envelope.metadata:
            return envelope
        try:
            email = await resolver(envelope)
        except Exception:  # not knowing who wrote only means no lookup by email
            log.exception("identity_failed")
            email = None
        return envelope.model_copy(update={"metadata": {**envelope.metadata, "verified_email": email}})

    async def _route(self, turn: Turn) -> State:
        opened = await self.store.open_turn(turn.envelope)
        turn.session, turn.case_state, turn.history = opened["session"], opened["case_state"], opened["history"]
        if turn.session["status"] == HANDED_OFF:
            return State.SILENT
        if self.settings.abuse_filter:  # before any planner, so neither planner nor model sees abuse
            turn.abuse = classify_abuse(turn.envelope.text)
            if turn.abuse.abusive:
                policy = self.settings.policy(turn.envelope.tenant_id)
                allowed = {s.name for s in allowed_tools(policy, self.registry.specs())}
                turn.plan = abuse_plan(turn.abuse, turn.envelope, allowed)
                await flag_inbox(self.store, turn.envelope.id, turn.abuse.category)
                return State.TOOL_LOOP
        return State.PLAN

    async def _plan(self, turn: Turn) -> State:
        env = turn.envelope
        policy = self.settings.policy(env.tenant_id)
        tools = allowed_tools(policy, self.registry.specs())  # the model never sees another tool
        turn.context = PlanContext(envelope=env, history=turn.history, case_state=turn.case_state,
                                   policy=policy, tools=tools, verified_email=env.metadata.get("verified_email"))
        try:
            turn.plan = await self.planner.plan(turn.context)
        finally:
            await self._llm_spans(turn)
        return State.TOOL_LOOP

    async def _tool_loop(self, turn: Turn) -> State:
        plan = turn.plan
        assert plan is not None
        steps, seen = [], set()
        for step in plan.steps:
            key = (step.tool, PlanStep.model_validate(step).model_dump_json())
            if key in seen:
                continue  # an identical repeated call is skipped
            seen.add(key)
            steps.append(step)
        steps = steps[: self.settings.max_tool_calls]
        ctx = self._hand_context(turn)
        # Steps of one plan are independent; they run concurrently.
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.executor.run(step, self._hand_context(turn))) for step in steps]
            turn.running = list(zip(steps, tasks))
        turn.results = [t.result() for t in tasks]
        for step, result in zip(steps, turn.results):
            # A request that is simply wrong (no such order, too large) is explained to the
            # customer; only a failing system hands the conversation to a teammate.
            if (not result.ok and step.on_error == "escalate_to_human" and step.tool != "escalate_to_human"
                    and result.error_kind not in CUSTOMER_FIXABLE
                    and not self.deadline.degraded(turn.envelope.id)):  # degraded: its ticket is open
                escalation = PlanStep(tool="escalate_to_human", args={
                    "reason": f"{step.tool} failed: {result.error_kind}",
                    "transcript_excerpt": turn.envelope.text[:4000]})
                turn.results.append(await self.executor.run(escalation, ctx))
                break
        return State.DRAFT

    async def _draft(self, turn: Turn) -> State:
        if turn.abuse is not None and turn.abuse.abusive:
            turn.draft = abuse_draft(turn.abuse, turn.results)
            return State.GUARD
        assert turn.plan is not None and turn.context is not None
        drafter = getattr(self.planner, "draft", None)
        if drafter is not None:
            try:
                turn.draft = await drafter(turn.plan, turn.results, turn.context)
            finally:
                await self._llm_spans(turn)
        offline = turn.draft is None or turn.plan.planner == "rules"  # the rules planner drafts offline too
        if turn.draft is None:
            turn.draft = compose(turn.plan, turn.results, kb_floor=self.settings.kb_relevance_floor)
        if offline:
            turn.draft = acknowledge(turn.draft, turn.abuse)  # a model's draft sets its own tone
        return State.GUARD

    async def _guard(self, turn: Turn) -> State:
        assert turn.draft is not None
        turn.draft, missing = guard_reply(turn.draft, turn.results)
        if missing:
            log.warning("ungrounded_reply", facts=sorted(missing))
        return State.RESPOND

    async def _respond(self, turn: Turn) -> State:
        draft, plan = turn.draft, turn.plan
        assert draft is not None and plan is not None
        state = dict(turn.case_state)
        state["last_intent"] = plan.intent
        if plan.awaiting:
            state.update(awaiting=plan.awaiting, pending_intent=plan.intent)
        else:
            state.pop("awaiting", None)
            state.pop("pending_intent", None)
        # A clarification that a confident help-centre answer replaced (it cites) was not asked.
        asked = plan.needs_clarification and not plan.awaiting and not draft.citations
        state["clarifications"] = state.get("clarifications", 0) + 1 if asked else 0
        state["offered_human"] = draft.offer_human
        for r in turn.results:
            order_id = (r.data or {}).get("order_id") if r.ok else None
            if order_id:
                state["order_id"] = order_id
        env = turn.envelope
        if not is_shadow(self.settings.policy(env.tenant_id), env.channel.value):  # left as it was
            await self.store.set_case_state(turn.envelope.session_id, turn.envelope.tenant_id, state)
        if draft.handed_off:
            return State.HANDED_OFF
        if draft.pending_action_id:
            return State.AWAITING_APPROVAL
        return State.DONE

    # -- endings ----------------------------------------------------------------------------
    async def _finish(self, turn: Turn) -> TurnOutcome:
        env = turn.envelope
        policy = self.settings.policy(env.tenant_id)
        draft = turn.draft
        outcome = TurnOutcome(
            inbox_id=env.id, session_id=env.session_id, tenant_id=env.tenant_id,
            correlation_id=turn.correlation_id, state=turn.state.value,
            reply=draft.text if draft else None, citations=draft.citations if draft else [],
            offer_human=draft.offer_human if draft else False,
            pending_action_id=draft.pending_action_id if draft else None, plan=turn.plan,
            results=turn.results, shadow=is_shadow(policy, env.channel.value),
        )
        return await self._record_and_deliver(env, outcome)

    async def _fail(self, turn: Turn) -> TurnOutcome:
        env = turn.envelope
        ticket = None  # the reply says a ticket was opened only if one was
        try:
            ctx = self._hand_context(turn)
            ticket = await self.executor.run(PlanStep(tool="create_ticket", args={
                "email": env.metadata.get("verified_email") or "", "subject": f"Deskhand could not answer {env.id}",
                "body": f"{turn.error}\n\n{env.text[:4000]}", "priority": "high"}), ctx)
        except Exception:  # the ticket is best effort; the reply is not
            log.exception("failure_ticket_failed")
        outcome = TurnOutcome(
            inbox_id=env.id, session_id=env.session_id, tenant_id=env.tenant_id,
            correlation_id=turn.correlation_id, state=State.FAILED.value, reply=failure_reply(ticket),
            offer_human=True, plan=turn.plan, results=turn.results,
            shadow=is_shadow(self.settings.policy(env.tenant_id), env.channel.value),
        )
        return await self._record_and_deliver(env, outcome, error=turn.error)

    async def _record_and_deliver(self, env: MessageEnvelope, outcome: TurnOutcome, error: str | None = None) -> TurnOutcome:
        if outcome.shadow:  # recorded for `deskhand report --shadow`, never delivered
            return await record_shadow_turn(self, env, outcome, error)
        if self.deadline.degraded(env.id):  # the customer has the degrade reply: this is the late answer
            return await self.deadline.finish_late(env, outcome, error)
        if outcome.reply is not None:
            stored = await self.store.add_message(
                env.session_id, env.tenant_id, "assistant", outcome.reply, env.id,
                {"citations": [c.model_dump() for c in outcome.citations], "state": outcome.state})
            outcome.reply = stored["text"]  # a reply stored by an earlier run wins
        await self.store.inbox_update(env.id, status=ANSWERED, outcome=outcome.to_json(),
                                      error=error)
        log.info("turn_done", state=outcome.state, intent=outcome.plan.intent if outcome.plan else None)
        await self._deliver(env, outcome)
        return outcome

    async def _deliver(self, env: MessageEnvelope, outcome: TurnOutcome) -> None:
        if outcome.reply is None or outcome.shadow:
            await self.store.inbox_update(env.id, status=SKIPPED)
            return
        responder = self.surfaces.responder(env.channel.value)
        if responder is None:
            return  # stays ANSWERED: whoever asked (CLI `ask`, tests) reads the outcome
        await responder.deliver(env, outcome)
        await self.store.inbox_update(env.id, status=DELIVERED)

    async def notify(self, session_id: str, text: str, **info: Any) -> None:
        """Tell a conversation something outside a turn (an approval's outcome)."""
        session = await self.store.session_get(session_id)
        if session is None:
            return
        if is_shadow(self.settings.policy(session["tenant_id"]), session["channel"]):
            log.info("notice_not_sent_in_shadow", session_id=session_id)  # nothing leaves a shadow surface
            return
        await self.store.add_message(session_id, session["tenant_id"], "assistant", text, None, info)
        responder = self.surfaces.responder(session["channel"])
        if responder is not None:
            await responder.notify(session, text, **info)

    # -- helpers -----------------------------------------------------------------------------
    def _hand_context(self, turn: Turn) -> HandContext:
        env = turn.envelope
        return self.hand_context(
            env.tenant_id, env.session_id, env.user_id, env.channel.value, turn.correlation_id,
            verified_email=env.metadata.get("verified_email"), inbox_id=env.id,
            shadow=is_shadow(self.settings.policy(env.tenant_id), env.channel.value),
        )

    def _span(self, turn: Turn, span: str, started: float, started_at: datetime) -> None:
        duration = (time.perf_counter() - started) * 1000
        data: dict[str, Any] = {"next": turn.state.value}
        if span == State.ROUTE.value:
            data["injection_score"] = injection_score(turn.envelope.text)
            if turn.abuse is not None and (turn.abuse.abusive or turn.abuse.frustrated):
                data.update(abuse=turn.abuse.category, frustrated=turn.abuse.frustrated)
        if span == State.PLAN.value and turn.plan:
            data.update(intent=turn.plan.intent, confidence=turn.plan.confidence,
                        planner=turn.plan.planner, steps=[s.tool for s in turn.plan.steps])
        if span == State.TOOL_LOOP.value:
            data["tools"] = [{"tool": r.tool, "ok": r.ok, "cached": r.cached, "ms": r.cost_ms} for r in turn.results]
        turn.spans.append((turn.correlation_id, turn.envelope.tenant_id, span, duration, data,
                           started_at.isoformat()))

    async def _llm_spans(self, turn: Turn) -> None:
        calls = turn.context.llm_calls if turn.context else []
        while calls:
            call = calls.pop(0)
            started_at = call.pop("started_at", None) or utcnow().isoformat()
            turn.spans.append((turn.correlation_id, turn.envelope.tenant_id, "llm_call",
                               float(call.get("latency_ms", 0.0)), call, started_at))


__all__ = ["Orchestrator", "State", "TurnOutcome", "Responder", "HandError"]
