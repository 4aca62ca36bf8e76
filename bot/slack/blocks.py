"""Block Kit for every message Deskhand posts. Pure functions: data in, blocks out.

Each builder returns `(text, blocks)`: `text` is the notification fallback Slack shows where
blocks cannot be rendered (always sent, as Slack asks). Any person- or model-derived text is
escaped here (see `mrkdwn.escape`); replies to customers are Markdown and become mrkdwn
through `bot.render.to_mrkdwn`, which escapes their text the same way. Block Kit limits are
respected on the rendered text (section text 3,000 characters, 50 blocks, 40,000 characters).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from bot.contracts import Citation
# The buttons' action_ids: the listeners in bot/handlers/actions.py are registered for these.
from bot.handlers.payloads import APPROVE, FEEDBACK_DOWN, FEEDBACK_UP, HANDBACK, HANDOFF, REJECT
from bot.render import to_mrkdwn
from bot.slack.mrkdwn import SECTION_LIMIT, TEXT_LIMIT, escape, link, split, truncate

MAX_BLOCKS = 50
FALLBACK_LIMIT = 3000  # the notification text; the blocks carry the whole answer
PLACEHOLDER = "Looking into it…"
SHORTENED = "_(This answer was shortened to fit in Slack.)_"

Blocks = list[dict[str, Any]]


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(*texts: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in texts[:10]]}


def button(text: str, action_id: str, value: str, style: str | None = None) -> dict:
    b = {"type": "button", "text": {"type": "plain_text", "text": text[:75], "emoji": True},
         "action_id": action_id, "value": value[:2000]}
    if style:
        b["style"] = style
    return b


def actions(*elements: dict, block_id: str | None = None) -> dict:
    block: dict[str, Any] = {"type": "actions", "elements": list(elements)}
    if block_id:
        block["block_id"] = block_id[:255]
    return block


def person(who: str) -> str:
    """Someone Deskhand talks about: a Slack user as a mention, anyone else (an email
    customer) as escaped text."""
    if who[:1] in ("U", "W") and who.isalnum() and who.isupper():
        return f"<@{who}>"
    return escape(who) or "someone"


def slack_date(moment: datetime) -> str:
    """A timestamp every reader sees in their own time zone."""
    epoch = int(moment.timestamp())
    fallback = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} at {{time}}|{fallback}>"


def text_sections(raw: str, room: int) -> Blocks:
    """Escaped `raw` as section blocks: at most `room` blocks and 40,000 characters."""
    return mrkdwn_sections(escape(raw), room)


def mrkdwn_sections(text: str, room: int) -> Blocks:
    """Mrkdwn `text` (already escaped) as section blocks: at most `room` blocks and 40,000
    characters."""
    pieces, used, blocks = split(text), 0, []
    for piece in pieces:
        if len(blocks) == room or used + len(piece) > TEXT_LIMIT - len(SHORTENED):
            blocks[-1:] = [section(truncate(blocks[-1]["text"]["text"], SECTION_LIMIT - len(SHORTENED) - 1)
                                   + "\n" + SHORTENED)] if blocks else [section(SHORTENED)]
            break
        blocks.append(section(piece))
        used += len(piece)
    return blocks or [section("_(no text)_")]


def citation_line(citations: Iterable[Citation]) -> str | None:
    links = [link(c.url, c.title + (f" — {c.section}" if c.section else "")) for c in citations]
    return "Sources: " + " · ".join(links) if links else None


def answer(reply: str, citations: list[Citation], *, inbox_id: str, session_id: str,
           pending_review: bool = False, offer_handoff: bool = True) -> tuple[str, Blocks]:
    """The answer in a customer's thread: the text, its sources, feedback and handoff buttons."""
    tail: Blocks = []
    if line := citation_line(citations):
        tail.append(context(truncate(line, SECTION_LIMIT)))
    if pending_review:
        tail.append(context("A support teammate will review this request; you'll hear back in this thread."))
    buttons = [button("👍", FEEDBACK_UP, inbox_id), button("👎", FEEDBACK_DOWN, inbox_id)]
    if offer_handoff:
        buttons.append(button("Talk to a human", HANDOFF, session_id))
    tail.append(actions(*buttons, block_id="deskhand_answer"))
    rendered = to_mrkdwn(reply)  # the reply is Markdown (bot/render.py)
    blocks = mrkdwn_sections(rendered, MAX_BLOCKS - len(tail)) + tail
    return truncate(rendered, FALLBACK_LIMIT), blocks


