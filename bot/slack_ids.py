"""How Slack conversations and messages are named inside Deskhand.

A conversation is a Slack thread, so its session id is `slack:<team>:<channel>:<thread_ts>`,
with the team first: no two workspaces can ever share a session. (In a DM a top-level
message may instead join the person's open case there, so one conversation can span
several threads: bot/conversations.py.) An inbound message's
envelope id is `slack:<team>:<channel>:<ts>`, fixed by the message itself, so the same
message delivered twice (a retry, or as both `message` and `app_mention`) is stored once.

These names are shared by both sides of Slack (the handlers that build envelopes, the
outward surface that posts into threads), the DM conversations and the store, so the module
sits beside bot/contracts.py rather than in either folder.
"""

from __future__ import annotations

from typing import NamedTuple


class ThreadRef(NamedTuple):
    team: str
    channel: str
    thread_ts: str


def session_id(team: str, channel: str, thread_ts: str) -> str:
    return f"slack:{team}:{channel}:{thread_ts}"


def message_id(team: str, channel: str, ts: str) -> str:
    return f"slack:{team}:{channel}:{ts}"


def parse_session_id(value: str) -> ThreadRef | None:
    parts = value.split(":")
    if len(parts) != 4 or parts[0] != "slack" or not all(parts[1:]):
        return None
    return ThreadRef(parts[1], parts[2], parts[3])


def placeholder_key(inbox_id: str) -> str:
    """Session-metadata key holding the ts of the placeholder posted for a message."""
    return f"placeholder:{inbox_id}"
