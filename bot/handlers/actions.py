"""Buttons: each click is acked at once and handed to `SlackOps` as a job.

Approve/Reject on approval cards, 👍/👎 and "Talk to a human" on answers, "Hand back" on
handoff cards; and the submission of the modal a 👎 opens (what went wrong). What a click may
do, and to what, is decided in `bot/slack/ops.py`.
"""

from __future__ import annotations

import re

from slack_bolt.app.async_app import AsyncApp

from bot.slack import blocks as bk
from bot.slack.feedback_modal import FEEDBACK_VIEW, reasons_from
from bot.slack.ops import Click


def click_from(body: dict) -> Click:
    action = body["actions"][0]
    container = body.get("container") or {}
    return Click(
        team=(body.get("team") or {}).get("id") or body["user"]["team_id"], user=body["user"]["id"],
        channel=container.get("channel_id") or (body.get("channel") or {}).get("id", ""),
        message_ts=container.get("message_ts", ""), value=action.get("value", ""),
        action_ts=action.get("action_ts", ""), trigger_id=body.get("trigger_id", ""),
    )


async def on_approve(ack, body, ops, jobs):
    await ack()
    jobs.spawn(ops.decide(click_from(body), approve=True), name="slack-approve")


async def on_reject(ack, body, ops, jobs):
    await ack()
    jobs.spawn(ops.decide(click_from(body), approve=False), name="slack-reject")


async def on_feedback_up(ack, body, ops, jobs):
    await ack()
    jobs.spawn(ops.feedback(click_from(body), "up"), name="slack-feedback")


async def on_feedback_down(ack, body, ops, jobs):
    await ack()
    jobs.spawn(ops.feedback(click_from(body), "down"), name="slack-feedback")


async def on_feedback_reasons(ack, body, ops, jobs):
    await ack()  # closes the modal
    submitted = reasons_from(body)
    if submitted is not None:
        jobs.spawn(ops.feedback_reasons(submitted), name="slack-feedback-reasons")


async def on_handoff(ack, body, ops, jobs):
    await ack()
    jobs.spawn(ops.handoff(click_from(body)), name="slack-handoff")


async def on_handback(ack, body, ops, jobs):
    await ack()
    jobs.spawn(ops.handback_click(click_from(body)), name="slack-handback")


async def on_other_action(ack):
    await ack()


def register(app: AsyncApp) -> None:
    app.action(bk.APPROVE)(on_approve)
    app.action(bk.REJECT)(on_reject)
    app.action(bk.FEEDBACK_UP)(on_feedback_up)
    app.action(bk.FEEDBACK_DOWN)(on_feedback_down)
    app.view(FEEDBACK_VIEW)(on_feedback_reasons)
    app.action(bk.HANDOFF)(on_handoff)
    app.action(bk.HANDBACK)(on_handback)
    app.action(re.compile(".*"))(on_other_action)