def notice(text: str, *, markdown: bool = False) -> tuple[str, Blocks]:
    """A message from Deskhand (an approval's outcome, a handoff). `markdown`: `text` is a
    reply to the customer, Markdown like every reply (bot/render.py); otherwise plain text."""
    body = to_mrkdwn(text) if markdown else escape(text)
    return truncate(body, FALLBACK_LIMIT), mrkdwn_sections(body, MAX_BLOCKS)


def placeholder() -> tuple[str, Blocks]:
    return PLACEHOLDER, [context(f"⏳ {PLACEHOLDER}")]


def approval_card(*, action_id: str, args: dict, requester: str, where: str) -> tuple[str, Blocks]:
    """The card in the support channel that asks an approver to decide on a refund."""
    amount = args.get("amount")
    amount_text = f"{amount:.2f}" if isinstance(amount, (int, float)) else escape(str(amount or "the balance"))
    order = escape(str(args.get("order_id", "?")))
    reason = escape(str(args.get("reason") or "not given"))
    text = f"Refund approval needed: {amount_text} for order {order}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Refund approval needed"[:150]}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Order*\n{order}"},
            {"type": "mrkdwn", "text": f"*Amount*\n{amount_text}"},
            {"type": "mrkdwn", "text": f"*Requested by*\n{person(requester)}"},
            {"type": "mrkdwn", "text": f"*Reason*\n{truncate(reason, 1900)}"},
        ]},
        section(f"Conversation: {where}"),
        actions(button("Approve", APPROVE, action_id, "primary"),
                button("Reject", REJECT, action_id, "danger"), block_id="deskhand_approval"),
        context(f"Request `{escape(action_id)}` · approvers only · the requester cannot approve it"),
    ]
    return text, blocks


def decided_card(card_blocks: Blocks, *, status: str, decider: str, when: datetime,
                 detail: str = "") -> tuple[str, Blocks]:
    """The approval card after a decision: the buttons replaced by who decided, and when."""
    verdict = {"approved": "✅ Approved", "rejected": "❌ Rejected",
               "failed": "⚠️ Approved, but the refund failed"}.get(status, status)
    line = f"{verdict} by <@{decider}> on {slack_date(when)}"
    if detail:
        line += f" · {escape(detail)}"
    kept = [b for b in card_blocks if b.get("type") != "actions"]
    return f"{verdict} by a teammate", kept + [section(line)]


def expired_card(card_blocks: Blocks, *, when: datetime) -> tuple[str, Blocks]:
    """The approval card after its time ran out (bot/timers.py): no buttons, and why."""
    line = (f"⌛ Expired on {slack_date(when)}: nobody decided in time, so no refund was made. "
            "The customer was told and can ask again.")
    kept = [b for b in card_blocks if b.get("type") != "actions"]
    return "⌛ Refund request expired", kept + [section(line)]


def handoff_reminder(*, where: str, waited: str, usergroup: str = "") -> tuple[str, Blocks]:
    """A ping in a handoff card's thread: nobody has answered that conversation yet."""
    group = f"<!subteam^{usergroup}> " if usergroup.isalnum() else ""
    line = (f"⏰ {group}Nobody has answered this conversation for {escape(waited)}: {where}. "
            "Reply to the customer there, or hand it back to Deskhand.")
    return f"⏰ {group}A handed-off conversation has waited {escape(waited)}", [section(line)]


def handoff_card(*, session_id: str, who: str, where: str, reason: str, excerpt: str) -> tuple[str, Blocks]:
    """The card in the support channel when a conversation is handed to a human."""
    text = "A conversation needs a human"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "A conversation needs a human"}},
        section(f"{person(who)} in {where}\n*Reason:* {truncate(escape(reason or 'asked for a human'), 500)}"),
        section("*Transcript (redacted)*\n" + (truncate(escape(excerpt), SECTION_LIMIT - 40) or "_empty_")),
        actions(button("Hand back to Deskhand", HANDBACK, session_id), block_id="deskhand_handoff"),
        context("Deskhand stays quiet in that thread until it is handed back "
                "(this button, or `/deskhand handback` with the thread's link)."),
    ]
    return text, blocks


def handed_back_card(card_blocks: Blocks, *, by: str, when: datetime) -> tuple[str, Blocks]:
    kept = [b for b in card_blocks if b.get("type") not in ("actions", "context")]
    return "Handed back to Deskhand", kept + [section(f"↩️ Handed back to Deskhand by <@{by}> on {slack_date(when)}")]


# -- the Slack mirror of an email conversation (bot/slack/mail_mirror.py) -------------------

EMAIL_THREAD = "this email conversation (the thread below)"
MAIL_HOW_TO = ("Deskhand answers this email. Reply in this thread to answer the customer yourself: "
               "your reply goes out as an email, and Deskhand stays quiet until the thread is handed back. "
               "Start a message with `//` (or mention Deskhand) for a note the customer never sees.")


