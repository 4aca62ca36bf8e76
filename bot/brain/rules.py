"""The rules planner: the offline default. Regex first, then the intent classifier, then
the tenant's intent → plan mapping. Multi-turn through the case state: a question it asks
("which order number?") is remembered, and the next message fills it."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import Executor
from functools import partial

from bot.brain import policy
from bot.brain.base import PlanContext
from bot.brain.extract import extract, is_bare_reference
from bot.brain.intents import IntentClassifier
from bot.brain.drafting import Draft, compose
from bot.contracts import BrainPlan, OnError, PlanStep, ToolResult

ASK_ORDER_ID = "Which order number is this about? You will find it in your order confirmation email."
CLARIFY = ("I want to make sure I get this right. Could you tell me a bit more? I can help with "
           "orders, deliveries, refunds, invoices, payments and account questions.")
# A clause that asks how something works ("how do i track it", "can I still cancel it?"),
# beside the request itself ("where is my order?"): the help centre may answer it meanwhile.
_HOW_TO = re.compile(r"(?:^|[?.!,;]|\band\b)\s*(how|can|could|what|when|why|do|does|is it|will|should)\b", re.I)
# "what's your phone number?", "when are you open?": a question for a fact about the support
# team, which the help centre states, unlike "how do I contact customer service?", which asks
# for a person.
_ASKS_FOR_DETAIL = re.compile(r"^\W*(what|what's|whats|when|where|which)\b", re.I)
_YES = re.compile(r"^\W*(yes|yeah|yep|sure|please|ok(ay)?|y|human|agent|a human|person|a person)\b[\w\s!.,]*$", re.I)


class RulesPlanner:
    name = "rules"

    def __init__(self, classifier: IntentClassifier | None = None, clarify_threshold: float = 0.55,
                 kb_floor: float = 0.3, brain: Executor | None = None):
        self.classifier = classifier or IntentClassifier.default()
        self.clarify_threshold = clarify_threshold
        self.kb_floor = kb_floor
        # Where planning and drafting run (the runtime's bounded "deskhand-brain" threads):
        # both may encode text. None: on the caller's thread.
        self.brain = brain

    async def draft(self, plan: BrainPlan, results: list[ToolResult], context: PlanContext) -> Draft:
        """The template reply, its help-centre passages scored with the classifier's encoder
        (the KB's own) when it has one."""
        return await self._on_brain(partial(compose, plan, results, kb_floor=self.kb_floor,
                                            encoder=self.classifier.encoder))

    async def plan(self, context: PlanContext) -> BrainPlan:
        return await self._on_brain(partial(self.plan_sync, context))

    async def _on_brain(self, work):
        if self.brain is None:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self.brain, work)

    def plan_sync(self, context: PlanContext) -> BrainPlan:
        text = context.text
        state = context.case_state
        entities = extract(text)
        order_id = entities.order_id

        # 1. An answer to the question we asked last turn.
        if state.get("awaiting") == "order_id" and order_id:
            return self._plan_for(state["pending_intent"], 0.95, context, order_id)
        if state.get("offered_human") and _YES.match(text.strip()):
            return self._plan_for("contact_human_agent", 0.95, context, order_id)

        # 2. A bare order reference with nothing pending reads as "what's up with this order?"
        if order_id and is_bare_reference(text, entities):
            return self._plan_for("track_order", 0.8, context, order_id)

        # 3. The classifier.
        guess = self.classifier.classify(text)
        if guess.intent == policy.OUT_OF_SCOPE or guess.confidence < self.clarify_threshold:
            # Unsure of the intent, but the help centre may still answer it ("Do you take
            # American Express?"): the Hands search, and the drafter answers only from a
            # confident passage; otherwise the question (or the offer of a human) stands.
            search = self._kb_search(context)
            if state.get("clarifications", 0) >= 1:
                return BrainPlan(intent=policy.OUT_OF_SCOPE, confidence=guess.confidence, offer_human=True,
                                 steps=search, kb_answer_if_confident=bool(search))
            return BrainPlan(intent=guess.intent, confidence=guess.confidence, steps=search,
                             needs_clarification=True, clarification_question=CLARIFY,
                             kb_answer_if_confident=bool(search))
        # Follow-ups may lean on the order the conversation is already about.
        return self._plan_for(guess.intent, guess.confidence, context, order_id or state.get("order_id"))

    @staticmethod
    def _kb_search(context: PlanContext) -> list[PlanStep]:
        if "search_kb" not in context.allowed_tool_names():
            return []
        return [PlanStep(tool="search_kb", args={"query": context.text[:2000]})]

    def _plan_for(self, intent: str, confidence: float, context: PlanContext, order_id: str | None) -> BrainPlan:
        tools = policy.tools_for(intent, context.policy.intent_plans)
        offered = context.allowed_tool_names()
        allowed = [t for t in tools if t in offered]
        if intent in policy.NEEDS_ORDER_ID and not order_id:
            if intent in policy.ORDER_LOOKUP and context.verified_email and "get_order_status" in allowed:
                return BrainPlan(intent=intent, confidence=confidence, steps=[
                    PlanStep(tool="get_order_status", args={"email": context.verified_email})])
            # A question about a request ("can I cancel my order for free?") is answered from
            # the help centre, when it answers confidently, while we ask for the order.
            # So is a how-to question inside an order request ("where is my order? how do i
            # track it"), whatever the intent's own plan.
            asks_how = _HOW_TO.search(context.text) is not None
            search = self._kb_search(context) if "search_kb" in allowed or asks_how else []
            return BrainPlan(intent=intent, confidence=confidence, needs_clarification=True,
                             clarification_question=ASK_ORDER_ID, awaiting="order_id",
                             steps=search, kb_answer_if_confident=bool(search))
        if intent == "contact_customer_service" and _ASKS_FOR_DETAIL.match(context.text):
            # Answered from the help centre when it states the fact confidently; otherwise a
            # human is offered, as for any question the help centre cannot answer.
            search = self._kb_search(context)
            if search:
                return BrainPlan(intent=intent, confidence=confidence, steps=search, offer_human=True,
                                 kb_answer_if_confident=True)
        steps = [self._step(tool, intent, context, order_id) for tool in allowed]
        return BrainPlan(intent=intent, confidence=confidence, steps=steps)

    def _step(self, tool: str, intent: str, context: PlanContext, order_id: str | None) -> PlanStep:
        text = context.text
        if tool == "get_order_status":
            return PlanStep(tool=tool, args={"order_id": order_id}, on_error=OnError.ask_user)
        if tool == "process_refund":
            amounts = extract(text).amounts
            args = {"order_id": order_id, "reason": text[:500]}
            if amounts:
                args["amount"] = amounts[0]
            return PlanStep(tool=tool, args=args, on_error=OnError.escalate_to_human)
        if tool == "create_ticket":
            subject = policy.TICKET_SUBJECTS.get(intent, intent.replace("_", " ").capitalize())
            if order_id:
                subject += f" {order_id}"
            return PlanStep(tool=tool, args={
                "email": context.verified_email or "", "subject": subject, "body": text[:10_000],
                "priority": policy.PRIORITY.get(intent, "normal")}, on_error=OnError.escalate_to_human)
        if tool == "escalate_to_human":
            excerpt = "\n".join(f"{m['role']}: {m['text']}" for m in context.history[-6:])
            excerpt = (excerpt + f"\nuser: {text}").strip()[-4000:]
            return PlanStep(tool=tool, args={"reason": intent.replace("_", " "), "transcript_excerpt": excerpt})
        if tool == "search_kb":
            return PlanStep(tool=tool, args={"query": text[:2000]})
        return PlanStep(tool=tool, args={})
