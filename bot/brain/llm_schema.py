"""The shapes a model must fill, built per allowed tool set.

The plan schema a model sees is a `BrainPlan` whose `steps` are a discriminated union with
one member per allowed tool: `{tool: Literal["get_order_status"], args: GetOrderStatusArgs,
on_error: ...}`. A tool the tenant forbids, or one that does not exist, has no member, so a
plan naming it cannot validate; each tool's own args model validates its args. The result
converts to the contract `BrainPlan` with `to_contract`.

The reply schema lets a draft cite only the help-centre passages this turn's `search_kb`
returned, by key (`kb1`, `kb2`, …).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, model_validator

from bot.brain import policy
from bot.contracts import BrainPlan, OnError, PlanStep
from bot.hands.registry import ToolSpec

OnErrorName = Literal["continue", "escalate_to_human", "ask_user"]

PLAN_DOC = ("Deskhand's plan for this customer message: the intent, how sure you are, and at most "
            "the allowed number of tool steps. Tools run only after the plan is checked.")
REPLY_DOC = "The reply to send the customer, composed only from the tool results and passages given."


# A grammar-constrained server (llama.cpp) expands `maxLength` into nested optional rules;
# long limits (a ticket body's 10,000 characters) exceed its grammar limits and crash it.
# The schema a model sees states such limits in words instead; validation still enforces them.
GRAMMAR_MAX_LENGTH = 100


def relax_lengths(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: relax_lengths(v) for k, v in node.items()}
        limit = out.get("maxLength")
        if isinstance(limit, int) and limit > GRAMMAR_MAX_LENGTH:
            del out["maxLength"]
            note = f"At most {limit} characters."
            out["description"] = f"{out['description']} {note}" if out.get("description") else note
        return out
    if isinstance(node, list):
        return [relax_lengths(v) for v in node]
    return node


class ModelFacing(BaseModel):
    """Base of the models sent to a model: their JSON schema is grammar-friendly."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return relax_lengths(super().model_json_schema(*args, **kwargs))


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def step_model(spec: ToolSpec) -> type[BaseModel]:
    doc = spec.description
    if spec.needs_approval:
        doc += " It is only proposed: a teammate approves it before it runs."
    return create_model(
        f"{_camel(spec.name)}Step",
        __config__=ConfigDict(extra="forbid"),
        __doc__=doc,
        tool=(Literal[spec.name], Field(description=f"Always {spec.name!r} for this step.")),
        args=(spec.args_model, Field(description=f"Arguments of {spec.name}.")),
        on_error=(OnErrorName, Field(default="continue", description=(
            "What to do if the tool fails: continue, escalate_to_human, or ask_user."))),
    )


class PlanBase(ModelFacing):
    model_config = ConfigDict(extra="forbid")


def plan_model(specs: list[ToolSpec], *, max_steps: int, intents: list[str]) -> type[BaseModel]:
    """A BrainPlan-shaped model in which only these tools can be named."""
    fields: dict[str, Any] = {
        "intent": (Literal[tuple(intents)], Field(description="The customer's intent.")),
        "confidence": (float, Field(ge=0.0, le=1.0, description=(
            "How sure you are of the intent and the plan, from 0 to 1."))),
    }
    if specs:
        members = [step_model(s) for s in specs]
        item: Any = members[0] if len(members) == 1 else Annotated[
            Union[tuple(members)], Field(discriminator="tool")]
        fields["steps"] = (list[item], Field(default_factory=list, max_length=max_steps, description=(
            f"At most {max_steps} tool calls; an empty list when no tool is needed.")))
    fields["final_answer"] = (str | None, Field(default=None, description=(
        "Only for a greeting, thanks, or a reply that needs no facts; never order details.")))
    fields["needs_clarification"] = (bool, Field(default=False, description=(
        "True when you must ask the customer one question before acting.")))
    fields["clarification_question"] = (str | None, Field(default=None, description=(
        "The one question to ask when needs_clarification is true.")))
    return create_model("BrainPlan", __base__=PlanBase, __doc__=PLAN_DOC, **fields)


def to_contract(out: BaseModel, *, verified_email: str | None = None, planner: str = "llm",
                restore: Callable[[Any], Any] = lambda value: value) -> BrainPlan:
    """The contract `BrainPlan` for a validated model output; `restore` turns the turn's PII
    placeholders in args and customer-facing text back into the real values."""
    steps = []
    for step in getattr(out, "steps", None) or []:
        args = restore(step.args.model_dump(mode="json", exclude_none=True))
        # A placeholder that is not this turn's (the model wrote "[email]") stands for the
        # verified address, which is ours.
        if verified_email and isinstance(args.get("email"), str) and args["email"].startswith("["):
            args["email"] = verified_email
        steps.append(PlanStep(tool=step.tool, args=args, on_error=OnError(step.on_error)))
    intent = out.intent  # type: ignore[attr-defined]
    clarify = bool(out.needs_clarification) and not steps  # type: ignore[attr-defined]
    return BrainPlan(
        intent=intent,
        confidence=out.confidence,  # type: ignore[attr-defined]
        steps=steps,
        final_answer=restore(out.final_answer or None) if not steps else None,  # type: ignore[attr-defined]
        needs_clarification=clarify,
        clarification_question=restore(out.clarification_question or None) if clarify else None,  # type: ignore[attr-defined]
        awaiting="order_id" if clarify and intent in policy.NEEDS_ORDER_ID else None,
        planner=planner,
    )


class ReplyBase(ModelFacing):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=3000, description="The reply, in plain text.")
    offer_human: bool = Field(default=False, description=(
        "True when the results do not answer the question and a teammate should help."))

    @model_validator(mode="after")
    def _cites_what_it_uses(self, info: ValidationInfo):
        context = info.context or {}
        if context.get("require_citation") and not getattr(self, "citations", None) and not self.offer_human:
            raise ValueError("cite the key of at least one passage you used (kb1, kb2, …), "
                             "or set offer_human if none answers the question")
        return self


def reply_model(citation_keys: list[str]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    if citation_keys:
        fields["citations"] = (list[Literal[tuple(citation_keys)]], Field(default_factory=list, description=(
            "Keys of the passages the reply relies on.")))
    return create_model("Reply", __base__=ReplyBase, __doc__=REPLY_DOC, **fields)
