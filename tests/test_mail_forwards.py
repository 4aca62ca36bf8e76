"""Forwarded mail: the original sender and subject are recovered in every common layout."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from mailbridge.forwards import detect_forward, split_address
from mailbridge.parse import parse_message

DATA = Path(__file__).parent / "data" / "mail"
FORWARDS = DATA / "forwards"

CASES = {
    "gmail_forward.eml": ("jane.customer@example.com", "Jane Customer", "Order 10423 never arrived", "where it is?"),
    "gmail_forward_html_only.eml": ("bo.nilsson@example.org", "Bo Nilsson", "Refund for order 10577", "a refund please"),
    "outlook_forward.eml": ("renee.dupont@example.fr", "Renée Dupont", "Wrong size delivered", "Can I exchange it?"),
    "outlook_original_message_forward.eml": (
        "priya.raman@example.net",
        "Priya Raman",
        "Invoice copy",
        "invoice for order 10702",
    ),
    "apple_forward.eml": ("emile.laurent@example.com", "Émile Laurent", "Where is my parcel?", "What can I do?"),
    "rfc822_attached_forward.eml": ("luis.ortega@example.com", "Luis Ortega", "Cancel my order", "cancel order 10733"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_original_sender_is_recovered(name: str):
    sender, sender_name, subject, says = CASES[name]
    parsed = parse_message((FORWARDS / name).read_bytes())
    assert parsed.is_forward
    assert parsed.original_sender == sender
    assert parsed.original_name == sender_name
    assert parsed.original_subject == subject
    assert says in parsed.original_text
    assert says in parsed.question_text
    # The forwarder stays the From; the forwarded text is not mistaken for the note.
    assert parsed.from_addr.endswith("@shop.example")
    assert says not in parsed.text


def test_forwarder_note_is_the_text():
    parsed = parse_message((FORWARDS / "gmail_forward.eml").read_bytes())
    assert parsed.text == "Can Deskhand pick this one up?"
    assert parsed.question_text.startswith("Can Deskhand pick this one up?\n\nHi,")
    # The customer's own sign-off is a signature of the forwarded message.
    assert "Thanks,\nJane" not in parsed.original_text


def test_forward_with_empty_note():
    parsed = parse_message((FORWARDS / "gmail_forward_html_only.eml").read_bytes())
    assert parsed.text == ""
    assert parsed.html_converted
    assert parsed.question_text == parsed.original_text
    assert "only_quoted" not in parsed.flags and "no_text" not in parsed.flags


@pytest.mark.parametrize("name", ["gmail_forward.eml", "outlook_forward.eml"])
def test_html_rendering_of_a_forward(name: str):
    """The same forward when only its HTML part is read (Outlook's <hr>/<b>From:</b> block,
    Gmail's gmail_attr block)."""
    msg = BytesParser(policy=policy.default).parsebytes((FORWARDS / name).read_bytes())
    html = msg.get_body(preferencelist=("html",)).get_content()
    del msg["Content-Type"]
    del msg["Content-Transfer-Encoding"]
    msg.set_content(html, subtype="html")
    parsed = parse_message(msg.as_bytes())
    sender, sender_name, subject, says = CASES[name]
    assert parsed.html_converted and parsed.is_forward
    assert (parsed.original_sender, parsed.original_name, parsed.original_subject) == (sender, sender_name, subject)
    assert says in parsed.original_text


def test_outlook_reply_layout_is_not_a_forward():
    # The same From/Sent/To/Subject block under a reply: a quote, not a forward.
    talon = DATA / "corpus/talon/tests/fixtures/standard_replies"
    for name in ("outlook.eml", "aol.eml", "yahoo.eml", "comcast.eml"):
        parsed = parse_message((talon / name).read_bytes())
        assert not parsed.is_forward, name
        assert parsed.text == "Hello"


def test_fwd_subject_without_headers_is_flagged():
    parsed = parse_message(b"From: a@shop.example\nSubject: Fwd: lost parcel\n\nCustomer says the parcel is lost.")
    assert parsed.is_forward and parsed.original_sender is None
    assert "forward_without_headers" in parsed.flags
    assert parsed.text == "Customer says the parcel is lost."


def test_nested_forward_takes_the_outermost_block():
    body = (
        "See below.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Second Agent <agent2@shop.example>\n"
        "Date: Mon, 3 Jun 2024 at 10:00\n"
        "Subject: Fwd: Broken lamp\n"
        "To: <agent1@shop.example>\n\n"
        "---------- Forwarded message ---------\n"
        "From: Customer <customer@example.com>\n"
        "Subject: Broken lamp\n\n"
        "The lamp arrived broken.\n"
    )
    info = detect_forward(body, "Fwd: Fwd: Broken lamp")
    assert info is not None and info.kind == "gmail"
    assert info.sender == "agent2@shop.example"
    assert info.note == "See below."


def test_wrapped_recipient_lines_in_a_header_block():
    body = (
        "---------- Forwarded message ---------\n"
        "From: Jane <jane@example.com>\n"
        "Date: Mon, 3 Jun 2024 at 22:41\n"
        "Subject: Lost parcel\n"
        "To: a@shop.example, b@shop.example,\n"
        " c@shop.example\n\n"
        "Where is it?\n"
    )
    info = detect_forward(body)
    assert info is not None
    assert info.to == "a@shop.example, b@shop.example, c@shop.example"
    assert info.body == "Where is it?"


@pytest.mark.parametrize(
    ("value", "name", "addr"),
    [
        ("Jane Customer <jane@example.com>", "Jane Customer", "jane@example.com"),
        ('"Customer, Jane" <Jane@Example.com>', "Customer, Jane", "jane@example.com"),
        ("Priya Raman [mailto:priya@example.net]", "Priya Raman", "priya@example.net"),
        ("jane@example.com", "", "jane@example.com"),
        ("Kim Lee", "Kim Lee", None),
        ("Foo [mailto:foo@bar.com] On Behalf Of baz@bar.com", "Foo", "foo@bar.com"),
        ("", "", None),
    ],
)
def test_split_address(value: str, name: str, addr: str | None):
    assert split_address(value) == (name, addr)
