"""The turn deadline and degrade mode: an answer the customer is not kept waiting for.

Each tenant has an end-to-end SLA (`turn_sla_s` in its policy, 6 s by default), counted from
the start of the turn. A turn still running when it passes is *degraded*:

1. The customer gets what is known so far (the help-centre answer when `search_kb` returned
   while `get_order_status` still waits; otherwise an honest holding line) and "We're
   checking further and will follow up here." It is the message's one assistant reply: it
   replaces Slack's placeholder, or is the email's reply.
2. A ticket is opened through the Hands (`create_ticket`, idempotent per message).
3. The turn goes on in the background: its tools keep their own timeouts and retries.
4. When it ends with an answer, that answer is the *late answer*, stored with its own role
   (`assistant_late`, one per message by the same unique index as every reply) and delivered
   once: a new message in the Slack thread under the degrade reply (so the customer is
   notified and both stay readable), or one follow-up email. A turn whose systems failed
   after all sends nothing more: the degrade reply already said a teammate follows up, and
   the ticket is theirs.

Exactly once across crashes: the degrade reply is stored before it is sent and a re-run turn
finds it (and sends it only if the crash came before it was sent, and opens no second
ticket: the ticket's key is the message's); the late answer is stored
before it is queued, and queued under the key `late:<inbox id>`, so a re-run sends nothing new.
The inbox row stays `processing` until the late answer is queued, so a crash before that
re-runs the turn at the next start.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from bot.brain.drafting import Draft, compose
from bot.contracts import Citation, MessageEnvelope, PlanStep, ToolResult, utcnow
from bot.guards import guard_reply
from bot.logs import get_logger
from bot.shadow import is_shadow
from bot.store import ANSWERED, DELIVERED
from bot.turn import CUSTOMER_FIXABLE, Turn, TurnOutcome

if TYPE_CHECKING:
    from bot.orchestrator import Orchestrator

log = get_logger("deskhand.deadline")

DEGRADED = "DEGRADED"  # the state stored with a degrade reply
LATE_ROLE = "assistant_late"  # the transcript role of a late answer
FOLLOW_UP = "We're checking further and will follow up here."
HOLDING = "This is taking a little longer than usual."
READS = {"search_kb", "get_order_status"}  # what a degrade reply may quote before the turn ends


def sent_key(inbox_id: str) -> str:
    """Session-metadata key set once a message's degrade reply has been handed to its surface."""
    return f"degrade_sent:{inbox_id}"


def degrade_text(known: Draft | None) -> str:
    return f"{known.text} {FOLLOW_UP}" if known else f"{HOLDING} {FOLLOW_UP}"


def known_so_far(turn: "Turn", kb_floor: float) -> Draft | None:
    """A draft from the tool results that are in (finished reads that succeeded), or None
    when there is nothing worth saying yet."""
    if turn.plan is None:
        return None
    results = turn.results or [task.result() for _, task in turn.running
                               if task.done() and not task.cancelled() and task.exception() is None]
    known = [r for r in results if r.ok and r.tool in READS]
    if not known:
        return None
    draft, _ = guard_reply(compose(turn.plan, known, kb_floor=kb_floor), known)
    return None if draft.offer_human else draft  # "not certain" is no better than the holding line


def late_answer_useful(outcome: "TurnOutcome") -> bool:
    """Whether the finished turn has something to tell the customer beyond the degrade reply."""
    if outcome.reply is None or outcome.state == "FAILED":
        return False
    return all(r.ok or r.error_kind in CUSTOMER_FIXABLE for r in outcome.results)


