"""What a person typed, from Slack's wire format.

Slack sends message text with `&`, `<` and `>` escaped and with mentions, channels and links
as `<…>` tokens. `plain_text` turns that into what the person meant, minus the `@deskhand`
mention, for the planner. (The way out, escaping what Deskhand posts, is bot/slack/mrkdwn.py.)
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"<([^<>\n]*)>")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def plain_text(text: str, bot_user_id: str | None = None) -> str:
    """What a person typed, from Slack's wire format: mentions of the bot removed, other
    `<…>` tokens turned into readable text, entities decoded."""

    def readable(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "" if target[1:] == bot_user_id else "@" + (label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!subteam^"):
            return "@" + (label or target[len("!subteam^"):]).lstrip("@")
        if target.startswith("!"):
            return label or "@" + target[1:].split("^")[0]
        if target.startswith("mailto:"):
            return target[len("mailto:"):]
        return target if not label or label == target else f"{label} ({target})"

    return re.sub(r"[ \t]{2,}", " ", unescape(_TOKEN.sub(readable, text))).strip()
