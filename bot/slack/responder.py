"""SlackResponder: how a turn's outcome reaches Slack (`Surfaces.slack`).

- `acknowledge(envelope)` posts "Looking into it…" in the thread as soon as a message is
  accepted (as a job, after the ack). Its ts is kept in the session's metadata, so a turn
  finished after a restart updates that placeholder instead of posting a second message.
  Under load, placeholder posts queue behind acks; if the answer is ready before its
  placeholder has been sent, the placeholder is dropped and the answer posted instead.
- `deliver` replaces the placeholder with the answer (`chat.update`), then queues an approval
  card or a handoff card for the tenant's support channel when the outcome calls for one.
  Cards go through the outbox (written first, posted by the retrier): a busy support channel
  is paced at one post a second, and no turn worker waits for that.
- `notify` posts a notice in a conversation's thread (e.g. an approval's outcome).
- `follow_up` posts a degraded turn's late answer as a new message in its thread (bot/deadline.py).
- Nothing is lost silently: a post that fails after the SDK's own retries is written to the
  store's outbox and retried by `run_outbox` as the outbox's one `RetryPolicy` says
  (bot/outbox_policy.py), across restarts too; one that fails every attempt is given up to
  `deskhand dlq`, where it can be retried or dropped.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.logs import get_logger
from bot.outbox_policy import RetryPolicy
from bot.redact import mask_pii
from bot.shadow import is_shadow
from bot.slack import blocks as bk
from bot.slack.client import SlackTeam
from bot.slack.jobs import Jobs
from bot.slack_ids import parse_session_id, placeholder_key

log = get_logger("deskhand.slack.responder")

SEND_ERRORS = (SlackApiError, aiohttp.ClientError, TimeoutError, KeyError, OSError)
MAX_INFLIGHT_PLACEHOLDERS = 10_000


@dataclass
class _Placeholder:
    """A message's "Looking into it…" post, from the ack until the answer replaces it."""

    posted: asyncio.Future  # its ts once posted (None: not posted, or failed)
    sending: bool = False  # the post has left: the answer waits for it and updates it
    dropped: bool = False  # the answer was ready first: it is never posted

    def settle(self, ts: str | None) -> None:
        if not self.posted.done():
            self.posted.set_result(ts)


