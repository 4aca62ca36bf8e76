"""App Home: what a teammate sees on Deskhand's Home tab, published with `views.publish`.

Everything shown is the opening user's own workspace's: its knowledge base (the same facts as
`/deskhand kb status`), what waits for people, and today's figures. Pending refunds and open
handoffs name customers, so the whole list is shown only to the tenant's approvers (configured
IDs or the approver user group) and admins; anyone else sees only their own requests and
conversations, and never a customer's email address.
"""

from __future__ import annotations

from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.kb_status import kb_facts
from bot.logs import get_logger
from bot.slack import blocks as bk
from bot.slack.mrkdwn import escape
from bot.slack.subcommands import midnight_utc
from bot.slack_ids import parse_session_id

log = get_logger("deskhand.slack.home")


class HomeTab:
    def __init__(self, runtime, teams):
        self.runtime = runtime
        self.store = runtime.store
        self.teams = teams

    async def view(self, team_id: str, viewer: str) -> dict:
        kb = None if self.runtime.kb is None else kb_facts(await self.runtime.kb_state(team_id))
        everyone = await self.runtime.gate.is_staff(team_id, viewer)  # approvers and admins (bot/hands/gate.py)
        team = self.teams[team_id]
        pending = []
        for action in await self.store.pending_list(team_id):
            if not everyone and action.requested_by != viewer:
                continue
            amount = action.args.get("amount")
            amount = f"{amount:.2f}" if isinstance(amount, (int, float)) else "?"
            pending.append({"summary": f"{escape(str(action.args.get('order_id', '?')))} · {amount} · "
                                       f"requested by {bk.person(action.requested_by)} · `{escape(action.id)}`"})
        handoffs = []
        for session in await self.store.sessions_with_status(team_id, HANDED_OFF):
            if not everyone and session["user_id"] != viewer:
                continue
            ref = parse_session_id(session["id"])
            if ref is not None:
                handoffs.append({"summary": team.where(ref.channel, ref.thread_ts, session["user_id"])})
            elif everyone and (mirror := await self.store.mirror_thread(session["id"])):  # an email conversation
                handoffs.append({"summary": f"email from {escape(session['user_id'])} in "
                                            + team.where(mirror["channel"], mirror["thread_ts"], session["user_id"])})
        today = await self.store.activity_since(team_id, midnight_utc())
        return bk.home(kb=kb, pending=pending, handoffs=handoffs, today=today, everyone=everyone)

    async def publish(self, team_id: str, user_id: str) -> None:
        view = await self.view(team_id, user_id)
        await self.teams[team_id].client.views_publish(user_id=user_id, view=view)
