"""One connected Slack workspace: its Web API client, who the bot is there, and paced posting.

Slack allows about one message per second per channel, with short bursts. `ChannelPacer`
keeps Deskhand inside that (a GCRA: a burst of a few posts, then one per second), so a busy
thread waits a moment instead of collecting 429s. 429s that still happen are retried by the
SDK's `AsyncRateLimitErrorRetryHandler`, honouring `Retry-After`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler, AsyncRateLimitErrorRetryHandler, AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient


class ChannelPacer:
    """Per-channel pacing: `burst` posts at once, then `rate_per_s` per second."""

    def __init__(self, rate_per_s: float = 1.0, burst: int = 3, *, max_channels: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate_per_s
        self.tolerance = max(burst - 1, 0) * self.interval
        self.max_channels = max_channels
        self.clock = clock
        self._next: dict[str, float] = {}  # channel -> theoretical arrival time of the next post

    def reserve(self, channel: str) -> float:
        """Book the next slot for `channel`; returns how long to wait before using it."""
        now = self.clock()
        tat = max(self._next.get(channel, now), now)
        self._next[channel] = tat + self.interval
        if len(self._next) > self.max_channels:  # forget channels that are idle again
            self._next = {k: v for k, v in self._next.items() if v > now}
        return max(0.0, tat - self.tolerance - now)

    async def wait(self, channel: str) -> None:
        delay = self.reserve(channel)
        if delay > 0:
            await asyncio.sleep(delay)

    def __len__(self) -> int:
        return len(self._next)


def web_client(token: str, base_url: str, session: aiohttp.ClientSession | None = None,
               *, rate_limit_retries: int = 3) -> AsyncWebClient:
    """A Web API client pointed at `base_url` (Slack, or the emulator in tests) that retries
    connection errors, 5xx answers and 429s (after `Retry-After`)."""
    return AsyncWebClient(token=token, base_url=base_url, session=session, logger=_sdk_logger(), retry_handlers=[
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
    ])


def _sdk_logger() -> logging.Logger:
    """slack_sdk's logger with its own level set. The SDK formats its debug lines (every
    request's params and every response's headers and body) whenever that logger's own level
    is NOTSET, before logging throws them away: about 6 % of the event loop under load."""
    logger = logging.getLogger("slack_sdk.web.async_base_client")
    logger.setLevel(logging.getLogger().getEffectiveLevel())
    return logger


@dataclass
class SlackTeam:
    """A workspace Deskhand is connected to (what auth.test said about it)."""

    team_id: str
    bot_user_id: str
    bot_id: str
    url: str  # https://<domain>.slack.com/
    client: AsyncWebClient
    pacer: ChannelPacer = field(default_factory=ChannelPacer)

    @classmethod
    async def connect(cls, client: AsyncWebClient, pacer: ChannelPacer | None = None) -> SlackTeam:
        me = await client.auth_test()
        return cls(team_id=me["team_id"], bot_user_id=me["user_id"], bot_id=me.get("bot_id") or "",
                   url=me.get("url") or "https://slack.com/", client=client, pacer=pacer or ChannelPacer())

    async def post(self, channel: str, text: str, blocks: list[dict] | None = None,
                   thread_ts: str | None = None) -> str:
        await self.pacer.wait(channel)
        args: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False, "unfurl_media": False}
        if blocks is not None:
            args["blocks"] = blocks
        if thread_ts:
            args["thread_ts"] = thread_ts
        response = await self.client.chat_postMessage(**args)
        return response["ts"]

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict] | None = None) -> str:
        args: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        response = await self.client.chat_update(**args)
        return response["ts"]

    async def ephemeral(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
        await self.pacer.wait(channel)
        args: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if thread_ts:
            args["thread_ts"] = thread_ts
        await self.client.chat_postEphemeral(**args)

    def where(self, channel: str, thread_ts: str, user: str) -> str:
        """Where a conversation is, as mrkdwn: a link to the thread built from the workspace's
        URL (chat.getPermalink would cost a call per card), or a note for a DM, which other
        teammates cannot open."""
        if channel.startswith("D"):
            return f"a direct message with <@{user}> (only they and Deskhand can see it)"
        permalink = f"{self.url.rstrip('/')}/archives/{channel}/p{thread_ts.replace('.', '')}"
        return f"<#{channel}>, <{permalink}|open the thread>"
