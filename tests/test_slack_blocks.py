"""The Slack surface's pure parts: mrkdwn in and out, Block Kit limits, pacing, ids."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.contracts import Citation
from bot.handlers.plain_text import plain_text
from bot.slack import blocks as bk
from bot.slack.app import missing_credentials
from bot.slack.client import ChannelPacer
from bot.slack.mrkdwn import escape, link, split, truncate
from bot.slack_ids import parse_session_id, session_id


@pytest.mark.parametrize(("wire", "meant"), [
    ("<@UBOT> where is A-1042?", "where is A-1042?"),
    ("ask <@U0BOB0001|bob> in <#C0SUPPORT1|support>", "ask @bob in #support"),
    ("ping <@U0BOB0001>", "ping @U0BOB0001"),
    ("see <https://shop.example/o/1|my order> or <https://shop.example>", "see my order (https://shop.example/o/1) or https://shop.example"),
    ("mail <mailto:ada@example.com|ada@example.com>", "mail ada@example.com"),
    ("&lt;!channel&gt; &amp;&amp; 3 &lt; 4", "<!channel> && 3 < 4"),
    ("<!here> and <!subteam^S0APPROVE1|@approvers>", "@here and @approvers"),
])
def test_plain_text_is_what_the_person_meant(wire, meant):
    assert plain_text(wire, "UBOT") == meant


def test_escape_turns_control_characters_into_entities():
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    assert escape(plain_text("&amp;lt;")) == "&amp;lt;"  # what was typed is what is shown


@pytest.mark.parametrize(("url", "title", "expected"), [
    ("https://help.example/a?x=1&y=2", "A & B", "<https://help.example/a?x=1&amp;y=2|A &amp; B>"),
    ("https://help.example/a b|c>d", "T", "<https://help.example/a%20b%7Cc%3Ed|T>"),
    ("javascript:alert(1)", "<b>", "&lt;b&gt;"),
    ("", "Shipping", "Shipping"),
])
def test_only_plain_web_links_become_links(url, title, expected):
    assert link(url, title) == expected


def test_split_respects_the_limit_and_prefers_boundaries():
    text = "\n\n".join(["word " * 500] * 4)  # 4 paragraphs of 2,500 characters
    pieces = split(text, 3000)
    assert [len(p) <= 3000 for p in pieces] == [True] * len(pieces) and len(pieces) == 4
    assert " ".join(pieces).split() == text.split()


def test_split_never_cuts_an_entity():
    text = escape("&" * 2000)  # "&amp;" * 2000, no spaces
    pieces = split(text, 3000)
    assert all(p.count("&") == p.count("&amp;") for p in pieces)
    assert "".join(pieces) == text


def test_truncate_keeps_entities_whole():
    assert truncate("ab&amp;cd", 5) == "ab…"
    assert truncate("short", 10) == "short"


def test_answer_blocks_fit_slack_whatever_the_length():
    fallback, blocks = bk.answer("x " * 100_000, [Citation(doc_id="d", title="T", url="https://h.example")],
                                 inbox_id="i", session_id="s", pending_review=True)
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert len(blocks) <= bk.MAX_BLOCKS and all(len(s) <= 3000 for s in sections)
    assert sum(map(len, sections)) <= 40_000 and len(fallback) <= 3000
    assert blocks[-1]["type"] == "actions" and [b["type"] for b in blocks[-3:-1]] == ["context", "context"]


def test_cards_escape_what_people_typed():
    _, card = bk.approval_card(action_id="pa_1", args={"order_id": "A-1<@U1>", "amount": 5, "reason": "<!here>"},
                               requester="U2", where="a DM")
    text = str(card)
    assert "<@U1>" not in text and "<!here>" not in text and "&lt;!here&gt;" in text and "5.00" in text
    _, handoff = bk.handoff_card(session_id="s", who="U2", where="x", reason="r", excerpt="Customer: <!channel>")
    assert "<!channel>" not in str(handoff)


def test_the_pacer_allows_a_burst_then_one_post_per_second_per_channel():
    now = [100.0]
    pacer = ChannelPacer(rate_per_s=1.0, burst=3, clock=lambda: now[0], max_channels=2)
    assert [pacer.reserve("C1") for _ in range(5)] == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert pacer.reserve("C2") == 0.0
    now[0] += 60
    pacer.reserve("C3")  # over max_channels: idle channels are forgotten
    assert len(pacer) == 1 and pacer.reserve("C1") == 0.0


def test_session_ids_carry_the_team():
    value = session_id("T1", "C1", "1.2")
    assert value == "slack:T1:C1:1.2" and parse_session_id(value) == ("T1", "C1", "1.2")
    assert parse_session_id("cli:abc") is None and parse_session_id("slack:T1::1.2") is None


def test_missing_credentials_are_named():
    assert len(missing_credentials(Settings(slack_bot_token="", slack_app_token=""))) == 2
    wrong = missing_credentials(Settings(slack_bot_token="xoxp-user", slack_app_token="xapp-1"))
    assert wrong == ["SLACK_BOT_TOKEN must be a bot token starting with xoxb-."]
    assert missing_credentials(Settings(slack_bot_token="xoxb-1", slack_app_token="xapp-1")) == []


def test_the_manifest_declares_everything_the_app_uses():
    import yaml

    from bot.config import PROJECT_ROOT

    manifest = yaml.safe_load((PROJECT_ROOT / "manifest.yml").read_text())
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] and settings["interactivity"]["is_enabled"]
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention", "message.im", "message.channels", "message.groups", "app_home_opened"}
    assert {
        "app_mentions:read", "channels:history", "groups:history", "im:history", "chat:write", "commands",
        "users:read", "users:read.email", "usergroups:read"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/deskhand"]
    assert manifest["features"]["app_home"]["home_tab_enabled"]
