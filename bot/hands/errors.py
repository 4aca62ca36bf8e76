"""Exceptions the Hands raise, each with the words a customer is told and where it came from.

Every class carries `user_message`, a sentence that may name the failing system
(`{system}`, or `{System}` at the start of a sentence) and the kind of record it holds
(`{record}`). Every raised error carries the tool it came from and that tool's system
(`orders`, `tickets`, `refunds`, `kb`): the executor (bot/hands/executor.py) fills both in
when it catches or raises one. Which reply a failure gets is chosen by the error's class, in
one table (bot/error_replies.py). A `ToolResult` keeps the class's `kind`, the tool and the
system, so `error_from_result` gives the same error back wherever a result is worded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.contracts import ToolResult

# What a customer calls each system, and what one record of it is.
SYSTEM_NAMES = {"orders": "the order system", "tickets": "the ticket system",
                "refunds": "the refund system", "kb": "our help centre"}
RECORDS = {"orders": "order", "tickets": "ticket", "refunds": "refund", "kb": "article"}
UNNAMED_SYSTEM = "the system I need"

_BY_KIND: dict[str, type[HandError]] = {}


class HandError(Exception):
    kind = "error"
    user_message = "Something went wrong in {system} just now."

    def __init__(self, message: str = "", *, tool: str | None = None, system: str | None = None):
        super().__init__(message)
        self.tool = tool
        self.system = system

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _BY_KIND.setdefault(cls.kind, cls)

    @property
    def system_name(self) -> str:
        return SYSTEM_NAMES.get(self.system or "", UNNAMED_SYSTEM)

    def customer_text(self) -> str:
        """`user_message` with this error's system filled in."""
        name = self.system_name
        return self.user_message.format(system=name, System=name[0].upper() + name[1:],
                                        record=RECORDS.get(self.system or "", "record"))


_BY_KIND[HandError.kind] = HandError


class TransientError(HandError):
    """A failure worth one retry: a timeout, a dropped connection, a 5xx."""

    kind = "transient"
    user_message = "{System} isn't answering right now."


class ToolTimeout(TransientError):
    kind = "timeout"
    user_message = "{System} is slow to answer right now."


class ClientError(HandError):
    """The request itself is wrong (4xx-like). Never retried, never trips the breaker."""

    kind = "client_error"
    user_message = "{System} couldn't accept that request as it was."


class NotFound(ClientError):
    kind = "not_found"
    user_message = "I couldn't find that {record}. Could you double-check the number?"


class NotRefundable(ClientError):
    """The order has nothing left to refund, or less than was asked."""

    kind = "not_refundable"
    user_message = ("I can't start a refund on that order myself, because it has nothing left to refund "
                    "or the amount is more than was paid.")


class NotVerified(ClientError):
    kind = "not_verified"
    user_message = "For your security I can only share orders placed from the address you're writing from."


class CircuitOpen(HandError):
    kind = "circuit_open"
    user_message = "{System} is having trouble, so I've paused calls to it for a minute."


class RateLimited(HandError):
    kind = "rate_limited"
    user_message = "I'm getting a lot of requests for {system} right now."


class NotAllowed(HandError):
    kind = "not_allowed"
    user_message = "I'm not able to do that here."


class InvalidArgs(ClientError):
    kind = "invalid_args"
    user_message = "I couldn't make sense of that request for {system}."


class KBUnavailable(HandError):
    kind = "kb_unavailable"
    user_message = "Our help centre isn't available right now."


class KBIndexing(HandError):
    """The tenant's index is being built (at start, or after its folder changed)."""

    kind = "kb_indexing"
    user_message = "Our help centre is being indexed right now, so I can't look that up just yet."


def error_class(kind: str | None) -> type[HandError]:
    """The class a stored `error_kind` names; `HandError` for one this process doesn't know."""
    return _BY_KIND.get(kind or "", HandError)


def kinds_under(cls: type[HandError]) -> frozenset[str]:
    """The kinds of `cls` and of every subclass defined so far."""
    return frozenset(kind for kind, known in _BY_KIND.items() if issubclass(known, cls))


def error_from_result(result: ToolResult) -> HandError:
    """The error a failed `ToolResult` records, as its class, with its tool and system."""
    return error_class(result.error_kind)(result.error or "", tool=result.tool, system=result.error_system)
