"""Replies are Markdown; each surface renders them (bot/render.py): Slack mrkdwn, email text
and HTML, the terminal. Unit tests on the demo KB's own articles, then a KB answer on the
real `deskhand run` process against the Slack emulator, and by email through the real SMTP
receiver and relay."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from types import SimpleNamespace

import frontmatter
import pytest

from bot.cli import print_reply
from bot.config import FIXTURES, load_settings
from bot.contracts import Citation
from bot.render import to_html, to_mrkdwn, to_text
from bot.slack import blocks as bk
from bot.slack.mrkdwn import SECTION_LIMIT, split, truncate
from bot.store import Store
from deskhand_process import deskhand_run, run_env
from kb_loader.freshness import read_record
from mailbridge.responder import render_html, render_text
from test_mail_bridge import Mirror, Relay, email, eventually, send, serving
from test_slack_app import ACME, ALICE, answered, emu, section_texts

__all__ = ["emu"]  # the Slack emulator fixture

KB = FIXTURES / "kb"
ARTICLES = sorted(KB.rglob("*.md"))


def article(relative: str) -> str:
    return frontmatter.loads((KB / relative).read_text()).content


# -- Slack mrkdwn on the demo KB -------------------------------------------------------------


def test_bold_headings_and_bullets_become_mrkdwn():
    md = article("returns/refunds.md")
    out = to_mrkdwn(md)
    assert "it takes *5–10 business days* to appear" in out
    assert "\n*How long a refund takes*\n" in out  # a heading is a bold line
    assert "\n• PayPal, Apple Pay and Google Pay: usually 1–3 business days;\n• credit and debit cards" in out
    assert "Refunds always go back to\nthe" not in out and "Refunds always go back to the" in out  # soft wraps joined
    assert "**" not in out and "#" not in out and "\n- " not in out


def test_links_italics_and_tables_become_mrkdwn():
    out = to_mrkdwn(article("orders/cancellation-fees.md"))
    assert "see <https://shop.deskhand.example/help/returns|Returns>." in out
    assert "while its status is _Received_ or _Processing_" in out
    assert "Open *Account › Orders*" in out
    assert "*When you cancel* · *Fee*\nStatus _Received_ or _Processing_ · free\n" in out
    assert "](" not in out and "|---" not in out


def test_bold_inside_a_heading_and_nested_lists_stay_mrkdwn():
    out = to_mrkdwn("## **Note** on _refunds_\n\n- cards\n  - debit\n- PayPal\n\n> quoted")
    assert out == "*Note on _refunds_*\n\n• cards\n    ◦ debit\n• PayPal\n\n> quoted"


def test_numbered_steps_keep_their_numbers():
    out = to_mrkdwn(article("orders/placing-an-order.md"))
    assert "\n1. Add the items you want to your basket." in out
    assert "\n2. Choose *Checkout*. Sign in" in out and "\n5. Check the summary" in out


@pytest.mark.parametrize("path", ARTICLES, ids=lambda p: str(p.relative_to(KB)))
def test_no_article_leaves_markdown_syntax_in_any_format(path):
    md = frontmatter.loads(path.read_text()).content
    slack, text = to_mrkdwn(md), to_text(md)
    for out in (slack, text):
        assert "**" not in out and "](" not in out
        assert not re.search(r"(?m)^#+ ", out)
    assert "*" not in text  # no emphasis marker survives in plain text
    assert all(token.startswith("<https://") for token in re.findall(r"<[^>]*>", slack))  # only real links


# -- plain text and HTML (email, the terminal) ----------------------------------------------


def test_text_has_links_in_brackets_dashes_for_bullets_and_no_markers():
    text = to_text(article("shipping/shipping-policy.md"))
    assert "See Delivery times (https://shop.deskhand.example/help/delivery-times) for how long each" in text
    assert "Standard delivery | 4.95 EUR | orders of 50 EUR or more" in text
    refunds = to_text(article("returns/refunds.md"))
    assert "it takes 5–10 business days to appear" in refunds
    assert "\n- PayPal, Apple Pay and Google Pay" in refunds
    assert "\n2. Choose Checkout. Sign in" in to_text(article("orders/placing-an-order.md"))


def test_html_has_real_strong_links_and_lists():
    page = to_html(article("orders/placing-an-order.md") + "\n" + article("orders/cancellation-fees.md"))
    assert "<ol>\n<li>Add the items" in page and "<strong>Checkout</strong>" in page
    assert "<ul>\n<li><em>Received</em>: we have your order" in page
    assert '<a href="https://shop.deskhand.example/help/returns">Returns</a>' in page
    assert "<table>" in page and "<th>When you cancel</th>" in page
    assert "**" not in page


def test_a_plain_reply_reads_the_same_everywhere():
    reply = ("Order A-1042 has shipped. It left us with UPS on 2026-11-16 (tracking 1Z999AA10123456784) "
             "and should arrive by 2026-11-24.")
    assert to_text(reply) == reply and to_mrkdwn(reply) == reply
    assert to_html(reply) == f"<p>{reply}</p>\n"


# -- escaping: what a customer wrote may come back in a reply --------------------------------

HOSTILE = ("Hi <script>alert(1)</script> & <@U123> <!channel>\n\n<div onclick=\"steal()\">x</div>\n\n"
           "[click](javascript:alert(1)) ![pic](https://x.example/a.png)")


def test_mrkdwn_escapes_everything_but_its_own_links():
    out = to_mrkdwn(HOSTILE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;@U123&gt; &lt;!channel&gt;" in out
    assert "&lt;div onclick=\"steal()\"&gt;x&lt;/div&gt;" in out
    assert "<https://x.example/a.png|pic>" in out
    assert re.findall(r"<[^>]*>", out) == ["<https://x.example/a.png|pic>"]  # nothing else pings or links


def test_mrkdwn_link_labels_and_urls_are_escaped():
    out = to_mrkdwn("[a > b | c & d](https://x.example/?q=1&r=2)")
    assert out == "<https://x.example/?q=1&amp;r=2|a &gt; b / c &amp; d>"


def test_html_never_passes_raw_html_or_script_links():
    page = to_html(HOSTILE)
    assert "<script" not in page and "<div" not in page and "javascript:" not in page.split("[click]")[0]
    assert 'href="javascript' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;@U123&gt;" in page
    assert "&lt;div onclick=&quot;steal()&quot;&gt;" in page


def test_text_keeps_what_was_written_and_drops_unsafe_link_targets():
    text = to_text("[click](javascript:alert(1)) and [write to us](mailto:help@x.example) & <b>")
    assert "[click](javascript:alert(1)) and write to us (help@x.example) & <b>" == text


# -- Slack's limits on rendered text ---------------------------------------------------------


def test_long_rendered_answers_split_within_limits_and_never_inside_a_link():
    para = "Read **this** and [the long policy page](https://shop.deskhand.example/help/a-long-policy-page) now. "
    reply = "\n\n".join(para * 6 for _ in range(120))  # over 40,000 characters rendered
    fallback, blocks = bk.answer(reply, [Citation(doc_id="d", title="T", url="https://h.example")],
                                 inbox_id="i1", session_id="s1")
    texts = section_texts(blocks)
    assert len(blocks) <= bk.MAX_BLOCKS and all(len(t) <= SECTION_LIMIT for t in texts)
    assert sum(len(t) for t in texts) <= 40_000 and texts[-1].endswith(bk.SHORTENED)
    for t in [*texts, fallback]:
        assert t.count("<") == t.count(">") and "**" not in t
    assert "<https://shop.deskhand.example/help/a-long-policy-page|the long policy page>" in texts[0]


def test_split_and_truncate_move_a_link_whole():
    link = "<https://a.example/r|our refund policy page for all orders>"
    text = "word " * 9 + link + " tail"
    pieces = split(text, limit=80)
    assert all(p.count("<") == p.count(">") for p in pieces) and link in pieces[1]
    assert truncate(text, 70) == "word " * 9 + "…"  # the link does not fit: none of it is kept


# -- the surfaces -----------------------------------------------------------------------------

KB_ANSWER = ("Refunds reach your original payment method within **five business days**; see "
             "[our refund policy](https://acme.example/help/refunds?from=bot&lang=en) for the details.")
ARTICLE = f"""---
title: Refunds at Acme
url: https://acme.example/help/refunds
---
# Refunds at Acme

