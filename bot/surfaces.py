"""The ports a turn leaves through: which surfaces deliver replies, and who can say who wrote.

The wiring builds one `Surfaces` and gives it to the orchestrator for as long as those
surfaces run (`Orchestrator.delivering_to`): `deskhand run` (bot/run.py) gives Slack and,
when mail is on, email; `deskhand mail serve` gives email; the CLI gives the terminal.
A surface that is absent is simply None: its turns are answered and stored, and whoever
asked reads the outcome (the CLI's `ask`, the eval).

`TeammateMail` is the one port Slack needs from email: a teammate's reply in a thread that
mirrors an email conversation goes out as email. The wiring hands it to the Slack side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.turn import IdentityResolver, Responder, surface


class TeammateMail(Protocol):
    """Sends a teammate's words to an email customer, once per `key` (mailbridge/responder.py)."""

    async def reply_as_teammate(self, session_id: str, text: str, *, author: str, key: str) -> object: ...


@dataclass(frozen=True)
class Surfaces:
    slack: Responder | None = None
    email: Responder | None = None
    cli: Responder | None = None
    slack_identity: IdentityResolver | None = None  # users.info: a Slack user's verified email

    def responder(self, channel: str) -> Responder | None:
        """The responder for an envelope's or a session's channel (`slack_thread`, `email`, …)."""
        return {"slack": self.slack, "email": self.email, "cli": self.cli}.get(surface(channel))

    def identity(self, channel: str) -> IdentityResolver | None:
        return self.slack_identity if surface(channel) == "slack" else None

    def __bool__(self) -> bool:
        return any((self.slack, self.email, self.cli, self.slack_identity))


NO_SURFACES = Surfaces()
