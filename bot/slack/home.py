"""App Home: what a teammate sees on Deskhand's Home tab, published with `views.publish`.

Everything shown is the opening user's own workspace's: its knowledge base, its pending
approvals, its open handoffs and today's figures.
"""

from __future__ import annotations

import asyncio

from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.logs import get_logger
from bot.slack import blocks as bk
from bot.slack.commands import describe, midnight_utc
from bot.slack.ids import parse_session_id
from bot.slack.mrkdwn import escape

log = get_logger("deskhand.slack.home")


class HomeTab:
    def __init__(self, runtime, teams):
        self.runtime = runtime
        self.store = runtime.store
        self.teams = teams

    async def view(self, team_id: str) -> dict:
        kb = None
        if self.runtime.kb is not None:
            try:
                kb = describe(await asyncio.to_thread(self.runtime.kb.status, team_id))
            except Exception:
                log.exception("kb_status_failed")
                kb = {"status": "unavailable"}
        team = self.teams[team_id]
        pending = []
        for action in await self.store.pending_list(team_id):
            amount = action.args.get("amount")
            amount = f"{amount:.2f}" if isinstance(amount, (int, float)) else "?"
            pending.append({"summary": f"{escape(str(action.args.get('order_id', '?')))} · {amount} · "
                                       f"requested by {bk.person(action.requested_by)} · `{escape(action.id)}`"})
        handoffs = []
        for session in await self.store.sessions_with_status(team_id, HANDED_OFF):
            ref = parse_session_id(session["id"])
            if ref is not None:
                handoffs.append({"summary": team.where(ref.channel, ref.thread_ts, session["user_id"])})
            elif mirror := await self.store.mirror_thread(session["id"]):  # an email conversation
                handoffs.append({"summary": f"email from {escape(session['user_id'])} in "
                                            + team.where(mirror["channel"], mirror["thread_ts"], session["user_id"])})
        today = await self.store.activity_since(team_id, midnight_utc())
        return bk.home(kb=kb, pending=pending, handoffs=handoffs, today=today)

    async def publish(self, team_id: str, user_id: str) -> None:
        view = await self.view(team_id)
        await self.teams[team_id].client.views_publish(user_id=user_id, view=view)
