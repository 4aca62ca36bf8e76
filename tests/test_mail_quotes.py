"""mailbridge.quotes against published expectations, plus the cases support mail needs.

- email_reply_parser's `expected_replies.json`: the visible reply of each body (quotes and
  signature removed) — `visible_reply`.
- talon's standard replies: the reply text with quotes removed and the signature kept —
  `extract_reply`. A `<name>_reply_text` file holds the expectation; without one it is
  "Hello" (the layout of that fixture folder).
- talon's HTML replies: every one says "Hi. I am fine. Thanks, Alex" above the quote;
  compared without whitespace, after HTML→text.
- talon's signature fixtures: `<name>_signature` is what `strip_signature` must cut from
  `<name>_body`, given `<name>_sender`.
"""

from __future__ import annotations

import json
import re
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from mailbridge.forwards import split_address
from mailbridge.decode import Flags, html_to_text
from mailbridge.quotes import extract_reply, split_body, visible_reply
from mailbridge.signatures import strip_signature

CORPUS = Path(__file__).parent / "data" / "mail" / "corpus"
ERP = CORPUS / "email_reply_parser"
TALON = CORPUS / "talon" / "tests" / "fixtures"
_WS = re.compile(r"\s+")

ERP_EXPECTED: dict[str, str] = json.loads((ERP / "expected_replies.json").read_text())["replies"]


@pytest.mark.parametrize("name", sorted(ERP_EXPECTED))
def test_email_reply_parser_expectations(name: str):
    body = (ERP / "test" / "emails" / name).read_text(encoding="utf-8")
    assert visible_reply(body) == ERP_EXPECTED[name]


def test_every_email_reply_parser_body_has_an_expectation():
    bodies = {p.name for p in (ERP / "test" / "emails").iterdir()}
    assert bodies == set(ERP_EXPECTED)


def _talon_standard() -> list[Path]:
    return sorted((TALON / "standard_replies").glob("*.eml"))


@pytest.mark.parametrize("path", _talon_standard(), ids=lambda p: p.stem)
def test_talon_standard_replies(path: Path):
    msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    text = msg.get_body(preferencelist=("plain",)).get_content()
    expected_file = path.with_name(f"{path.stem}_reply_text")
    expected = expected_file.read_text().strip() if expected_file.exists() else "Hello"
    assert extract_reply(text) == expected


def test_talon_reply_text_files_are_used():
    assert {p.name for p in (TALON / "standard_replies").glob("*_reply_text")} == {
        "iphone_reply_text",
        "sparrow_reply_text",
    }


HTML_REPLIES = sorted((TALON / "html_replies").glob("*.html"))
HTML_OTHERS = {
    "reply-separated-by-hr.html": "Hi there Bob",
    "OLK_SRC_BODY_SECTION.html": "Reply",
}


@pytest.mark.parametrize("path", HTML_REPLIES, ids=lambda p: p.stem)
def test_talon_html_replies(path: Path):
    text = html_to_text(path.read_text(encoding="utf-8", errors="replace"), Flags())
    reply = extract_reply(text)
    assert _WS.sub("", reply) == _WS.sub("", "Hi. I am fine. Thanks, Alex")


@pytest.mark.parametrize("name", sorted(HTML_OTHERS))
def test_talon_other_html(name: str):
    text = html_to_text((TALON / name).read_text(encoding="utf-8"), Flags())
    assert _WS.sub(" ", extract_reply(text)).strip() == HTML_OTHERS[name]


def _signature_cases() -> list[str]:
    return sorted(p.name[: -len("_body")] for p in (TALON / "signature/emails/stripped").glob("*_body"))


@pytest.mark.parametrize("name", _signature_cases())
def test_talon_signatures(name: str):
    folder = TALON / "signature/emails/stripped"
    body = (folder / f"{name}_body").read_text(encoding="utf-8")
    sender_name, sender_addr = split_address((folder / f"{name}_sender").read_text(encoding="utf-8"))
    expected_sig = (folder / f"{name}_signature").read_text(encoding="utf-8").strip()
    got_body, got_sig = strip_signature(body, sender_name, sender_addr or "")
    assert got_sig.strip() == expected_sig
    assert got_body.strip() == body.strip()[: len(body.strip()) - len(expected_sig)].strip()


# --- cases of our own ---------------------------------------------------------------------


def test_multiline_on_wrote_followed_by_unquoted_original():
    body = (
        "Thanks, that helps.\n\n"
        "On Wed, May 18, 2016 at 11:10 PM Support Team <support@shop.example>\n"
        "wrote:\n\n"
        "Your refund was issued today.\n"
    )
    split = split_body(body)
    assert split.visible == "Thanks, that helps."
    assert "Your refund was issued" in split.quoted


def test_prose_with_wrote_is_not_cut():
    body = "On Monday the courier wrote:\nWe could not deliver your parcel.\n\nWhat now?"
    assert visible_reply(body) == body


def test_single_header_line_in_prose_keeps_the_rest():
    body = "Please change the address.\nTo: Jane Doe, 1 Main St\nOrder 10423\nThank you"
    assert "Order 10423" in visible_reply(body)


def test_outlook_header_block_without_separator():
    body = (
        "Yes please go ahead.\n\n"
        "From: Support <support@shop.example>\n"
        "Sent: Monday, June 3, 2024 7:12 PM\n"
        "To: Jane\n"
        "Subject: RE: Refund\n\n"
        "Shall we refund order 10423?\n"
    )
    split = split_body(body)
    assert split.visible == "Yes please go ahead."
    assert split.cut_kind == "headers"


def test_localised_attribution_before_quote():
    body = "Danke!\n\nAm 03.06.2024 um 10:12 schrieb Support <support@shop.example>:\n> Ihre Bestellung ist unterwegs."
    assert visible_reply(body) == "Danke!"


def test_inline_replies_are_kept():
    body = "> Which colour?\nBlue.\n\n> Which size?\nM.\n"
    assert extract_reply(body) == "Blue.\n\nM."


@pytest.mark.parametrize(
    "footer",
    ["Sent from my iPhone", "Get Outlook for iOS", "Sent from Mail for Windows", "Von meinem iPhone gesendet"],
)
def test_mobile_footers_are_signatures(footer: str):
    assert visible_reply(f"Where is order 10423?\n\n{footer}") == "Where is order 10423?"


def test_signature_with_sender_name():
    body = "Where is order 10423?\n\nBest,\nJane Customer\n+1 555 123 4567"
    assert visible_reply(body, "Jane Customer", "jane@example.com") == "Where is order 10423?"


def test_a_message_that_is_only_thanks_is_not_emptied():
    assert visible_reply("Thanks!") == "Thanks!"


def test_question_in_last_paragraph_is_not_a_signature():
    body = "Hello,\n\nJane here, where is my order?"
    assert visible_reply(body, "Jane", "jane@example.com") == body


@pytest.mark.parametrize(
    "body",
    [
        "Please change my address.\n\nMy new address:\n12 Elm St\n+1 555 123 4567\njane@example.com",
        "I ordered:\n----\nshirt\nshoes",
        "Hi\nThanks\nWhere is my order?",
        "My parcel arrived damaged.\nSent via DHL",
        "Update:\n\nYou can reach me at jane@example.com",
    ],
)
def test_content_that_only_looks_like_a_signature_is_kept(body: str):
    assert visible_reply(body, "Jane Customer", "jane@example.com") == body
