"""Timers that survive restarts: refund requests that expire, handoffs nobody picked up.

One apscheduler interval job (`DESKHAND_TIMERS_INTERVAL_S`, and once right at start) works
everything out from the store each time it runs. Nothing waits in memory, so a process
started after a crash or a deploy catches up on whatever fell due while none was running.

Refund expiry. A pending action older than its tenant's `pending_ttl_hours` moves
pending → expired in one conditional update (`pending_decide`), the same one an approver's
click makes: of a click and the expiry exactly one wins, and an Approve on an expired
request is answered "expired", running nothing. Only the winner goes on, and an `expired`
status is itself the note of what is still owed: the card in the support channel updated
(`expiry_card` in the action's metadata once done) and the customer told (`expiry_notice`).
A crash after the update leaves those unset, so the next run does them. The notice carries
a key: the Slack post is keyed in the outbox and the email one by its text, so a crash
between sending the notice and noting it cannot tell the customer twice (the transcript
may then hold the notice twice; the customer sees it once).

Handoff SLA. A conversation handed to a person (`escalate_to_human`: session
`handed_off`, audit `handoff`) that nobody answered within the tenant's
`handoff_sla_minutes` gets one ping in the support channel, in the thread of its handoff
card, mentioning the tenant's approver user group. "Answered" means, since that handoff:
the conversation was handed back (no longer `handed_off`); or anyone other than the
customer wrote in it (a teammate in its Slack thread, a teammate's email reply from the
mirror thread); or a teammate started the handoff themselves ("Take over", a reply in an
email's mirror thread: the `handoff` audit entry's actor is not the customer). A reply in
the handoff card's own thread is not seen (Deskhand does not listen there). The ping is
keyed by the handoff's audit entry in the outbox and noted in the session's metadata
(`handoff_sla_pinged`), so a restart never pings again; a later handoff of the same
conversation can be chased again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bot.contracts import PendingAction
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.logs import get_logger
from bot.shadow import is_shadow
from bot.slack import blocks as bk
from bot.slack_ids import parse_session_id
from bot.store.rows import loads

log = get_logger("deskhand.timers")

JOB_ID = "deskhand_timers"
ACTOR = "deskhand"  # who the audit log and `decided_by` name for an expiry
# How long after expiring an action its card and notice are still retried (Slack down,
# the card not posted yet). Past this the run stops looking at it.
SETTLE_WITHIN = timedelta(days=2)
# A card (approval, handoff) may still be on its way in the outbox when its timer falls due:
# the timer waits this long for the card's ts before acting without it.
CARD_GRACE = timedelta(hours=1)
HANDOFF_CARD_GRACE = timedelta(minutes=10)


@dataclass
class TimerRun:
    """What one run did (logged as `timers_run`)."""

    expired: int = 0
    settled: int = 0
    pinged: int = 0


def register(scheduler, runtime, slack) -> None:
    """Add the timers job to `deskhand run`'s scheduler (bot/schedule.py)."""
    timers = Timers(runtime, slack)
    scheduler.add_job(timers.run, "interval", seconds=runtime.settings.timers_interval_s, id=JOB_ID,
                      next_run_time=datetime.now(timezone.utc), max_instances=1, coalesce=True)


def expired_notice(action: PendingAction) -> str:
    order = action.args.get("order_id", "")
    return (f"Your refund request for order {order} wasn't reviewed in time, so it has expired and no refund "
            "was made. If you still need it, just ask again here and a teammate will look at it.")


def waited(minutes: float) -> str:
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{round(minutes)} minutes"
    return f"{minutes / 60:.0f} hours"


