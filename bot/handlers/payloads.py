"""What Deskhand reads out of Slack's inbound payloads, and the ids it listens for.

The listeners (actions.py, slash_command.py) and the middleware turn a payload into one of
these and hand it on; bot/slack/ acts on it. The buttons' action ids and the feedback modal's
callback and block ids are defined here because a listener is registered for each;
bot/slack/blocks.py and bot/slack/feedback_modal.py put them on what Deskhand posts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bot.handlers.plain_text import plain_text

APPROVE, REJECT = "deskhand_approve", "deskhand_reject"
FEEDBACK_UP, FEEDBACK_DOWN = "deskhand_feedback_up", "deskhand_feedback_down"
HANDOFF, HANDBACK = "deskhand_handoff", "deskhand_handback"

FEEDBACK_VIEW = "deskhand_feedback_reasons"  # the 👎 modal's callback_id
REASONS_BLOCK, COMMENT_BLOCK = "feedback_reasons", "feedback_comment"
MAX_COMMENT = 2000

# value -> label, in the order the modal lists them; reports count by value.
REASONS: dict[str, str] = {
    "wrong_answer": "Wrong answer",
    "not_my_question": "Didn't answer my question",
    "outdated": "Outdated",
    "wrong_source": "Wrong source",
    "too_slow": "Too slow",
    "other": "Other",
}


@dataclass(frozen=True)
class Click:
    """A button click, as read from a block_actions payload."""

    team: str
    user: str
    channel: str
    message_ts: str
    value: str
    action_ts: str = ""
    trigger_id: str = ""  # lets the click open a modal, for 3 s (views.open)


def click_from(body: dict) -> Click:
    action = body["actions"][0]
    container = body.get("container") or {}
    return Click(
        team=(body.get("team") or {}).get("id") or body["user"]["team_id"], user=body["user"]["id"],
        channel=container.get("channel_id") or (body.get("channel") or {}).get("id", ""),
        message_ts=container.get("message_ts", ""), value=action.get("value", ""),
        action_ts=action.get("action_ts", ""), trigger_id=body.get("trigger_id", ""),
    )


@dataclass(frozen=True)
class Slash:
    """A `/deskhand` invocation, as read from the command payload."""

    team: str
    user: str
    channel: str
    text: str
    response_url: str


def slash_from(command: dict) -> Slash:
    return Slash(team=command["team_id"], user=command["user_id"], channel=command["channel_id"],
                 text=command.get("text") or "", response_url=command.get("response_url") or "")


@dataclass(frozen=True)
class FeedbackReasons:
    """A submitted 👎 modal, as read from a view_submission payload."""

    team: str
    user: str
    feedback_id: int
    channel: str
    reasons: list[str]
    comment: str


def reasons_from(body: dict) -> FeedbackReasons | None:
    """What a view_submission says, or None when it is not a well-formed Deskhand modal.
    Only the reasons the modal offers are kept."""
    view = body.get("view") or {}
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
        feedback_id = int(meta["feedback_id"])
    except (ValueError, KeyError, TypeError):
        return None
    values = (view.get("state") or {}).get("values") or {}
    picked = ((values.get(REASONS_BLOCK) or {}).get(REASONS_BLOCK) or {}).get("selected_options") or []
    chosen = {option.get("value") for option in picked if isinstance(option, dict)}
    comment = ((values.get(COMMENT_BLOCK) or {}).get(COMMENT_BLOCK) or {}).get("value") or ""
    user = body.get("user") or {}
    team = (body.get("team") or {}).get("id") or user.get("team_id") or view.get("team_id") or ""
    return FeedbackReasons(team=team, user=user.get("id", ""), feedback_id=feedback_id,
                           channel=str(meta.get("channel") or ""), reasons=[r for r in REASONS if r in chosen],
                           comment=str(comment)[:MAX_COMMENT].strip())


@dataclass(frozen=True)
class TeammateReply:
    """A teammate's message in the Slack thread that mirrors an email conversation."""

    team: str
    user: str
    channel: str
    ts: str
    session_id: str  # the email conversation
    text: str
    note: bool  # `//…` or a mention of Deskhand: for the team only, never emailed


def teammate_reply(event: dict, team: str, email_session: str, bot_user_id: str | None) -> TeammateReply:
    text = event.get("text") or ""
    return TeammateReply(
        team=team, user=event["user"], channel=event["channel"], ts=event["ts"], session_id=email_session,
        text=plain_text(text, bot_user_id).strip(),
        note=text.lstrip().startswith("//") or f"<@{bot_user_id}>" in text)
