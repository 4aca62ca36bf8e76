"""The tool registry: each hand is a typed async function; its schema comes from its types.

    @hand(side_effect="read", cache_ttl_s=60)
    async def get_order_status(ctx: HandContext, args: GetOrderStatusArgs) -> OrderStatus:
        '''Look up an order by ID, or by the verified customer's email.'''

The args model is the second parameter's annotation, the output model the return
annotation, the description the docstring. Limits live in the `ToolSpec`; only
`bot/hands/executor.py` enforces them.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    args_model: type[BaseModel]
    output_model: type[BaseModel]
    fn: Callable[[Any, BaseModel], Awaitable[BaseModel]]
    side_effect: Literal["read", "write"] = "read"
    needs_approval: bool = False
    scopes: tuple[str, ...] = ()
    timeout_s: float | None = None  # None: the configured default (2 s)
    retries: int = 1
    cache_ttl_s: float = 0.0
    rate_per_s: float | None = None  # None: the configured default
    # Builds the idempotency key of a write from (ctx, args); default: session + args.
    idempotency_key: Callable[[Any, BaseModel], str] | None = None
    # Runs before a needs-approval call becomes a PendingAction (fills and checks args).
    prepare: Callable[[Any, BaseModel], Awaitable[BaseModel]] | None = None
    # The system the tool's backend is ("orders", "tickets", "refunds", "kb"; bot/hands/errors.py
    # SYSTEM_NAMES), and the one `prepare` reads when that is another (a refund's order
    # lookup): what a failure's reply names.
    system: str | None = None
    prepare_system: str | None = None
    extra: dict = field(default_factory=dict)

    def json_schema(self) -> dict:
        return {"name": self.name, "description": self.description,
                "parameters": self.args_model.model_json_schema()}


def hand(
    *,
    side_effect: Literal["read", "write"] = "read",
    needs_approval: bool = False,
    scopes: tuple[str, ...] = (),
    timeout_s: float | None = None,
    retries: int = 1,
    cache_ttl_s: float = 0.0,
    rate_per_s: float | None = None,
    idempotency_key: Callable[[Any, BaseModel], str] | None = None,
    prepare: Callable[[Any, BaseModel], Awaitable[BaseModel]] | None = None,
    system: str | None = None,
    prepare_system: str | None = None,
    name: str | None = None,
) -> Callable[[Callable], ToolSpec]:
    def wrap(fn: Callable) -> ToolSpec:
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters)
        if len(params) != 2:
            raise TypeError(f"{fn.__name__}: a hand takes (ctx, args)")
        return ToolSpec(
            name=name or fn.__name__,
            description=inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0],
            args_model=hints[params[1]],
            output_model=hints["return"],
            fn=fn,
            side_effect=side_effect,
            needs_approval=needs_approval,
            scopes=scopes,
            timeout_s=timeout_s,
            retries=retries,
            cache_ttl_s=cache_ttl_s,
            rate_per_s=rate_per_s,
            idempotency_key=idempotency_key,
            prepare=prepare,
            system=system,
            prepare_system=prepare_system,
        )

    return wrap


class ToolRegistry:
    def __init__(self, specs: list[ToolSpec] | None = None):
        self._specs: dict[str, ToolSpec] = {}
        for spec in specs or []:
            self.register(spec)

    def register(self, spec: ToolSpec) -> ToolSpec:
        if spec.name in self._specs:
            raise ValueError(f"tool {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)

    def get(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ToolSpec]:
        return [self._specs[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._specs


def default_registry() -> ToolRegistry:
    """The built-in hands, registered the same way a team's own tools would be."""
    from bot.hands.tools import create_ticket, escalate_to_human, get_order_status, process_refund, search_kb

    return ToolRegistry([
        get_order_status.SPEC, create_ticket.SPEC, process_refund.SPEC,
        escalate_to_human.SPEC, search_kb.SPEC,
    ])
