"""The "what went wrong?" modal a 👎 opens. Reading back what the person submitted is
`reasons_from` in bot/handlers/payloads.py, which also defines the modal's ids.

The modal carries the feedback row it belongs to (and where the click was) in
`private_metadata`; a submission is only stored on that row if it is the same workspace and
the same person (bot/store/feedback.py), so a forged id changes nothing.
"""

from __future__ import annotations

import json

from bot.handlers.payloads import COMMENT_BLOCK, FEEDBACK_VIEW, MAX_COMMENT, REASONS, REASONS_BLOCK


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
