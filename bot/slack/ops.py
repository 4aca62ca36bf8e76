"""What Slack's buttons do: approve or reject a refund, hand a thread to a human and back,
and record 👍/👎; and what a teammate's reply in an email's mirror thread does. The handlers
(bot/handlers/) read a click into a `Click` and hand it here as a job.

Every decision goes through `Runtime` (approvals, handoff), so Slack, email and the CLI
share the rules; this module only adds Slack's side: checks that the click belongs to the
same workspace as what it acts on, ephemeral refusals, and updating the cards.

A click whose action fails is answered to the clicker, ephemerally: what failed and what to
do, worded by the error's type (bot/error_replies.py `TEAMMATE_REPLIES`). A transient failure
of an idempotent action (an approval, a handoff) is first retried once; anything else is
logged with its error. An approval whose refund fails stays pending, so its card keeps its
buttons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from weakref import WeakValueDictionary

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.brain.drafting import HANDED_OFF as HANDED_OFF_REPLY
from bot.error_replies import TEAMMATE_REPLIES, reply_for, teammate_reply
from bot.hands.errors import TransientError, error_from_result
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.handlers.payloads import Click, FeedbackReasons, TeammateReply
from bot.logs import get_logger
from bot.slack import blocks as bk
from bot.slack.approvers import Directory
from bot.slack.feedback_modal import reasons_view
from bot.slack.responder import SEND_ERRORS, SlackResponder
from bot.slack_ids import parse_session_id
from bot.surfaces import TeammateMail

log = get_logger("deskhand.slack.ops")

NOT_HERE = "I can't find that in this workspace. It may belong to another team, or be gone."


def transient(exc: BaseException) -> bool:
    """Whether the same click a moment later may well succeed."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 0)
        return status == 429 or status >= 500
    return isinstance(exc, (TransientError, TimeoutError, ConnectionError, aiohttp.ClientConnectionError))


def taken_over_by(name: str | None) -> str:
    return f"taken over by {name or 'a teammate'}"


