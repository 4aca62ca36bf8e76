"""The `/deskhand` listener: the payload becomes a `Slash`, acked with what
`SlashCommands.handle` (bot/slack/subcommands.py) says."""

from __future__ import annotations

from slack_bolt.app.async_app import AsyncApp

from bot.handlers.payloads import slash_from


async def on_deskhand(ack, command, commands):
    await ack(await commands.handle(slash_from(command)))


def register(app: AsyncApp) -> None:
    app.command("/deskhand")(on_deskhand)