class TurnDeadline:
    """The orchestrator's deadline keeper (`Orchestrator.deadline`)."""

    def __init__(self, orchestrator: "Orchestrator"):
        self.orch = orchestrator
        self._late: set[str] = set()  # inbox ids of degraded turns still running

    def degraded(self, inbox_id: str) -> bool:
        return inbox_id in self._late

    @asynccontextmanager
    async def watch(self, turn: "Turn"):
        """Around a turn's steps: past the tenant's SLA, send the degrade reply alongside them."""

        env = turn.envelope
        policy = self.orch.settings.policy(env.tenant_id)
        # A shadow turn sends nothing, late or not; a caller with no surface (`deskhand ask`,
        # the eval) reads the outcome itself and waits for the whole turn.
        if is_shadow(policy, env.channel.value) or self.orch.surfaces.responder(env.channel.value) is None:
            yield
            return
        earlier = await self.orch.store.message_for(env.id, "assistant")
        if earlier is not None:
            if earlier["metadata"].get("state") == DEGRADED:  # a re-run after a crash: it is stored
                self._late.add(env.id)
                session = await self.orch.store.session_get(env.session_id) or {"metadata": {}}
                if not session["metadata"].get(sent_key(env.id)):  # the crash came before it was sent
                    await self._deliver_degrade(turn, earlier["text"], earlier["metadata"].get("citations", []))
                await self._open_ticket(turn)  # in case the crash came before it (idempotent)
            yield
            return
        timer = asyncio.create_task(self._degrade_at(turn, policy.turn_sla_s), name=f"deadline-{env.id}")
        try:
            yield
        except BaseException:  # the turn is torn down (a shutdown): so is its degrade
            timer.cancel()
            raise
        if self.degraded(env.id):
            await timer  # the degrade reply goes out before the late answer
        else:
            timer.cancel()

    async def _degrade_at(self, turn: "Turn", sla_s: float) -> None:
        await asyncio.sleep(max(0.0, sla_s - (time.perf_counter() - turn.started)))
        env = turn.envelope
        self._late.add(env.id)  # before any await: the turn's ending now takes the late path
        started, started_at = time.perf_counter(), utcnow().isoformat()
        span: dict = {"sla_s": sla_s, "during": turn.state.value}
        try:
            span["known"] = await self._send_degrade_reply(turn)
            span["reply_ms"] = round((time.perf_counter() - started) * 1000, 1)
            log.info("turn_degraded", **span)
            span["ticket_ok"] = (await self._open_ticket(turn)).ok
        except Exception:  # the turn itself goes on; its late answer still reaches the customer
            log.exception("degrade_failed")
        # In the turn's trace (`deskhand trace`) and the deskhand_turns_degraded metric.
        turn.spans.append((turn.correlation_id, env.tenant_id, "DEGRADE",
                           (time.perf_counter() - started) * 1000, span, started_at))

    async def _send_degrade_reply(self, turn: "Turn") -> bool:
        """Store, then deliver the degrade reply; True when it quotes something already known."""
        env = turn.envelope
        known = known_so_far(turn, self.orch.settings.kb_relevance_floor)
        citations = [c.model_dump() for c in known.citations] if known else []
        stored = await self.orch.store.add_message(
            env.session_id, env.tenant_id, "assistant", degrade_text(known), env.id,
            {"citations": citations, "state": DEGRADED})
        await self._deliver_degrade(turn, stored["text"], citations)
        return known is not None

    async def _deliver_degrade(self, turn: "Turn", text: str, citations: list[dict]) -> None:

        env = turn.envelope
        outcome = TurnOutcome(
            inbox_id=env.id, session_id=env.session_id, tenant_id=env.tenant_id,
            correlation_id=turn.correlation_id, state=DEGRADED, reply=text,
            citations=[Citation(**c) for c in citations], plan=turn.plan)
        responder = self.orch.surfaces.responder(env.channel.value)
        assert responder is not None  # `watch` degrades only turns with a surface
        await responder.deliver(env, outcome)
        await self.orch.store.session_update(env.session_id, **{sent_key(env.id): True})

    async def _open_ticket(self, turn: "Turn") -> ToolResult:
        env = turn.envelope
        step = PlanStep(tool="create_ticket", args={
            "email": env.metadata.get("verified_email") or "",
            "subject": f"Follow up: Deskhand's answer to {env.id} is late",
            "body": f"The turn passed its SLA; the customer was told we follow up.\n\n{env.text[:4000]}",
            "priority": "high"})
        result = await self.orch.executor.run(step, self.orch._hand_context(turn))
        if not result.ok:
            log.warning("degrade_ticket_failed", error_kind=result.error_kind)
        return result

    # -- the late answer ---------------------------------------------------------------------
    async def finish_late(self, env: MessageEnvelope, outcome: "TurnOutcome",
                          error: str | None = None) -> "TurnOutcome":
        """The ending of a degraded turn: store and deliver its answer once, as a follow-up."""

        orch, inbox_id = self.orch, env.id
        self._late.discard(inbox_id)
        await orch.store.session_update(env.session_id, **{sent_key(inbox_id): None})  # done with it
        responder = orch.surfaces.responder(env.channel.value)
        if late_answer_useful(outcome):
            stored = await orch.store.add_message(
                env.session_id, env.tenant_id, LATE_ROLE, outcome.reply or "", env.id,
                {"citations": [c.model_dump() for c in outcome.citations], "state": outcome.state})
            outcome.reply = stored["text"]  # a late answer stored by an earlier run wins
            if responder is not None:
                await self._follow_up(responder, env, outcome)
            log.info("late_answer_sent", state=outcome.state)
        else:
            log.info("late_answer_withheld", state=outcome.state, error=error)
            outcome.reply = None
        await orch.store.inbox_update(inbox_id, status=DELIVERED if responder is not None else ANSWERED,
                                      outcome=outcome.to_json(), error=error)
        return outcome

    async def _follow_up(self, responder, env: MessageEnvelope, outcome: "TurnOutcome") -> None:
        follow_up = getattr(responder, "follow_up", None)
        if follow_up is not None:
            await follow_up(env, outcome)
            return
        session = await self.orch.store.session_get(env.session_id)
        if session is not None:
            await responder.notify(session, outcome.reply or "", key=f"late:{env.id}")