class SlackResponder:
    def __init__(self, *, teams: dict[str, SlackTeam], store, settings, jobs: Jobs,
                 outbox_poll_s: float = 5.0, outbox_policy: RetryPolicy | None = None,
                 max_placeholders_in_flight: int = 32):
        self.teams = teams
        self.store = store
        self.settings = settings
        self.jobs = jobs
        self.outbox_poll_s = outbox_poll_s
        self.outbox_policy = outbox_policy or RetryPolicy.from_settings(settings)
        self._placeholders: OrderedDict[str, _Placeholder] = OrderedDict()
        self._wake = asyncio.Event()
        self._posting = asyncio.Semaphore(max_placeholders_in_flight)
        self.mail_mirror = None  # a SlackMailMirror when email is mirrored (see bot/run.py)

    def wake(self) -> None:
        """Make the retrier look at the outbox now (something was queued)."""
        self._wake.set()

    # -- placeholder -------------------------------------------------------------------------
    def acknowledge(self, envelope) -> None:
        """Start posting the placeholder for a freshly accepted message (does not wait)."""
        if is_shadow(self.settings.policy(envelope.tenant_id), envelope.channel.value):
            return  # a shadow turn posts nothing, not even its placeholder
        placeholder = _Placeholder(asyncio.get_running_loop().create_future())
        self._placeholders[envelope.id] = placeholder
        while len(self._placeholders) > MAX_INFLIGHT_PLACEHOLDERS:  # turns that never deliver
            _, stale = self._placeholders.popitem(last=False)
            stale.settle(None)
        self.jobs.spawn(self._post_placeholder(envelope, placeholder), name="slack-placeholder")

    async def _post_placeholder(self, envelope, placeholder: _Placeholder) -> None:
        ts = None
        try:
            session = await self.store.session_get_or_create(envelope)
            if session["status"] == HANDED_OFF:  # a teammate has it: stay silent
                self._placeholders.pop(envelope.id, None)
                return
            meta = envelope.metadata
            text, blocks = bk.placeholder()
            async with self._posting:
                if placeholder.dropped:  # the answer was ready first and is posted instead
                    return
                placeholder.sending = True
                ts = await self.teams[envelope.tenant_id].post(meta["slack_channel"], text, blocks,
                                                               thread_ts=meta["thread_ts"])
            await self.store.session_update(envelope.session_id, **{placeholder_key(envelope.id): ts})
        except SEND_ERRORS as exc:  # the answer is then posted as a new message
            log.warning("placeholder_failed", inbox_id=envelope.id, error=_describe(exc))
        finally:
            placeholder.settle(ts)

    async def _placeholder_ts(self, envelope) -> str | None:
        placeholder = self._placeholders.pop(envelope.id, None)
        if placeholder is not None:
            if not placeholder.sending:
                # Under load, placeholders queue (acks come first). One that has not left
                # yet would be replaced before anyone could read it: drop it, post the answer.
                placeholder.dropped = True
                return None
            return await placeholder.posted
        session = await self.store.session_get(envelope.session_id) or {"metadata": {}}
        return session["metadata"].get(placeholder_key(envelope.id)) or await self._orphan_placeholder(envelope)

    async def _orphan_placeholder(self, envelope) -> str | None:
        """A turn this process did not start (a restart) and no placeholder ts stored: the
        previous process may have stopped between posting the placeholder and storing its ts.
        Look for Deskhand's placeholder after the message in its thread, so the answer
        replaces it instead of leaving "Looking into it…" behind. One call, on resumed turns only."""
        meta, team = envelope.metadata, self.teams.get(envelope.tenant_id)
        shadow = is_shadow(self.settings.policy(envelope.tenant_id), envelope.channel.value)
        if team is None or "message_ts" not in meta or shadow:
            return None
        try:
            response = await team.client.conversations_replies(
                channel=meta["slack_channel"], ts=meta["thread_ts"], oldest=meta["message_ts"], limit=200)
        except SEND_ERRORS as exc:
            log.warning("placeholder_lookup_failed", inbox_id=envelope.id, error=_describe(exc))
            return None
        for message in response.get("messages") or []:
            if (message.get("user") == team.bot_user_id and message.get("text") == bk.PLACEHOLDER
                    and float(message["ts"]) > float(meta["message_ts"])):
                return message["ts"]
        return None

    # -- Responder protocol ------------------------------------------------------------------
    async def deliver(self, envelope, outcome) -> None:
        meta = envelope.metadata
        ts = await self._placeholder_ts(envelope)
        text, blocks = bk.answer(
            outcome.reply or "", outcome.citations, inbox_id=envelope.id, session_id=envelope.session_id,
            pending_review=bool(outcome.pending_action_id), offer_handoff=outcome.state != "HANDED_OFF")
        await self.send({"op": "update" if ts else "post", "team": envelope.tenant_id,
                         "channel": meta["slack_channel"], "ts": ts, "thread_ts": meta["thread_ts"],
                         "text": text, "blocks": blocks},
                        session_id=envelope.session_id, inbox_id=envelope.id)
        if outcome.pending_action_id:
            await self.post_approval_card(envelope, outcome.pending_action_id)
        if outcome.state == "HANDED_OFF":
            await self.post_handoff_card(envelope.session_id, who=envelope.user_id,
                                         reason="asked for a human", key=envelope.id)

    async def follow_up(self, envelope, outcome) -> None:
        """A degraded turn's late answer (bot/deadline.py): a new message in the thread, under
        the degrade reply. A new message notifies the customer (an edit would not) and leaves
        the degrade reply readable. Queued under `late:<inbox id>`, so it is posted once."""
        meta = envelope.metadata
        text, blocks = bk.answer(
            outcome.reply or "", outcome.citations, inbox_id=envelope.id, session_id=envelope.session_id,
            pending_review=bool(outcome.pending_action_id), offer_handoff=outcome.state != "HANDED_OFF")
        await self.queue({"op": "post", "team": envelope.tenant_id, "channel": meta["slack_channel"],
                          "thread_ts": meta["thread_ts"], "text": text, "blocks": blocks},
                         session_id=envelope.session_id, inbox_id=envelope.id, key=f"late:{envelope.id}")
        if outcome.pending_action_id:
            await self.post_approval_card(envelope, outcome.pending_action_id)

    async def notify(self, session: dict, text: str, **info: Any) -> None:
        ref = parse_session_id(session["id"])
        if ref is None or is_shadow(self.settings.policy(ref.team), session["channel"]):
            return
        fallback, blocks = bk.notice(text, markdown=True)  # a message to the customer: Markdown
        payload = {"op": "post", "team": ref.team, "channel": ref.channel,
                   "thread_ts": await self._notice_thread(session["id"], ref), "text": fallback, "blocks": blocks}
        if info.get("key"):  # a notice that may be sent again after a crash: the outbox key posts it once
            await self.queue(payload, session_id=session["id"], key=f"notice:{info['key']}")
            return
        await self.send(payload, session_id=session["id"])

    async def _notice_thread(self, session_id: str, ref) -> str:
        """Where a notice goes: the conversation's thread, or in a DM (where one conversation
        may span several top-level messages, bot/conversations.py) under its newest message."""
        if not ref.channel.startswith("D"):
            return ref.thread_ts
        latest = await self.store.inbox_latest(session_id)
        return latest.metadata.get("thread_ts", ref.thread_ts) if latest else ref.thread_ts

    # -- cards in the support channel --------------------------------------------------------
    async def post_approval_card(self, envelope, action_id: str) -> None:
        action = await self.store.pending_get(action_id)
        if action is None or action.status != "pending" or action.tenant_id != envelope.tenant_id:
            return
        meta = await self.store.pending_metadata(action_id)
        if meta.get("card_ts") or meta.get("card_queued"):
            return  # queued by an earlier delivery of this outcome
        support = self.settings.policy(envelope.tenant_id).support_channel
        team = self.teams.get(envelope.tenant_id)
        if not support or team is None:
            log.warning("approval_card_not_posted", action_id=action_id, reason="no support channel")
            return
        where = team.where(envelope.metadata["slack_channel"], envelope.metadata["thread_ts"], envelope.user_id)
        text, blocks = bk.approval_card(action_id=action_id, args=action.args, requester=action.requested_by,
                                        where=where)
        await self.queue({"op": "post", "team": envelope.tenant_id, "channel": support, "text": text,
                          "blocks": blocks, "record": {"pending_card": action_id}},
                         session_id=envelope.session_id, inbox_id=envelope.id, key=f"approval_card:{action_id}")
        await self.store.pending_update_metadata(action_id, card_queued=True)

    async def post_handoff_card(self, session_id: str, *, who: str, reason: str, key: str) -> None:
        session = await self.store.session_get(session_id)
        if session is None or session["metadata"].get(f"handoff_card:{key}"):
            return
        team_id = session["tenant_id"]
        support = self.settings.policy(team_id).support_channel
        if not support or team_id not in self.teams or is_shadow(self.settings.policy(team_id), session["channel"]):
            log.warning("handoff_card_not_posted", session_id=session_id)
            return
        if parse_session_id(session_id) is None and self.mail_mirror is not None:
            # An email conversation: the card goes in its mirror thread.
            await self.mail_mirror.handoff_card(team_id, session_id, who=who, reason=reason, key=key)
            return
        text, blocks = await self.handoff_card(session_id, who=who, reason=reason)
        await self.queue({"op": "post", "team": team_id, "channel": support, "text": text, "blocks": blocks,
                          "record": {"session": session_id, "key": f"handoff_card:{key}"}},
                         session_id=session_id, key=f"handoff_card:{session_id}:{key}")

    async def handoff_card(self, session_id: str, *, who: str, reason: str) -> tuple[str, list[dict]]:
        """The handoff card for a conversation, with a redacted excerpt of its transcript."""
        return bk.handoff_card(session_id=session_id, who=who, reason=reason,
                               excerpt=await redacted_transcript(self.store, session_id),
                               where=self.where(session_id, who))

    def where(self, session_id: str, who: str) -> str:
        """Where a conversation is, for a card: a link to its Slack thread, or its email thread."""
        ref = parse_session_id(session_id)
        if ref is None:
            return bk.EMAIL_THREAD
        team = self.teams.get(ref.team)
        return team.where(ref.channel, ref.thread_ts, who) if team else "another workspace"

    # -- sending, and the outbox -------------------------------------------------------------
    async def send(self, payload: dict, *, session_id: str = "", inbox_id: str = "") -> str | None:
        """Post or update now; if Slack cannot be reached, queue it in the outbox. Never raises."""
        try:
            return await self._perform(payload)
        except SEND_ERRORS as exc:
            log.warning("slack_send_queued", op=payload["op"], channel=payload["channel"], error=_describe(exc))
            await self.store.outbox_add(payload["team"], "slack", session_id, inbox_id, payload)
            self._wake.set()
            return None

    async def queue(self, payload: dict, *, session_id: str = "", inbox_id: str = "", key: str | None = None) -> None:
        """Send soon and durably: written to the outbox, then posted by the retrier. With a
        `key`, a second queue of the same post (a turn re-run after a crash) queues nothing."""
        await self.store.outbox_add(payload["team"], "slack", session_id, inbox_id, payload, key=key)
        self._wake.set()

    async def _perform(self, payload: dict) -> str:
        team = self.teams[payload["team"]]
        channel, text, blocks = payload["channel"], payload["text"], payload.get("blocks")
        ts, thread_ts = None, payload.get("thread_ts")
        if payload.get("mirror_of"):  # a post in an email conversation's mirror thread
            thread = await self.store.mirror_thread(payload["mirror_of"])
            if thread is None:
                raise KeyError("the mirror thread is not posted yet")  # retried after its first post
            thread_ts = thread["thread_ts"]
        if payload["op"] == "update" and payload.get("ts"):
            try:
                ts = await team.update(channel, payload["ts"], text, blocks)
            except SlackApiError as exc:
                if exc.response.get("error") not in ("message_not_found", "cant_update_message"):
                    raise
        if ts is None:  # a post, or a placeholder that is gone
            ts = await team.post(channel, text, blocks, thread_ts=thread_ts)
        await self._record(payload.get("record"), payload["team"], channel, ts)
        return ts

    async def _record(self, record: dict | None, team: str, channel: str, ts: str) -> None:
        if not record:
            return
        if "mirror" in record:
            await self.store.mirror_record(record["mirror"], team, channel, ts)
        if "pending_card" in record:
            await self.store.pending_update_metadata(record["pending_card"], card_channel=channel, card_ts=ts)
        if "session" in record:
            await self.store.session_update(record["session"], **{record["key"]: ts})

    async def run_outbox(self, stop: asyncio.Event) -> None:
        """Retry queued posts until `stop` is set: at once when woken, else every few seconds."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.flush_outbox(stop)
            except Exception:  # e.g. the store failing: keep the retrier alive, try again later
                log.exception("outbox_flush_failed")
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=self.outbox_poll_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def flush_outbox(self, stop: asyncio.Event | None = None) -> int:
        sent = 0
        for row in await self.store.outbox_due("slack"):
            if stop is not None and stop.is_set():
                break  # shutting down: the rest waits in the outbox for the next start
            if row["payload"].get("team") not in self.teams:
                continue  # that workspace is not connected to this process
            try:
                await self._perform(row["payload"])
            except SEND_ERRORS as exc:
                due = self.outbox_policy.next_attempt(row["attempts"] + 1, datetime.now(timezone.utc))
                await self.store.outbox_mark_failed(row["id"], _describe(exc), due.isoformat() if due else None)
                if due is None:
                    log.warning("slack_post_given_up", outbox_id=row["id"], attempts=row["attempts"] + 1,
                                error=_describe(exc), hint=f"deskhand dlq retry outbox:{row['id']}")
            else:
                await self.store.outbox_mark_sent(row["id"])
                sent += 1
        return sent


async def redacted_transcript(store, session_id: str, limit: int = 12) -> str:
    """A conversation's last messages for a teammate's card, with PII masked."""
    history = await store.history(session_id, limit)
    return mask_pii("\n".join(f"{'Customer' if h['role'] == 'user' else 'Deskhand'}: {h['text']}" for h in history))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return f"slack:{exc.response.get('error')}"
    return type(exc).__name__
