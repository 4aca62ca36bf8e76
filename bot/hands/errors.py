"""Exceptions the Hands raise. The orchestrator maps each to a user-facing reply by type."""


class HandError(Exception):
    kind = "error"
    user_message = "I couldn't complete that just now."


class TransientError(HandError):
    """A failure worth one retry: a timeout, a dropped connection, a 5xx."""

    kind = "transient"


class ToolTimeout(TransientError):
    kind = "timeout"
    user_message = "The system I need is slow to answer right now."


class ClientError(HandError):
    """The request itself is wrong (4xx-like). Never retried, never trips the breaker."""

    kind = "client_error"


class NotFound(ClientError):
    kind = "not_found"


class NotVerified(ClientError):
    kind = "not_verified"
    user_message = "For your security I can only look up orders for the address you're writing from."


class CircuitOpen(HandError):
    kind = "circuit_open"
    user_message = "That system is having trouble, so I've paused calls to it for a minute."


class RateLimited(HandError):
    kind = "rate_limited"
    user_message = "I'm getting a lot of requests for that right now."


class NotAllowed(HandError):
    kind = "not_allowed"
    user_message = "I'm not allowed to do that here."


class InvalidArgs(ClientError):
    kind = "invalid_args"


class KBUnavailable(HandError):
    kind = "kb_unavailable"
    user_message = "Our help centre index isn't available right now."


class KBIndexing(HandError):
    """The tenant's index is being built (at start, or after its folder changed)."""

    kind = "kb_indexing"
    user_message = "Our help centre is being indexed right now."