def mail_thread(*, session_id: str, customer: str, subject: str) -> tuple[str, Blocks]:
    """The top of an email conversation's thread in the support channel."""
    subject = subject or "(no subject)"
    text = f"Email from {customer}: {subject}"
    blocks = [
        section(f"📧 *{truncate(escape(subject), 300)}*\nEmail from {escape(customer)}"),
        actions(button("Take over", HANDOFF, session_id), block_id="deskhand_mail_thread"),
        context(MAIL_HOW_TO),
    ]
    return truncate(escape(text), FALLBACK_LIMIT), blocks


def mail_in(*, customer: str, text: str, flags: list[str], attachments: list) -> tuple[str, Blocks]:
    """A customer's email, shown in its thread."""
    head = f"✉️ *{escape(customer)}* wrote:"
    blocks = [section(head), *text_sections(text or "(no text)", MAX_BLOCKS - 3)]
    notes = []
    if attachments:
        notes.append("Attachments: " + ", ".join(
            f"{escape(a.name or 'unnamed')} ({escape(a.content_type)}, {a.size:,} bytes)"
            for a in attachments[:10]))
    if flags:
        notes.append("Flags: " + ", ".join(f"`{escape(f)}`" for f in flags[:10]))
    if notes:
        blocks.append(context(*notes))
    return truncate(f"{escape(customer)} wrote: {escape(text)}", FALLBACK_LIMIT), blocks[:MAX_BLOCKS]


def mail_out(*, kind: str, to: str, text: str) -> tuple[str, Blocks]:
    """An email Deskhand queued for the customer, shown in its thread."""
    if kind == "teammate":
        line = f"📤 Sending to {escape(to)} as an email reply."
        return line, [context(line)]
    head = {"reply": f"🤖 Deskhand replied to {escape(to)} by email:",
            "notice": f"🤖 Deskhand emailed {escape(to)}:"}.get(kind, f"📤 Emailed {escape(to)}:")
    # Everything Deskhand emails (a reply, a late answer, a notice) is Markdown (bot/render.py).
    body = to_mrkdwn(text)
    return truncate(f"{head} {body}", FALLBACK_LIMIT), [section(head), *mrkdwn_sections(body, MAX_BLOCKS - 1)]


def progress(label: str, done: int, total: int, current: str = "") -> str:
    bar_len = 20
    filled = int(bar_len * done / total) if total else 0
    line = f"{escape(label)} `{'█' * filled}{'░' * (bar_len - filled)}` {done}/{total}"
    return line + (f" · {escape(current)}" if current else "")


def kb_facts_text(facts: list[tuple[str, str]], title: str = "*Knowledge base*") -> str:
    """The KB's facts (bot/kb_status.py `kb_facts`) as one mrkdwn section text."""
    rows = "\n".join(f"• {escape(label)}: {escape(value)}" for label, value in facts[:12])
    return truncate(f"{title}\n{rows}", SECTION_LIMIT)


def _listing(title: str, items: list[dict], empty: str) -> dict:
    lines = [f"• {item['summary']}" for item in items[:10]] or [empty]
    more = f"\n…and {len(items) - 10} more" if len(items) > 10 else ""
    return section(truncate(f"*{title} ({len(items)})*\n" + "\n".join(lines) + more, SECTION_LIMIT))


def home(*, kb: list[tuple[str, str]] | None, pending: list[dict], handoffs: list[dict],
         today: dict[str, int], everyone: bool = True) -> dict:
    """The App Home tab: the knowledge base, what waits for people, and today's figures.
    `everyone` False: the lists are the viewer's own (they are not an approver or admin)."""
    blocks: Blocks = [{"type": "header", "text": {"type": "plain_text", "text": "Deskhand"}}]
    blocks.append(section("*Knowledge base*\nNot configured.") if kb is None else section(kb_facts_text(kb)))
    blocks.append({"type": "divider"})
    if everyone:
        blocks.append(_listing("Pending approvals", pending, "Nothing waiting."))
        blocks.append(_listing("Open handoffs", handoffs, "No conversation is with a human."))
    else:
        blocks.append(_listing("Your requests waiting for approval", pending, "Nothing waiting."))
        blocks.append(_listing("Your conversations with a human", handoffs, "None."))
        blocks.append(context("Approvers and admins see every pending request and handoff here."))
    blocks.append({"type": "divider"})
    blocks.append(section(f"*Today* · messages answered: *{today.get('answered', 0)}* · "
                          f"handoffs: *{today.get('handoffs', 0)}* · approvals: *{today.get('approvals', 0)}*"))
    return {"type": "home", "blocks": blocks}
