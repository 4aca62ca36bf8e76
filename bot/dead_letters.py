"""Poison messages: a turn that keeps killing the process is parked instead of run again.

`inbox.attempts` counts the starts of a message's turn (`Store.inbox_start`); a turn that
finishes, even as FAILED, is never started again. So a message whose row is still unfinished
with `attempts >= DESKHAND_TURN_MAX_ATTEMPTS` took the process down that many times. When
such a message is about to start once more (`Orchestrator.process`), it is dead-lettered:

1. a `dead_letters` row records it with its last error (what the previous attempts left in
   `inbox.error`, or "process stopped mid-turn"), and the audit log says so;
2. the turn then ends the way a failed turn does (`Orchestrator._fail`): a ticket for a
   teammate and the safe reply, stored and delivered through the surface's own responder.

Every step is idempotent (the row's primary key, the ticket's idempotency key, one reply per
inbox row), so a process that dies while dead-lettering does it once at the next start.
`deskhand dlq` (bot/dlq_cli.py) lists, shows, retries and drops dead letters.
"""

from __future__ import annotations

from bot.contracts import MessageEnvelope
from bot.logs import get_logger

log = get_logger("deskhand.dead_letters")

PROCESS_STOPPED = "process stopped mid-turn"


def is_poison(row: dict, max_attempts: int) -> bool:
    """Whether an unfinished inbox row's turn already started `max_attempts` times."""
    return (row["attempts"] or 0) >= max_attempts


def last_error(row: dict) -> str:
    return row["error"] or PROCESS_STOPPED


async def dead_letter(store, envelope: MessageEnvelope, row: dict) -> str:
    """Park a poison message (once). Returns the error its failure ticket and reply carry."""
    error = last_error(row)
    fresh = await store.dead_letter_add(row, error)
    log.warning("turn_dead_lettered", inbox_id=envelope.id, tenant_id=envelope.tenant_id,
                channel=envelope.channel.value, attempts=row["attempts"], error=error, first_time=fresh)
    return f"dead letter after {row['attempts']} attempts: {error}"
