"""The button and modal listeners: each click is acked at once, read into a `Click`
(bot/handlers/payloads.py) and handed to `SlackOps` as a job, which answers the clicker if
the action fails (`SlackOps.answering`; retried first when it is idempotent).

Approve/Reject on approval cards, 👍/👎 and "Talk to a human" on answers, "Hand back" on
handoff cards; and the submission of the modal a 👎 opens (what went wrong). What a click may
do, and to what, is decided in `bot/slack/ops.py`.
"""

from __future__ import annotations

import re

from slack_bolt.app.async_app import AsyncApp

from bot.handlers.payloads import (
    APPROVE, FEEDBACK_DOWN, FEEDBACK_UP, FEEDBACK_VIEW, HANDBACK, HANDOFF, REJECT, click_from, reasons_from,
)


async def on_approve(ack, body, ops, jobs):
    await ack()
    click = click_from(body)
    jobs.spawn(ops.answering(click, lambda: ops.decide(click, approve=True), what="approve", idempotent=True),
               name="slack-approve")


async def on_reject(ack, body, ops, jobs):
    await ack()
    click = click_from(body)
    jobs.spawn(ops.answering(click, lambda: ops.decide(click, approve=False), what="reject", idempotent=True),
               name="slack-reject")


async def on_feedback_up(ack, body, ops, jobs):
    await ack()
    click = click_from(body)
    jobs.spawn(ops.answering(click, lambda: ops.feedback(click, "up"), what="feedback", idempotent=False),
               name="slack-feedback")


async def on_feedback_down(ack, body, ops, jobs):
    await ack()
    click = click_from(body)
    jobs.spawn(ops.answering(click, lambda: ops.feedback(click, "down"), what="feedback", idempotent=False),
               name="slack-feedback")


async def on_feedback_reasons(ack, body, ops, jobs):
    await ack()  # closes the modal
    submitted = reasons_from(body)
    if submitted is not None:
        jobs.spawn(ops.feedback_reasons(submitted), name="slack-feedback-reasons")


async def on_handoff(ack, body, ops, jobs):
    await ack()
    click = click_from(body)  # a handoff is keyed by its click: doing it twice is doing it once
    jobs.spawn(ops.answering(click, lambda: ops.handoff(click), what="handoff", idempotent=True),
               name="slack-handoff")


async def on_handback(ack, body, ops, jobs):
    await ack()
    click = click_from(body)
    jobs.spawn(ops.answering(click, lambda: ops.handback_click(click), what="handback", idempotent=False),
               name="slack-handback")


async def on_other_action(ack):
    await ack()


def register(app: AsyncApp) -> None:
    app.action(APPROVE)(on_approve)
    app.action(REJECT)(on_reject)
    app.action(FEEDBACK_UP)(on_feedback_up)
    app.action(FEEDBACK_DOWN)(on_feedback_down)
    app.view(FEEDBACK_VIEW)(on_feedback_reasons)
    app.action(HANDOFF)(on_handoff)
    app.action(HANDBACK)(on_handback)
    app.action(re.compile(".*"))(on_other_action)
