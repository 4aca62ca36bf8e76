"""Masking: Luhn-checked cards on real test strings, secrets, passwords; the log processor."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from bot.logs import Redact, configure_logging, get_logger
from bot.redact import find_cards, mask_pii, mask_sensitive

DATA = Path(__file__).parent / "data" / "pii"


def jsonl(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_presidio_credit_card_cases():
    cases = [c for c in jsonl("presidio_recognizer_cases.jsonl") if c["entity_type"] == "CREDIT_CARD"]
    assert cases
    for case in cases:
        assert len(find_cards(case["text"])) == case["expected_count"], case["text"]


@pytest.mark.parametrize("card", jsonl("stripe_test_cards.jsonl"), ids=lambda c: c["brand"])
def test_stripe_test_cards(card):
    text = f"please charge {card['number']} today"
    masked = mask_sensitive(text)
    if card["luhn_valid"]:
        assert card["number"] not in masked and "[card]" in masked
    else:
        assert masked == text


def test_grouped_card_numbers_are_masked():
    assert mask_sensitive("card 4111-1111-1111-1111 ok") == "card [card] ok"
    assert mask_sensitive("card 4111 1111 1111 1111") == "card [card]"


def test_order_ids_and_short_numbers_survive():
    text = "order A-1042 costs 129.99, call 555-0100, ref 2026-11-22"
    assert mask_sensitive(text) == text


@pytest.mark.parametrize("secret", [
    "xoxb-123456789012-abcdefghijkl", "xapp-1-A111-222-abcdef0123", "sk-abcdefghijklmnopqrstuvwx",
    "AKIAIOSFODNN7EXAMPLE", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
])
def test_secrets_are_masked(secret):
    masked = mask_sensitive(f"here: {secret} done")
    assert secret not in masked and "[secret]" in masked


def test_passwords_are_masked():
    assert mask_sensitive("my password is hunter2!") == "my password is [password]"
    assert mask_sensitive("pwd: s3cr3t") == "pwd: [password]"


def test_pii_masking_for_third_party_models():
    assert mask_pii("mail ada@example.com or +1 415 555 0100") == "mail [email] or [phone]"


def test_redact_processor_is_a_plain_function():
    out = Redact()(None, "info", {"event": "x", "text": "4242424242424242", "nested": {"k": ["sk-abcdefghijklmnopqrstuv"]}})
    assert out == {"event": "x", "text": "[card]", "nested": {"k": ["[secret]"]}}


def test_redaction_in_the_real_logging_chain():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    get_logger("t").info("paid", card="4242 4242 4242 4242")
    logging.getLogger("slack_sdk").info("token xoxb-123456789012-abcdefghijkl")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["card"] == "[card]" and lines[0]["event"] == "paid"
    assert "[secret]" in lines[1]["event"]


def test_pii_masking_keeps_iso_dates():
    assert mask_pii("delivered 2026-11-20, call +1 415 555 0100") == "delivered 2026-11-20, call [phone]"