class SlackOps:
    def __init__(self, runtime, responder: SlackResponder, directory: Directory,
                 mail: TeammateMail | None = None):
        self.runtime = runtime
        self.store = runtime.store
        self.responder = responder
        self.directory = directory
        self.mail = mail  # email, when the wiring connected it: a teammate's reply goes out there
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self.click_retry_s = 1.0  # before the one retry of a click that failed transiently

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def tell(self, click: Click, text: str) -> None:
        """An ephemeral reply only the clicker sees."""
        team = self.responder.teams.get(click.team)
        if team is None:
            return
        try:
            await team.ephemeral(click.channel, click.user, text)
        except SEND_ERRORS as exc:
            log.warning("ephemeral_failed", user=click.user, error=type(exc).__name__)

    async def answering(self, click: Click, action: Callable[[], Awaitable[None]], *, what: str,
                        idempotent: bool) -> None:
        """Run a click's action (a job); if it raises, retry it once when that is safe and may
        help, else log the error and tell the clicker it didn't go through."""
        for attempt in (1, 2):
            try:
                await action()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == 1 and idempotent and transient(exc):
                    log.warning("click_retried", click=what, user=click.user, error=repr(exc))
                    await asyncio.sleep(self.click_retry_s)
                    continue
                log.exception("click_failed", click=what, user=click.user, error=repr(exc))
                await self.tell(click, f"That didn't go through. {bk.escape(reply_for(exc, TEAMMATE_REPLIES))}")
                return

    # -- approvals ---------------------------------------------------------------------------
    async def decide(self, click: Click, approve: bool) -> None:
        action = await self.store.pending_get(click.value)
        if action is None or action.tenant_id != click.team:
            await self.tell(click, NOT_HERE)
            return
        decision = await self.runtime.decide(action.id, click.user, approve)
        if decision.status == "failed" and isinstance(error_from_result(decision.result), TransientError):
            # The request went back to pending and its key keeps the refund to one: try once more.
            log.warning("approval_retried", action_id=action.id, error=decision.result.error)
            await asyncio.sleep(self.click_retry_s)
            decision = await self.runtime.decide(action.id, click.user, approve)
        if decision.status == "failed":  # still pending: the card keeps its buttons
            log.warning("approval_failed", action_id=action.id, error_kind=decision.result.error_kind,
                        error=decision.result.error)
            order = action.args.get("order_id", "")
            await self.tell(click, f"The refund for order {bk.escape(order)} didn't go through, so the request is "
                                   f"still open on its card. {bk.escape(teammate_reply(decision.result))}")
            return
        if decision.status == "already_decided" and decision.action is not None:
            await self.tell(click, f"Already {decision.action.status} by <@{decision.action.decided_by}>.")
            return
        if decision.status not in ("approved", "rejected"):
            await self.tell(click, bk.escape(decision.message))
            return
        await self._update_card(click, decision)

    async def _update_card(self, click: Click, decision) -> None:
        action = decision.action
        meta = await self.store.pending_metadata(action.id)
        channel, ts = meta.get("card_channel") or click.channel, meta.get("card_ts") or click.message_ts
        where = self.responder.where(action.session_id, action.requested_by)
        _, card = bk.approval_card(action_id=action.id, args=action.args, requester=action.requested_by, where=where)
        data = decision.result.data if decision.result and decision.result.ok else {}
        detail = f"refund {data['refund_id']}" if data.get("refund_id") else ""
        when = action.decided_at or datetime.now(timezone.utc)
        text, blocks = bk.decided_card(card, status=decision.status, decider=click.user, when=when, detail=detail)
        await self.responder.send({"op": "update", "team": click.team, "channel": channel, "ts": ts,
                                   "text": text, "blocks": blocks}, session_id=action.session_id)

    # -- handoff -------------------------------------------------------------------------------
    async def _session_in(self, team_id: str, session_id: str) -> dict | None:
        """A conversation of this workspace (a Slack thread, or an email conversation of this
        tenant), or None. A link to an email conversation's mirror thread stands for it."""
        ref = parse_session_id(session_id)
        if ref is not None:
            if ref.team != team_id:
                return None
            session_id = await self.store.mirror_session(ref.team, ref.channel, ref.thread_ts) or session_id
        session = await self.store.session_get(session_id)
        return session if session is not None and session["tenant_id"] == team_id else None

    async def handoff(self, click: Click) -> None:
        session = await self._session_in(click.team, click.value)
        if session is None:
            await self.tell(click, NOT_HERE)
            return
        session_id = session["id"]
        async with self._lock(session_id):
            session = await self.store.session_get(session_id) or session
            if session["status"] == HANDED_OFF:
                await self.tell(click, "A teammate already has this conversation.")
                return
            trigger = f"click:{click.channel}:{click.message_ts}:{click.user}:{click.action_ts}"
            result = await self.runtime.hand_off(session_id, click.user, "asked for a human (button)", trigger)
            if result is None or not result.ok:
                await self.tell(click, "I couldn't reach the support team just now. Please try again in a minute.")
                return
            if result.cached:  # a redelivered click: already done
                return
            if parse_session_id(session_id) is None:  # an email: a teammate took it over from Slack
                name = await self.directory.name(click.team, click.user)
                await self.responder.post_handoff_card(session_id, who=session["user_id"],
                                                       reason=taken_over_by(name), key=trigger)
                return
            await self.runtime.orchestrator.notify(session_id, HANDED_OFF_REPLY, handoff=True)
            await self.responder.post_handoff_card(session_id, who=click.user, reason="asked for a human",
                                                   key=trigger)

    async def teammate_reply(self, reply: TeammateReply) -> None:
        """A teammate answered an email conversation in its Slack thread: the conversation is
        theirs (Deskhand stays quiet until it is handed back) and their words go to the
        customer as an email reply. Runs before the ack, so a crash means Slack delivers the
        message again; every step is keyed by the message, so it is emailed once."""
        if reply.note or not reply.text:
            return
        author = Click(reply.team, reply.user, reply.channel, reply.ts, "")  # for ephemeral answers
        if self.mail is None:
            await self.tell(author, "Email is not connected in this Deskhand just now, so that reply was not sent.")
            return
        session_id = reply.session_id
        async with self._lock(session_id):
            session = await self.store.session_get(session_id)
            if session is None or session["tenant_id"] != reply.team:
                return
            name = await self.directory.name(reply.team, reply.user)
            trigger = f"mail-reply:{reply.channel}:{reply.ts}"
            if session["status"] != HANDED_OFF:
                result = await self.runtime.hand_off(session_id, reply.user, taken_over_by(name), trigger)
                if result is None or not result.ok:
                    await self.tell(author, "I couldn't take this conversation over just now, so your reply was "
                                            "not sent. Please try again in a minute.")
                    return
                await self.responder.post_handoff_card(session_id, who=session["user_id"],
                                                       reason=taken_over_by(name), key=trigger)
            await self.mail.reply_as_teammate(session_id, reply.text, author=name or "A teammate", key=reply.ts)
            await self.store.add_message(session_id, session["tenant_id"], "assistant", reply.text, trigger,
                                         {"teammate": reply.user})

    async def handback(self, team_id: str, user: str, session_id: str) -> str:
        """Return a conversation to Deskhand; the answer says what happened (for an ephemeral)."""
        session = await self._session_in(team_id, session_id)
        if session is None:
            return NOT_HERE
        session_id = session["id"]
        if not await self.runtime.gate.is_staff(team_id, user):
            await self.store.audit(team_id, user, "handback_refused", session_id)
            return "Only support teammates (approvers and admins) can hand a conversation back."
        async with self._lock(session_id):
            if not await self.runtime.hand_back(session_id, user):
                return "That conversation isn't with a human right now."
        await self._mark_handed_back(team_id, user, session_id)
        return "Handed back: Deskhand answers in that thread again."

    async def handback_click(self, click: Click) -> None:
        message = await self.handback(click.team, click.user, click.value)
        if not message.startswith("Handed back"):
            await self.tell(click, message)

    async def _mark_handed_back(self, team_id: str, user: str, session_id: str) -> None:
        session = await self.store.session_get(session_id) or {"metadata": {}}
        support = self.runtime.settings.policy(team_id).support_channel
        cards = [ts for key, ts in session["metadata"].items() if key.startswith("handoff_card:") and ts]
        if not support or not cards:
            return
        _, card = await self.responder.handoff_card(session_id, who=session["user_id"],
                                                    reason=session["metadata"].get("handoff_reason", ""))
        text, blocks = bk.handed_back_card(card, by=user, when=datetime.now(timezone.utc))
        for ts in cards:
            await self.responder.send({"op": "update", "team": team_id, "channel": support, "ts": ts,
                                       "text": text, "blocks": blocks}, session_id=session_id)
        await self.store.session_update(session_id, **{k: "" for k in session["metadata"] if k.startswith("handoff_card:")})

    # -- feedback -------------------------------------------------------------------------------
    async def feedback(self, click: Click, value: str) -> None:
        row = await self.store.inbox_get(click.value)
        if row is None or row["tenant_id"] != click.team:
            await self.tell(click, NOT_HERE)
            return
        feedback_id = await self.store.add_feedback(click.team, row["session_id"], row["id"], click.user, value)
        if value == "down" and await self._ask_what_went_wrong(click, feedback_id):
            return  # the modal says thanks; its answers arrive as `feedback_reasons`
        await self.tell(click, "Thanks for the feedback!" if value == "up"
                        else "Thanks for telling me. A teammate reviews answers marked 👎.")

    async def _ask_what_went_wrong(self, click: Click, feedback_id: int) -> bool:
        """Open the reasons modal for a 👎; False if it could not be opened (the 👎 stays)."""
        team = self.responder.teams.get(click.team)
        if team is None or not click.trigger_id:
            return False
        try:
            await team.client.views_open(trigger_id=click.trigger_id, view=reasons_view(feedback_id, click.channel))
        except SEND_ERRORS as exc:  # an expired trigger (3 s) or Slack down: the 👎 alone is kept
            log.warning("feedback_modal_failed", error=type(exc).__name__)
            return False
        return True

    async def feedback_reasons(self, submitted: FeedbackReasons) -> None:
        stored = await self.store.feedback_add_reasons(submitted.feedback_id, submitted.team, submitted.user,
                                                       submitted.reasons, submitted.comment)
        log.info("feedback_reasons", stored=stored, reasons=submitted.reasons)
        if stored and submitted.channel:
            await self.tell(Click(submitted.team, submitted.user, submitted.channel, "", ""),
                            "Thanks for telling me what went wrong. A teammate reviews answers marked 👎.")
