"""`/deskhand`: the payload becomes a `Slash`; `SlashCommands` says what to ack with."""

from __future__ import annotations

from slack_bolt.app.async_app import AsyncApp

from bot.slack.commands import Slash


def slash_from(command: dict) -> Slash:
    return Slash(team=command["team_id"], user=command["user_id"], channel=command["channel_id"],
                 text=command.get("text") or "", response_url=command.get("response_url") or "")


async def on_deskhand(ack, command, commands):
    await ack(await commands.handle(slash_from(command)))


def register(app: AsyncApp) -> None:
    app.command("/deskhand")(on_deskhand)