class Timers:
    def __init__(self, runtime, slack=None):
        self.runtime = runtime
        self.store = runtime.store
        self.settings = runtime.settings
        self.slack = slack  # the SlackSurface of `deskhand run` (None: no card updates or pings)

    async def run(self) -> TimerRun:
        """One pass over everything due. A failure with one item is logged and retried next run."""
        done = TimerRun()
        now = datetime.now(timezone.utc)
        for action in await self.store.pending_list(status="pending"):
            ttl = self.settings.policy(action.tenant_id).pending_ttl_hours
            if action.created_at + timedelta(hours=ttl) <= now and await self._step(self.expire(action, ttl)):
                done.expired += 1
        for action in await self.store.pending_list(status="expired"):
            if action.decided_at and action.decided_at >= now - SETTLE_WITHIN and await self._step(self.settle(action)):
                done.settled += 1
        for tenant_id in self._tenants():
            for session in await self.store.sessions_with_status(tenant_id, HANDED_OFF):
                if await self._step(self.chase(session, now)):
                    done.pinged += 1
        log.info("timers_run", expired=done.expired, settled=done.settled, pinged=done.pinged)
        return done

    @staticmethod
    async def _step(work) -> bool:
        try:
            return bool(await work)
        except Exception:  # one bad row must not stop the others; the next run tries again
            log.exception("timer_step_failed")
            return False

    def _tenants(self) -> set[str]:
        teams = set(self.slack.teams) if self.slack is not None else set()
        return set(self.settings.tenants) | teams | {self.settings.mail_tenant}

    # -- refund expiry ----------------------------------------------------------------------
    async def expire(self, action: PendingAction, ttl_hours: float) -> bool:
        """pending → expired, if nobody decided first. True if this run expired it."""
        if not await self.store.pending_decide(action.id, "expired", ACTOR):
            return False  # an approver's click won
        await self.store.audit(action.tenant_id, ACTOR, "expired", action.id,
                               {"ttl_hours": ttl_hours, "tool": action.tool})
        log.info("pending_expired", action_id=action.id, tenant_id=action.tenant_id)
        return True

    async def settle(self, action: PendingAction) -> bool:
        """What an expiry still owes: the card updated, the customer told. True when all done."""
        meta = await self.store.pending_metadata(action.id)
        if meta.get("expiry_card") and meta.get("expiry_notice"):
            return False
        if not meta.get("expiry_card") and await self._update_card(action, meta):
            await self.store.pending_update_metadata(action.id, expiry_card=True)
        if not meta.get("expiry_notice"):
            await self.runtime.orchestrator.notify(action.session_id, expired_notice(action), action_id=action.id,
                                                   decision="expired", key=f"expired:{action.id}")
            await self.store.pending_update_metadata(action.id, expiry_notice=True)
        return bool((await self.store.pending_metadata(action.id)).get("expiry_card"))

    async def _update_card(self, action: PendingAction, meta: dict) -> bool:
        """Show the expiry on the approval card. True when there is nothing more to do."""
        policy = self.settings.policy(action.tenant_id)
        if not meta.get("card_ts"):
            on_its_way = policy.support_channel and not policy.shadow_mode and (
                action.decided_at is None or datetime.now(timezone.utc) - action.decided_at < CARD_GRACE)
            return not on_its_way  # no card was posted: nothing to update
        if self.slack is None or action.tenant_id not in self.slack.teams:
            return False  # that workspace is not connected to this process
        responder = self.slack.responder
        where = responder.where(action.session_id, action.requested_by)
        _, card = bk.approval_card(action_id=action.id, args=action.args, requester=action.requested_by, where=where)
        text, blocks = bk.expired_card(card, when=action.decided_at or datetime.now(timezone.utc))
        # `send` updates now, or queues the update in the outbox when Slack cannot be reached.
        await responder.send({"op": "update", "team": action.tenant_id, "channel": meta["card_channel"],
                              "ts": meta["card_ts"], "text": text, "blocks": blocks}, session_id=action.session_id)
        return True

    # -- handoff SLA ------------------------------------------------------------------------
    async def chase(self, session: dict, now: datetime) -> bool:
        """Ping the support channel about a handoff past its SLA, once. True if pinged now."""
        policy = self.settings.policy(session["tenant_id"])
        if policy.handoff_sla_minutes <= 0 or not policy.support_channel or is_shadow(policy, session["channel"]):
            return False
        if self.slack is None or session["tenant_id"] not in self.slack.teams:
            return False
        handoff = await self._latest_handoff(session["id"])
        meta = loads(session["metadata"], {}) if isinstance(session["metadata"], str) else session["metadata"]
        if handoff is None or meta.get("handoff_sla_pinged") == handoff["id"]:
            return False
        due = datetime.fromisoformat(handoff["ts"]) + timedelta(minutes=policy.handoff_sla_minutes)
        if due > now:
            return False
        if await self._answered(session, handoff):
            return False
        thread_ts = None
        if parse_session_id(session["id"]) is not None:  # a Slack conversation: ping in its card's thread
            cards = sorted((ts for key, ts in meta.items() if key.startswith("handoff_card:") and ts), key=float)
            thread_ts = cards[-1] if cards else None
            if thread_ts is None and due + HANDOFF_CARD_GRACE > now:
                return False  # its card is still on its way (the outbox): wait for it a while
        await self._ping(session, thread_ts, handoff, policy)
        await self.store.session_update(session["id"], handoff_sla_pinged=handoff["id"])
        await self.store.audit(session["tenant_id"], ACTOR, "handoff_sla_ping", session["id"],
                               {"handoff": handoff["id"], "sla_minutes": policy.handoff_sla_minutes})
        log.info("handoff_sla_ping", session_id=session["id"], tenant_id=session["tenant_id"])
        return True

    async def _latest_handoff(self, session_id: str) -> dict | None:
        handoffs = [e for e in await self.store.audit_entries(session_id) if e["action"] == "handoff"]
        return handoffs[-1] if handoffs else None

    async def _answered(self, session: dict, handoff: dict) -> bool:
        if handoff["actor"] != session["user_id"]:
            return True  # a teammate took it over themselves
        return await self.store.someone_else_wrote_since(session["id"], session["user_id"], handoff["ts"])

    async def _ping(self, session: dict, thread_ts: str | None, handoff: dict, policy) -> None:
        responder = self.slack.responder
        minutes = (datetime.now(timezone.utc) - datetime.fromisoformat(handoff["ts"])).total_seconds() / 60
        text, blocks = bk.handoff_reminder(where=responder.where(session["id"], session["user_id"]),
                                           waited=waited(minutes), usergroup=policy.approver_usergroup)
        payload = {"op": "post", "team": session["tenant_id"], "channel": policy.support_channel,
                   "text": text, "blocks": blocks}
        if parse_session_id(session["id"]) is None:
            payload["mirror_of"] = session["id"]  # an email conversation: its mirror thread holds the card
        elif thread_ts:
            payload["thread_ts"] = thread_ts  # no card ever posted: the ping stands on its own
        await responder.queue(payload, session_id=session["id"], key=f"handoff_sla:{session['id']}:{handoff['id']}")
