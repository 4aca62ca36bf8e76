"""PII kept from the model (bot/brain/pii.py): detection, per-turn placeholders, restoring.

The planner tests run the real `openai` client and `instructor` over HTTP against the
scripted server (tests/openai_server.py) and read what the model was sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.brain.pii import PiiVault, find_pii
from bot.config import TenantPolicy
from openai_server import OpenAIServer, plan_reply
from test_llm_planner import Router, context_for, envelope, make_settings, plan_of, planner_for, runtime

SYNTHETIC = Path(__file__).parent / "data" / "pii" / "synthetic_customer_text.jsonl"
IDENTIFIERS = {"email", "phone", "iban", "ssn", "ip", "card"}

IBAN = "DE89 3704 0044 0532 0130 00"
PHONES = ["+44 20 7946 0958", "(415) 555-0132", "020 7946 0958", "+49 30 901820", "415.555.0199"]
NAME = "Maria Garcia"
ADDRESS = "42 Elm Street, Springfield"
EMAIL = "ada@example.com"
CUSTOMER_TEXT = (f"Hi, my name is {NAME}. Where are my orders? My email is {EMAIL}, call me on {PHONES[0]} "
                 f"or {PHONES[1]}, at work {PHONES[2]}, in Berlin {PHONES[3]}, fax {PHONES[4]}. "
                 f"Ship to {ADDRESS}. Refund to {IBAN}. It was order A-1042 for $64.00 on 2026-11-16, "
                 f"tracking 1Z999AA10123456784.")
NEGATIVES = ["A-1042", "$64.00", "2026-11-16", "1Z999AA10123456784"]


def customer_parts(server: OpenAIServer) -> str:
    """What the model was sent of the conversation (the user messages), without the rules."""
    return "\n".join(str(m.get("content")) for body in server.requests for m in body["messages"]
                     if m["role"] == "user")


@pytest.fixture
async def server():
    async with OpenAIServer() as s:
        yield s


# -- detection ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind", [
    ("iban GB82 WEST 1234 5698 7654 32 thanks", "iban"),
    ("my number is +33 1 42 68 53 00", "phone"),
    ("ring 07700 900123 after six", "phone"),
    ("ssn 078-05-1123", "ssn"),
    ("from 203.0.113.45 and", "ip"),
    ("v6 2001:db8::1 here", "ip"),
    ("card 4242 4242 4242 4242", "card"),
    ("Thanks,\nSarah Johnson", "name"),
    ("send it to 1600 Pennsylvania Ave NW, Washington, DC 20500", "address"),
    ("Lieferung an Hauptstraße 5, 10115 Berlin", "address"),
])
def test_each_kind_is_found(text, kind):
    assert kind in {span.kind for span in find_pii(text)}


@pytest.mark.parametrize("text", [
    "Where is order A-1042?", "I was charged $129.99 twice on 2026-11-20.",
    "Refund RF-5003 was approved on 12/11/2026.",
    "Tracking 1Z999AA10123456784 and 9400111899223397846201.", "My order number is 100234567.",
    "It arrived on November 24, 2026 at 10:30:45.", "The invoice INV-20931 says 1,249.00 USD.",
    "Will May deliveries be faster?", "iban DE00370400440532013000 (a wrong check digit)",
    "ssn 666-12-3456 is not a real one", "version 2.4.1 of the app",
])
def test_negatives_are_never_masked(text):
    assert PiiVault().mask(text) == text


def test_the_same_value_gets_the_same_placeholder_and_restores():
    vault = PiiVault()
    first = vault.mask(f"I'm {NAME}, {EMAIL}, {PHONES[1]}")
    second = vault.mask(f"again: {EMAIL.upper()} and 415-555-0132, thanks {NAME}")
    assert first == "I'm [name_1], [email_1], [phone_1]"
    assert second == "again: [email_1] and [phone_1], thanks [name_1]"
    assert vault.restore_value({"email": "[email_1]", "note": ["call [phone_1]", "[iban_9]"]}) == {
        "email": EMAIL, "note": [f"call {PHONES[1]}", "[iban_9]"]}  # an unknown placeholder stays


def test_synthetic_set_identifiers_all_found_and_negatives_untouched():
    rows = [json.loads(line) for line in SYNTHETIC.read_text().splitlines()]
    assert len(rows) >= 200
    missed, touched = [], []
    for row in rows:
        found = find_pii(row["text"])
        for start, end, kind in row["spans"]:
            covered = any(s.kind == kind and s.start <= start and s.end >= end for s in found)
            if kind in IDENTIFIERS and not covered:
                missed.append(row["text"][start:end])
        if not row["spans"] and found:
            touched.append(row["text"])
    assert missed == [] and touched == []


def test_phone_regions_are_validated():
    assert TenantPolicy(pii_phone_regions=["de", "US"]).pii_phone_regions == ["DE", "US"]
    with pytest.raises(ValueError, match="not a phone region"):
        TenantPolicy(pii_phone_regions=["XX"])


# -- the planner -------------------------------------------------------------------------
async def test_the_model_sees_placeholders_the_hands_and_the_customer_real_values(tmp_path, server):
    lookup = plan_of("track_order", 0.9, [{"tool": "get_order_status", "args": {"email": "[email_1]"}}])
    reply = "Thanks [name_1]: your orders under [email_1] are on their way; we'll ring [phone_1] if needed."
    server.set_script(Router(plans=[plan_reply(lookup)], replies=[plan_reply({"text": reply})]))
    settings = make_settings(tmp_path, server)
    async with runtime(settings) as rt:
        outcome = await rt.orchestrator.handle(envelope(CUSTOMER_TEXT, verified_email=EMAIL))

    sent = server.bodies_text()
    assert len(server.requests) == 2  # the plan and the draft
    for value in [IBAN, IBAN.replace(" ", ""), EMAIL, NAME, "Elm Street", "7946", "555-0132", "901820", "0199"]:
        assert value not in sent, value
    # The verified address the system prompt carries is the one the customer typed, and
    # "+44 20 7946 0958" is "020 7946 0958": one placeholder each.
    said = customer_parts(server)
    for placeholder in ["[name_1]", "[email_1]", "[phone_1]", "[phone_4]", "[address_1]", "[iban_1]"]:
        assert placeholder in said, placeholder
    assert "[email_2]" not in sent and "[phone_5]" not in sent
    for negative in NEGATIVES:
        assert negative in sent, negative  # order IDs, amounts, dates and tracking numbers stay
    assert outcome.plan.steps[0].args == {"email": EMAIL}
    assert outcome.results[0].ok and outcome.results[0].data["found"]
    assert outcome.reply.startswith(f"Thanks {NAME}: your orders under {EMAIL} are on their way")
    assert PHONES[0] in outcome.reply and "[" not in outcome.reply


async def test_plan_args_are_restored_without_a_verified_address(tmp_path, server):
    # Nothing but the vault can turn "[email_1]" into the address here (no verified email).
    lookup = plan_of("track_order", 0.9, [{"tool": "get_order_status", "args": {"email": "[email_1]"}}])
    server.set_script([plan_reply(lookup)])
    settings = make_settings(tmp_path, server)
    planner = planner_for(settings)
    plan = await planner.plan(context_for(settings, f"orders for {EMAIL} please, I'm {NAME}"))
    await planner.aclose()
    assert EMAIL not in server.bodies_text()
    assert plan.steps[0].args == {"email": EMAIL}


async def test_values_go_through_where_the_policy_allows(tmp_path, server):
    lookup = plan_of("track_order", 0.9, [{"tool": "get_order_status", "args": {"email": EMAIL}}])
    server.set_script(Router(plans=[plan_reply(lookup)], replies=[plan_reply({"text": "They are on their way."})]))
    settings = make_settings(tmp_path, server)
    async with runtime(settings) as rt:
        outcome = await rt.orchestrator.handle(envelope(CUSTOMER_TEXT, tenant="T_OPEN", verified_email=EMAIL))
    sent = server.bodies_text()
    for value in [IBAN, EMAIL, NAME, ADDRESS, *PHONES]:
        assert value in sent, value
    assert "[email_1]" not in sent and "[name_1]" not in sent
    assert outcome.results[0].ok and outcome.results[0].data["found"]