## How long a refund takes

{KB_ANSWER}
"""


def test_email_parts_render_the_markdown():
    cited = [Citation(doc_id="d", title="Refunds", url="https://acme.example/help/refunds")]
    text = render_text(KB_ANSWER, cited, "Deskhand")
    page = render_html(KB_ANSWER, cited, "Deskhand")
    assert text.startswith("Refunds reach your original payment method within five business days; see our "
                           "refund policy (https://acme.example/help/refunds?from=bot&lang=en) for the details.")
    assert "*" not in text and "](" not in text
    assert "<strong>five business days</strong>" in page
    assert '<a href="https://acme.example/help/refunds?from=bot&amp;lang=en">our refund policy</a>' in page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_the_mail_mirror_shows_the_reply_as_mrkdwn():
    _, blocks = bk.mail_out(kind="reply", to="ada@example.com", text=KB_ANSWER)
    shown = " ".join(section_texts(blocks))
    assert "*five business days*" in shown and "<https://acme.example/help/refunds?from=bot&amp;lang=en|" in shown
    assert "**" not in shown


def test_the_terminal_prints_plain_text(capsys):
    print_reply(SimpleNamespace(reply=KB_ANSWER + " [bold]not markup[/bold]", citations=[], pending_action_id=None))
    shown = " ".join(capsys.readouterr().out.split())
    assert ("within five business days; see our refund policy "
            "(https://acme.example/help/refunds?from=bot&lang=en) for the details.") in shown
    assert "**" not in shown and "[bold]not markup[/bold]" in shown  # rich's markup is text too


def write_kb(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "refunds.md").write_text(ARTICLE)
    return folder


async def until(probe, what: str, timeout: float = 120):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := probe()):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # polling interval, not synchronisation
    return value


async def test_deskhand_run_posts_a_kb_answer_as_mrkdwn(emu, tmp_path):
    home = tmp_path / "run-home"
    env = run_env(emu, home, DESKHAND_KB_DIR=str(write_kb(tmp_path / "kb")))
    async with deskhand_run(env, tmp_path / "run.err"):
        await until(lambda: (r := read_record(home, ACME)) and r.chunks > 0, "the KB built at start")
        dm = emu.dm(ACME, ALICE, "how long do refunds take?")
        await emu.push_event(ACME, dm)
        call = await emu.wait_for_call("chat.update", answered(dm["channel"], "five business days"), timeout=60)

    shown = " ".join(section_texts(call.params["blocks"]))
    assert "within *five business days*" in shown
    assert "<https://acme.example/help/refunds?from=bot&amp;lang=en|our refund policy>" in shown
    assert "**" not in shown and "](" not in shown
    assert "**" not in call.params["text"] and "|our refund policy>" in call.params["text"]


async def test_an_email_kb_answer_has_plain_text_and_real_html(tmp_path):
    relay = await Relay().start()
    settings = load_settings(home=tmp_path / "home", smtp_port=0, relay_port=relay.port,
                             kb_dir=write_kb(tmp_path / "kb"))
    mirror = Mirror()
    try:
        async with serving(settings, mirror) as (rt, bridge):
            await asyncio.to_thread(rt.kb.reload, settings.mail_tenant)
            await until(lambda: rt.kb.is_available(settings.mail_tenant), "the KB")
            await send(bridge, email("How long do refunds take?", subject="Refund"))
            await relay.wait_for(1)
            await eventually(lambda: mirror.seen_outbound)
    finally:
        await relay.stop()

    reply = relay.parsed(0)
    text = reply.get_body(("plain",)).get_content()
    page = reply.get_body(("html",)).get_content()
    assert "five business days" in text and "**" not in text and "](" not in text
    assert "our refund policy (https://acme.example/help/refunds?from=bot&lang=en)" in text
    assert '<a href="https://acme.example/help/refunds?from=bot&amp;lang=en">our refund policy</a>' in page
    assert "<strong>five business days</strong>" in page
    assert "**five business days**" in mirror.seen_outbound[0]["text"]  # the mirror renders it itself
    store = Store(settings.db_path)
    try:  # rendering is at the surface only: the turn (and its guard) saw and stored the Markdown
        stored = store.history(mirror.seen_outbound[0]["session_id"])[-1]["text"]
        assert "**five business days**" in stored and "[our refund policy](https://" in stored
    finally:
        store.close()
