"""The LLM planner: `instructor` over `openai.AsyncOpenAI(base_url=…)`, so any
OpenAI-compatible server works (OpenAI, vLLM, Ollama, llama.cpp).

- **Forced shape.** The model fills a BrainPlan whose steps can only name the tools this
  tenant allows, each with its own args model (bot/brain/llm_schema.py). A plan that does
  not validate gets exactly one correction retry with the error fed back; after that the
  conversation goes to a human.
- **Routing.** The small model plans (temperature 0.2); the large one re-plans when the
  small one's confidence is under `llm_large_threshold`, and drafts replies that draw on
  several tool results (temperature 0.5). A timeout, a 5xx or a dropped connection moves to
  the fallback model; when every model fails, the rules planner plans instead, and when
  that fails too the orchestrator's FAILED path answers safely and opens a ticket.
- **Accounting.** Every HTTP call to a model is appended to `context.llm_calls` (model,
  tokens in and out, cost in USD from `llm_prices`, latency, outcome); the orchestrator
  writes each as an `llm_call` span, which `deskhand report` reads.
"""

from __future__ import annotations

import json
import time
from typing import Any

import instructor
import openai
from instructor.core import Hooks, IncompleteOutputException, InstructorRetryException
from instructor.core.exceptions import AsyncValidationError, ResponseParsingError
from pydantic import BaseModel, ValidationError

from bot.brain.base import PlanContext, PlanInvalid, Planner
from bot.brain.drafting import OFFER_HUMAN, Draft
from bot.brain.llm_schema import plan_model, reply_model, to_contract
from bot.brain.prompts import draft_messages, intents_for, passages_from, plan_messages, restore
from bot.brain.tokens import count_tokens
from bot.config import Settings
from bot.contracts import BrainPlan, PlanStep, ToolResult, utcnow
from bot.hands.gate import allowed_tools
from bot.hands.registry import ToolRegistry, ToolSpec
from bot.logs import get_logger

log = get_logger("deskhand.brain.llm")

MODES = {"tools": instructor.Mode.TOOLS, "json": instructor.Mode.JSON}
PLAN_TEMPERATURE = 0.2
DRAFT_TEMPERATURE = 0.5
DEFAULT_BASE_URL = str(Settings.model_fields["openai_base_url"].default)
_INVALID_OUTPUT = (ValidationError, json.JSONDecodeError, ResponseParsingError, AsyncValidationError)


class ModelFailed(Exception):
    """No model in the chain answered (timeout, 5xx, connection, truncated output)."""


class OutputRejected(Exception):
    """A model answered, but its output did not validate even after one correction."""


def error_kind(exc: BaseException | None) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, IncompleteOutputException):
        return "truncated"
    if isinstance(exc, json.JSONDecodeError):
        return "bad_response"
    return type(exc).__name__ if exc is not None else "unknown"


def call_cost(prices: dict[str, tuple[float, float]], model: str, tokens_in: int, tokens_out: int) -> float:
    """USD for one call; `prices` is USD per million tokens (input, output) by model."""
    price_in, price_out = prices.get(model, (0.0, 0.0))
    return round((tokens_in * price_in + tokens_out * price_out) / 1_000_000, 8)


