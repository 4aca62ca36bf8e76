"""What people are told when something fails, chosen by the error's type.

A table maps exception classes to handlers, and an error gets the handler of the first class
in `type(exc).__mro__` that has one, the way starlette's ExceptionMiddleware picks an
exception handler. So a `ToolTimeout` gets the timeout's handler if there is one, else the
transient error's, else `HandError`'s, and an error class a team's own tool raises is worded
like its nearest known ancestor. Nothing here matches on message text or on `error_kind`
strings.

Two tables:
- `CUSTOMER_REPLIES`, for every reply to a customer that reports a failed tool (the drafter,
  bot/brain/drafting.py, which the orchestrator's failure path uses too): the error's own
  `user_message`, naming the system the error came from (bot/hands/errors.py). The reply never
  guesses the system: an error that carries none says "the system I need".
- `TEAMMATE_REPLIES`, for a teammate whose button (an approval) did not go through
  (bot/slack/ops.py, `deskhand approve`): what failed and what to do about it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bot.contracts import ToolResult
from bot.hands.errors import (
    CircuitOpen, ClientError, HandError, NotAllowed, RateLimited, TransientError, error_from_result,
)

Handler = Callable[[BaseException], str]


def handler_for(exc_type: type[BaseException], handlers: Mapping[type[BaseException], Handler]) -> Handler | None:
    """The handler of the first class in `exc_type`'s MRO that has one, or None."""
    for cls in exc_type.__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def _own_message(exc: BaseException) -> str:
    assert isinstance(exc, HandError)
    return exc.customer_text()


CUSTOMER_REPLIES: dict[type[BaseException], Handler] = {HandError: _own_message}


def _system(exc: BaseException) -> str:
    name = exc.system_name if isinstance(exc, HandError) else "a system Deskhand needs"
    return name[0].upper() + name[1:]


def _detail(exc: BaseException) -> str:
    return f" ({exc})" if str(exc) else ""


TEAMMATE_REPLIES: dict[type[BaseException], Handler] = {
    Exception: lambda exc: ("Something went wrong on Deskhand's side. Try again in a minute; if it keeps "
                            "failing, tell whoever runs Deskhand (the error is in its log)."),
    TimeoutError: lambda exc: "Slack or a system Deskhand needs didn't answer in time. Try again in a minute.",
    OSError: lambda exc: "Deskhand couldn't reach Slack or a system it needs. Try again in a minute.",
    HandError: lambda exc: f"{_system(exc)} failed{_detail(exc)}. Try again in a minute, or follow up with "
                           "the customer yourself.",
    TransientError: lambda exc: f"{_system(exc)} didn't answer{_detail(exc)}. Nothing was done twice: "
                                "try again in a minute.",
    CircuitOpen: lambda exc: f"{_system(exc)} has been failing, so Deskhand paused calls to it for a minute. "
                             "Try again after that.",
    RateLimited: lambda exc: f"{_system(exc)} is getting too many requests. Try again in a few seconds.",
    ClientError: lambda exc: f"{_system(exc)} refused it{_detail(exc)}. Trying again won't help: reject it "
                             "and follow up with the customer.",
    NotAllowed: lambda exc: "This workspace's policy doesn't allow it, so it can't be done from here.",
}


def reply_for(exc: BaseException, handlers: Mapping[type[BaseException], Handler] = CUSTOMER_REPLIES) -> str:
    handler = handler_for(type(exc), handlers)
    if handler is None:
        raise LookupError(f"no reply for {type(exc).__name__}")
    return handler(exc)


def customer_reply(result: ToolResult) -> str:
    """What the customer is told about a failed tool call."""
    return reply_for(error_from_result(result), CUSTOMER_REPLIES)


def teammate_reply(result: ToolResult) -> str:
    """What a teammate is told about a tool call their click ran that failed."""
    return reply_for(error_from_result(result), TEAMMATE_REPLIES)
