"""Who people are, per workspace: verified emails, names, user-group members. Cached briefly.

- A user's email and name come from `users.info` (the email is the profile email Slack has
  verified); they are cached for ten minutes and looked up with a short timeout when a turn
  starts (never before the ack), so a slow Slack delays an answer by at most that timeout.
- A user group's members come from `usergroups.users.list`, cached for a minute. This is the
  policy gate's `Membership` port (bot/hands/gate.py), which decides who is an approver or
  staff on every surface; a failure to ask Slack is None, which the gate counts as "no".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cachetools import TTLCache
from slack_sdk.errors import SlackApiError

from bot.logs import get_logger
from bot.slack.client import SlackTeam

log = get_logger("deskhand.slack.directory")


@dataclass(frozen=True)
class Person:
    email: str | None = None
    name: str | None = None


class Directory:
    def __init__(self, teams: dict[str, SlackTeam], *, group_ttl_s: float = 60.0,
                 email_ttl_s: float = 600.0, lookup_timeout_s: float = 1.5):
        self.teams = teams
        self.lookup_timeout_s = lookup_timeout_s
        self._groups: TTLCache = TTLCache(maxsize=1_000, ttl=group_ttl_s)
        self._people: TTLCache = TTLCache(maxsize=50_000, ttl=email_ttl_s)  # (team, user) -> Person
        self._lookups: dict[tuple[str, str], asyncio.Future] = {}

    async def email(self, team_id: str, user_id: str) -> str | None:
        return (await self.person(team_id, user_id)).email

    async def name(self, team_id: str, user_id: str) -> str | None:
        """How a teammate signs an email: their full name, else their display name."""
        return (await self.person(team_id, user_id)).name

    async def person(self, team_id: str, user_id: str) -> Person:
        key = (team_id, user_id)
        if key in self._people:
            return self._people[key]
        waiting = self._lookups.get(key)
        if waiting is not None:  # someone is already asking Slack: share their answer
            return await asyncio.shield(waiting)
        answer = self._lookups[key] = asyncio.get_running_loop().create_future()
        person = Person()
        try:
            person = await self._fetch(team_id, user_id)
            return person
        finally:
            del self._lookups[key]
            answer.set_result(person)

    async def _fetch(self, team_id: str, user_id: str) -> Person:
        team = self.teams.get(team_id)
        if team is None:
            return Person()
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                response = await team.client.users_info(user=user_id)
        except (SlackApiError, TimeoutError, OSError) as exc:
            log.warning("users_info_failed", user=user_id, error=type(exc).__name__)
            return Person()  # not cached: asked again next time
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        person = Person(
            email=None if user.get("is_bot") else (profile.get("email") or None),
            name=profile.get("real_name") or user.get("real_name") or profile.get("display_name") or None,
        )
        self._people[(team_id, user_id)] = person
        return person

    async def group_members(self, team_id: str, usergroup: str) -> set[str] | None:
        """The group's members, or None when Slack cannot be asked (no such workspace, an error)."""
        key = (team_id, usergroup)
        if key in self._groups:
            return self._groups[key]
        team = self.teams.get(team_id)
        if team is None:
            return None
        try:
            response = await team.client.usergroups_users_list(usergroup=usergroup)
        except (SlackApiError, OSError) as exc:
            log.warning("usergroup_lookup_failed", usergroup=usergroup, error=type(exc).__name__)
            return None  # not cached: the next click asks again
        members = set(response.get("users") or [])
        self._groups[key] = members
        return members