class CallLog:
    """Instructor hooks that turn each HTTP call to a model into one `llm_calls` record."""

    def __init__(self, sink: list[dict], prices: dict, *, purpose: str, channel: str, mode: str):
        self.sink = sink
        self.prices = prices
        self.base = {"purpose": purpose, "channel": channel, "mode": mode}
        self._model = ""
        self._messages: list = []
        self._started = 0.0
        self._started_at = ""
        self._attempt = 0

    def hooks(self) -> Hooks:
        hooks = Hooks()
        hooks.on("completion:kwargs", self._on_request)
        hooks.on("completion:response", self._on_response)
        hooks.on("completion:error", self._on_error)
        hooks.on("parse:error", self._on_parse_error)
        return hooks

    def _on_request(self, *args: Any, **kwargs: Any) -> None:
        self._model = str(kwargs.get("model", ""))
        self._messages = list(kwargs.get("messages") or [])
        self._attempt += 1
        self._started = time.perf_counter()
        self._started_at = utcnow().isoformat()  # the call's span starts here (`deskhand trace`)

    def _record(self, ok: bool, tokens_in: int, tokens_out: int, error: str | None, estimated: bool) -> None:
        self.sink.append({
            **self.base, "model": self._model, "attempt": self._attempt, "ok": ok, "error": error,
            "tokens_in": tokens_in, "tokens_out": tokens_out, "tokens_estimated": estimated,
            "cost_usd": call_cost(self.prices, self._model, tokens_in, tokens_out),
            "latency_ms": round((time.perf_counter() - self._started) * 1000, 3), "started_at": self._started_at,
        })

    def _on_response(self, response: Any) -> None:
        usage = getattr(response, "usage", None)
        tokens_in = getattr(usage, "prompt_tokens", None)
        tokens_out = getattr(usage, "completion_tokens", None)
        estimated = tokens_in is None or tokens_out is None
        if tokens_in is None:  # some servers leave usage out: estimate with our tokenizer
            tokens_in = sum(count_tokens(str(m.get("content") or "")) for m in self._messages
                            if isinstance(m, dict))
        if tokens_out is None:
            tokens_out = count_tokens(_output_text(response))
        self._record(True, int(tokens_in), int(tokens_out), None, estimated)

    def _on_parse_error(self, error: Exception, **meta: Any) -> None:
        if self.sink and self.sink[-1].get("ok"):
            self.sink[-1].update(ok=False, error="invalid_output")

    def _on_error(self, error: Exception, **meta: Any) -> None:
        self._record(False, 0, 0, error_kind(error), False)

    def fail_last(self, kind: str) -> None:
        """Mark this chain step's last call failed (output the parser never saw as valid)."""
        if self._attempt and self.sink and self.sink[-1].get("ok"):
            self.sink[-1].update(ok=False, error=kind)


def _output_text(response: Any) -> str:
    try:
        message = response.choices[0].message
    except (AttributeError, IndexError):
        return ""
    calls = getattr(message, "tool_calls", None) or []
    return "".join(c.function.arguments or "" for c in calls) or (message.content or "")


