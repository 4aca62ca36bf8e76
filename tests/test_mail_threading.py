"""Threading: ids first, the subject fallback only for replies, stable session ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbridge.parse import parse_message
from mailbridge.threading import (
    is_reply_subject,
    message_ids,
    new_session_id,
    normalise_subject,
    resolve_thread,
    subject_key,
)

DATA = Path(__file__).parent / "data" / "mail"


def _mail(
    *,
    mid: str | None = "<m1@example.com>",
    subject: str = "Order 10423",
    in_reply_to: str | None = None,
    references: str | None = None,
    sender: str = "jane@example.com",
) -> bytes:
    headers = [f"From: Jane <{sender}>", "To: support@deskhand.example", f"Subject: {subject}"]
    if mid:
        headers.append(f"Message-ID: {mid}")
    if in_reply_to:
        headers.append(f"In-Reply-To: {in_reply_to}")
    if references:
        headers.append(f"References: {references}")
    return ("\n".join(headers) + "\n\nHello\n").encode()


@pytest.mark.parametrize(
    ("subject", "normalised"),
    [
        ("Re: Order 10423", "Order 10423"),
        ("RE: Fwd: AW: WG: SV: Order 10423", "Order 10423"),
        ("Re[2]: Order 10423", "Order 10423"),
        ("[Ticket #55] Re: Order   10423", "Order 10423"),
        ("Fw: [EXTERNAL] Order 10423", "Order 10423"),
        ("Antw: Vs: Order 10423", "Order 10423"),
        ("Re:", ""),
        ("Regarding order 10423", "Regarding order 10423"),
        ("", ""),
    ],
)
def test_normalise_subject(subject: str, normalised: str):
    assert normalise_subject(subject) == normalised


def test_is_reply_subject():
    assert is_reply_subject("Re: x") and is_reply_subject("[list] AW: x")
    assert not is_reply_subject("Fwd: x") and not is_reply_subject("Regarding x")


def test_message_ids():
    assert message_ids("<a@x> <b@x>\n <a@x>") == ["<a@x>", "<b@x>"]
    assert message_ids("a@x b@x") == ["<a@x>", "<b@x>"]
    assert message_ids("<a@x> (added by list)") == ["<a@x>"]
    assert message_ids(None) == [] and message_ids("garbage") == []


def test_new_message_gets_a_new_stable_session():
    parsed = parse_message(_mail())
    session = resolve_thread(parsed, lambda key: None)
    assert session.startswith("email:") and len(session) == len("email:") + 16
    assert session == new_session_id(parse_message(_mail()))
    assert session != new_session_id(parse_message(_mail(mid="<m2@example.com>")))


def test_redelivery_finds_its_own_session():
    known = {"<m1@example.com>": "email:existing"}
    assert resolve_thread(parse_message(_mail()), known.get) == "email:existing"


def test_in_reply_to_wins_over_older_references():
    known = {"<root@x>": "email:old", "<parent@x>": "email:parent"}
    parsed = parse_message(_mail(mid="<m3@x>", in_reply_to="<parent@x>", references="<root@x> <parent@x>"))
    assert resolve_thread(parsed, known.get) == "email:parent"


def test_references_are_tried_newest_first():
    known = {"<root@x>": "email:root", "<middle@x>": "email:middle"}
    parsed = parse_message(_mail(mid="<m3@x>", references="<root@x> <middle@x> <unknown@x>"))
    assert resolve_thread(parsed, known.get) == "email:middle"


def test_unknown_thread_uses_its_root_for_the_new_id():
    a = parse_message(_mail(mid="<a@x>", in_reply_to="<p@x>", references="<root@x> <p@x>"))
    b = parse_message(_mail(mid="<b@x>", in_reply_to="<a@x>", references="<root@x> <p@x> <a@x>"))
    assert resolve_thread(a, lambda k: None) == resolve_thread(b, lambda k: None)


def test_subject_fallback_only_for_replies():
    key = subject_key("Order 10423", "jane@example.com")
    known = {key: "email:by-subject"}
    reply = parse_message(_mail(mid="<r@x>", subject="Re: Order 10423"))
    assert resolve_thread(reply, known.get) == "email:by-subject"
    fresh = parse_message(_mail(mid="<f@x>", subject="Order 10423"))
    assert resolve_thread(fresh, known.get) != "email:by-subject"
    other_sender = parse_message(_mail(mid="<o@x>", subject="Re: Order 10423", sender="bob@example.com"))
    assert resolve_thread(other_sender, known.get) != "email:by-subject"


def test_subject_key_is_case_insensitive_and_needs_both_parts():
    assert subject_key("Order 10423", "Jane@Example.com") == subject_key("order 10423", "jane@example.com")
    assert subject_key("", "jane@example.com") is None
    assert subject_key("Order", "") is None


def test_a_customer_reply_to_our_reply_threads_by_id():
    # The store records our outbound Message-ID for the session; the customer's reply
    # carries it in In-Reply-To.
    parsed = parse_message((DATA / "misc" / "reply_in_thread.eml").read_bytes())
    known = {"<reply-0001@deskhand.example>": "email:jane"}
    assert resolve_thread(parsed, known.get) == "email:jane"


def test_thread_keys_let_a_store_find_the_session_again():
    first = parse_message(_mail(mid="<q1@x>", subject="Refund"))
    index = {key: "email:s1" for key in first.thread_keys}
    follow_up = parse_message(_mail(mid="<q2@x>", subject="Re: Refund", in_reply_to="<q1@x>"))
    assert resolve_thread(follow_up, index.get) == "email:s1"
    # Even when the client dropped the headers, the subject key still finds it.
    stripped = parse_message(_mail(mid="<q3@x>", subject="RE: Refund"))
    assert resolve_thread(stripped, index.get) == "email:s1"
