"""The "what went wrong?" modal a 👎 opens, and reading back what the person submitted.

The modal carries the feedback row it belongs to (and where the click was) in
`private_metadata`; a submission is only stored on that row if it is the same workspace and
the same person (bot/store/feedback.py), so a forged id changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

FEEDBACK_VIEW = "deskhand_feedback_reasons"  # the modal's callback_id
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
class FeedbackReasons:
    """A submitted modal, as the handler reads it from a view_submission payload."""

    team: str
    user: str
    feedback_id: int
    channel: str
    reasons: list[str]
    comment: str


def _plain(text: str) -> dict:
    return {"type": "plain_text", "text": text, "emoji": True}


def reasons_view(feedback_id: int, channel: str) -> dict:
    """The modal for one 👎 (Slack's limits: title 24 chars, checkbox options 10)."""
    return {
        "type": "modal", "callback_id": FEEDBACK_VIEW,
        "private_metadata": json.dumps({"feedback_id": feedback_id, "channel": channel}),
        "title": _plain("What went wrong?"), "submit": _plain("Send"), "close": _plain("Skip"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text":
                                         "Thanks for the 👎. Telling us why helps the team fix the answer."}},
            {"type": "input", "block_id": REASONS_BLOCK, "optional": True, "label": _plain("What was wrong?"),
             "element": {"type": "checkboxes", "action_id": REASONS_BLOCK,
                         "options": [{"text": _plain(label), "value": value} for value, label in REASONS.items()]}},
            {"type": "input", "block_id": COMMENT_BLOCK, "optional": True, "label": _plain("Anything else?"),
             "element": {"type": "plain_text_input", "action_id": COMMENT_BLOCK, "multiline": True,
                         "max_length": MAX_COMMENT}},
        ],
    }


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