class LLMPlanner:
    name = "llm"

    def __init__(self, settings: Settings, registry: ToolRegistry, *, fallback: Planner | None = None,
                 client: openai.AsyncOpenAI | None = None):
        self.settings = settings
        self.registry = registry
        self.fallback = fallback
        self.mode = settings.llm_mode
        self.openai = client or openai.AsyncOpenAI(
            base_url=settings.openai_base_url,
            # Local servers (llama.cpp, Ollama, vLLM) need no key, but the client wants one.
            api_key=settings.openai_api_key or "not-needed",
            timeout=settings.llm_timeout_s,
            max_retries=0,  # the fallback chain below is the retry policy
        )
        self.client = instructor.from_openai(self.openai, mode=MODES[settings.llm_mode])
        self._plan_models: dict[tuple, type[BaseModel]] = {}
        self._reply_models: dict[tuple, type[BaseModel]] = {}

    async def aclose(self) -> None:
        await self.openai.close()

    # -- planning ------------------------------------------------------------------------
    async def plan(self, context: PlanContext) -> BrainPlan:
        s = self.settings
        specs = self.allowed_specs(context)
        allowed = [spec.name for spec in specs]
        schema = self._plan_model(specs, context)
        messages = plan_messages(context, allowed, max_steps=s.max_tool_calls,
                                 threshold=s.llm_large_threshold, history_budget=s.history_token_budget)
        try:
            out, model = await self._structured(schema, messages, [s.llm_small_model, s.llm_fallback_model],
                                                temperature=PLAN_TEMPERATURE, purpose="plan", context=context)
        except OutputRejected as exc:
            log.warning("llm_plan_rejected", error=str(exc)[:500])
            return self.handoff(context, allowed)
        except ModelFailed as exc:
            if self.fallback is None:
                raise
            log.warning("llm_unavailable_using_rules", error=str(exc))
            return await self.fallback.plan(context)

        if out.confidence < s.llm_large_threshold and model != s.llm_large_model:
            try:
                out, model = await self._structured(schema, messages, [s.llm_large_model],
                                                    temperature=PLAN_TEMPERATURE, purpose="plan_large",
                                                    context=context)
            except (OutputRejected, ModelFailed) as exc:  # the small model's valid plan stands
                log.info("llm_large_model_unavailable", error=str(exc)[:500])

        plan = to_contract(out, verified_email=context.verified_email, planner=self.name,
                           restore=lambda value: restore(context, value))
        try:
            self.check(plan, allowed)
        except PlanInvalid as exc:
            log.warning("llm_plan_invalid", error=str(exc))
            return self.handoff(context, allowed)
        return plan

    def allowed_specs(self, context: PlanContext) -> list[ToolSpec]:
        """The tools this turn may use: registered, offered to the planner, and allowed by
        the tenant's policy. Whatever the model says, nothing else can be planned."""
        return [spec for spec in allowed_tools(context.policy, context.tools) if spec.name in self.registry]

    def check(self, plan: BrainPlan, allowed: list[str]) -> None:
        """Re-validate a converted plan against the registry and the policy."""
        if len(plan.steps) > self.settings.max_tool_calls:
            raise PlanInvalid(f"{len(plan.steps)} steps; at most {self.settings.max_tool_calls}")
        for step in plan.steps:
            spec = self.registry.get(step.tool)
            if spec is None or step.tool not in allowed:
                raise PlanInvalid(f"tool {step.tool!r} is not allowed here")
            try:
                spec.args_model.model_validate(step.args)
            except ValidationError as exc:
                raise PlanInvalid(f"{step.tool}: {exc.errors(include_url=False, include_input=False)}") from exc

    def handoff(self, context: PlanContext, allowed: list[str]) -> BrainPlan:
        """The plan after two invalid answers: a human takes over (or is offered)."""
        if "escalate_to_human" in allowed:
            excerpt = "\n".join(f"{m.get('role')}: {m.get('text')}" for m in context.history[-6:])
            excerpt = (excerpt + f"\nuser: {context.text}").strip()[-4000:]
            return BrainPlan(intent="out_of_scope", confidence=0.0, planner=self.name, steps=[PlanStep(
                tool="escalate_to_human",
                args={"reason": "the assistant could not produce a valid plan", "transcript_excerpt": excerpt})])
        return BrainPlan(intent="out_of_scope", confidence=0.0, offer_human=True, planner=self.name)

    def _plan_model(self, specs: list[ToolSpec], context: PlanContext) -> type[BaseModel]:
        intents = intents_for(context.policy)
        key = (tuple((s.name, s.args_model) for s in specs), self.settings.max_tool_calls, tuple(intents))
        if key not in self._plan_models:
            self._plan_models[key] = plan_model(specs, max_steps=self.settings.max_tool_calls, intents=intents)
        return self._plan_models[key]

    # -- drafting ------------------------------------------------------------------------
    async def draft(self, plan: BrainPlan, results: list[ToolResult], context: PlanContext) -> Draft | None:
        """The reply, worded by a model from tool results and citations only. None leaves it
        to the template drafter: for clarifications, handoffs, turns the rules planner
        planned (the models were down), and whenever drafting fails."""
        try:
            return await self._draft(plan, results, context)
        except (ModelFailed, OutputRejected) as exc:
            log.info("llm_draft_failed", error=str(exc)[:500])
        except Exception:  # the template drafter always has an answer; a bug here must not cost one
            log.exception("llm_draft_error")
        return None

    async def _draft(self, plan: BrainPlan, results: list[ToolResult], context: PlanContext) -> Draft | None:
        if plan.planner != self.name or not results or plan.needs_clarification or plan.offer_human:
            return None
        if not any(r.ok for r in results) or any(r.tool == "escalate_to_human" and r.ok for r in results):
            return None
        s = self.settings
        passages = passages_from(results, s.kb_relevance_floor)
        keys = tuple(key for key, _, _ in passages)
        if keys not in self._reply_models:
            self._reply_models[keys] = reply_model(list(keys))
        only_kb = all(r.tool == "search_kb" for r in results if r.ok)
        if only_kb and not passages:
            return None  # nothing relevant in the help centre: the template says "not certain"
        first = s.llm_large_model if len(results) > 1 else s.llm_small_model
        out, _ = await self._structured(
            self._reply_models[keys], draft_messages(plan, results, passages, context),
            [first, s.llm_fallback_model], temperature=DRAFT_TEMPERATURE, purpose="draft",
            context=context, validation_context={"require_citation": bool(passages) and only_kb})
        by_key = {key: citation for key, citation, _ in passages}
        citations = [by_key[key] for key in dict.fromkeys(getattr(out, "citations", None) or [])]
        offer_human = bool(out.offer_human) or any(not r.ok for r in results)
        text = restore(context, out.text.strip())  # the customer reads values, not placeholders
        if offer_human and OFFER_HUMAN not in text:
            text = f"{text} {OFFER_HUMAN}"
        pending = next((r.pending_action_id for r in results if r.pending_action_id), None)
        return Draft(text=text, citations=citations, offer_human=offer_human, pending_action_id=pending)

    # -- one structured call, down a chain of models -----------------------------------------
    async def _structured(self, schema: type[BaseModel], messages: list[dict], models: list[str], *,
                          temperature: float, purpose: str, context: PlanContext,
                          validation_context: dict | None = None) -> tuple[Any, str]:
        failures = []
        for model in models:
            calls = CallLog(context.llm_calls, self.settings.llm_prices, purpose=purpose,
                            channel=context.envelope.channel.value, mode=self.mode)
            try:
                out = await self.client.chat.completions.create(
                    model=model, response_model=schema, messages=list(messages), max_retries=1,
                    temperature=temperature, strict=False, hooks=calls.hooks(), context=validation_context)
                return out, model
            except InstructorRetryException as exc:
                cause = exc.__cause__
                # The model's output failed validation twice. (A garbled HTTP body also
                # raises a JSON error, but from the API call: that is the server failing.)
                failed = exc.failed_attempts or []
                if isinstance(cause, _INVALID_OUTPUT) and failed and failed[-1].exception is cause:
                    raise OutputRejected(str(cause)) from exc
                failures.append(f"{model}: {error_kind(cause)}")
            except Exception as exc:  # anything else from this model: try the next one
                calls.fail_last(error_kind(exc))
                failures.append(f"{model}: {error_kind(exc)}")
        raise ModelFailed("; ".join(failures))


def llm_configured(settings: Settings) -> bool:
    """True when an API key or a non-default base URL is set (what `planner=auto` asks)."""
    return bool(settings.openai_api_key) or settings.openai_base_url.rstrip("/") != DEFAULT_BASE_URL.rstrip("/")


def build_llm_planner(settings: Settings, registry: ToolRegistry, fallback: Planner | None = None) -> Planner:
    """The planner for `DESKHAND_PLANNER=llm`, or for `auto` when a model is configured;
    `auto` without one gives the rules planner."""
    if settings.planner == "auto" and not llm_configured(settings):
        if fallback is not None:
            return fallback
        from bot.brain.rules import RulesPlanner

        return RulesPlanner(clarify_threshold=settings.clarify_threshold)
    return LLMPlanner(settings, registry, fallback=fallback)
