"""A button whose action fails answers the person who clicked it. End to end: the real Slack
app against the Slack emulator, and a real HTTP refund backend (tests/shop_server.py) that
fails when told to. Nothing sleeps to synchronise: tests wait on the emulator's record."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bot.config import load_settings
from bot.slack import blocks as bk
from bot.slack_ids import message_id
from tests.test_slack_app import (ACME, ALICE, BOB, SUPPORT, answered, approve_click, deskhand, emu,  # noqa: F401
                                  ephemeral_to, section_texts)


@pytest.fixture
def settings(tmp_path, emu, shop):  # noqa: F811
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(json.dumps({"tenants": {ACME: {
        "name": "Acme", "support_channel": SUPPORT, "approvers": [BOB],
        "backend": {"base_url": shop.url, "token": "shop-token", "timeout_s": 5}}}}))
    return load_settings(home=tmp_path / "home", slack_bot_token=emu.team.bot_token,
                         slack_app_token=emu.team.app_token, slack_api_url=emu.api_url, tenants_file=tenants,
                         rate_per_second=1000)


async def a_refund_card(emu, rt, slack):  # noqa: F811
    rt.executor.backoff_s = 0.01
    slack.ops.click_retry_s = 0.01
    dm = emu.dm(ACME, ALICE, "I want a refund for A-2001")
    await emu.push_event(ACME, dm)
    card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT)
    return dm, card


def card_updates(emu, card) -> list:  # noqa: F811
    return [c for c in emu.calls_to("chat.update") if c.params["ts"] == card.response["ts"]]


def refund_keys(shop) -> list[str]:
    return [r["headers"]["Idempotency-Key"] for r in shop.requests if r["route"] == "refund"]


async def test_a_failed_approve_is_answered_to_the_clicker_and_the_card_stays_clickable(emu, settings, shop):  # noqa: F811
    async with deskhand(settings) as (rt, slack):
        dm, card = await a_refund_card(emu, rt, slack)
        action_id = approve_click(emu, BOB, card)["actions"][0]["value"]
        shop.script("refund", 503)  # the refund backend fails, every time
        await emu.wait_for_ack(await emu.push_interactive(ACME, approve_click(emu, BOB, card)))

        told = await ephemeral_to(emu, BOB, "didn't go through")
        pending = await rt.store.pending_get(action_id)
        updates_after_failure = len(card_updates(emu, card))
        customer_after_failure = [c.params["text"] for c in emu.calls_to("chat.postMessage")
                                  if c.params["channel"] == dm["channel"]]
        failed_tries = len(refund_keys(shop))

        shop.script("refund", "ok")  # the system answers again: the same card approves it
        await emu.wait_for_ack(await emu.push_interactive(ACME, approve_click(emu, BOB, card)))
        decided = await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card.response["ts"])
        await emu.wait_for_call("chat.postMessage", lambda c: "Good news" in c.params["text"])
        audit = [e["action"] for e in await rt.store.audit_entries(action_id)]

    assert told["channel"] == SUPPORT and "refund system" in told["text"] and "try again" in told["text"]
    assert "A-2001" in told["text"]
    assert pending.status == "pending" and pending.decided_by is None  # approvable again
    assert updates_after_failure == 0  # the card kept its buttons
    assert not any("refund" in text.lower() for text in customer_after_failure)  # the customer waits on
    assert failed_tries == 4  # two tries by the executor, and the click itself retried once
    assert f"Approved by <@{BOB}>" in section_texts(decided.params["blocks"])[-1]
    assert bk.APPROVE not in str(decided.params["blocks"])
    assert len(set(refund_keys(shop))) == 1  # every try carried the same key: one refund at most
    assert audit.count("execution_failed") == 2 and audit.count("executed") == 1


async def test_a_transient_failure_of_an_approval_is_retried_before_anyone_is_told(emu, settings, shop):  # noqa: F811
    async with deskhand(settings) as (rt, slack):
        _, card = await a_refund_card(emu, rt, slack)
        shop.script("refund", 503, 503, "ok")  # the executor's two tries fail; the click's retry works
        await emu.wait_for_ack(await emu.push_interactive(ACME, approve_click(emu, BOB, card)))
        decided = await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card.response["ts"])
        await emu.wait_for_call("chat.postMessage", lambda c: "Good news" in c.params["text"])
        await slack.jobs.idle()

    assert bk.APPROVE not in str(decided.params["blocks"])
    assert not [m for m in emu.team.ephemerals if m["user"] == BOB]
    assert len(refund_keys(shop)) == 3


async def test_a_refused_refund_is_reported_not_retried(emu, settings, shop):  # noqa: F811
    async with deskhand(settings) as (rt, slack):
        _, card = await a_refund_card(emu, rt, slack)
        action_id = approve_click(emu, BOB, card)["actions"][0]["value"]
        shop.script("refund", 422)  # the backend refuses the refund itself
        await emu.push_interactive(ACME, approve_click(emu, BOB, card))
        told = await ephemeral_to(emu, BOB, "didn't go through")
        status = (await rt.store.pending_get(action_id)).status

    assert "won't help" in told["text"] and "reject" in told["text"]
    assert status == "pending" and len(refund_keys(shop)) == 1  # a client error is never retried


async def test_a_click_whose_action_raises_is_answered_and_not_retried(emu, settings, shop):  # noqa: F811
    async with deskhand(settings) as (rt, _):
        dm = emu.dm(ACME, ALICE, "where is order A-2001?")
        await emu.push_event(ACME, dm)
        answer = await emu.wait_for_call("chat.update", answered(dm["channel"], "A-2001"))
        with sqlite3.connect(settings.db_path) as conn:  # the database refuses every 👍 from now on
            conn.execute("CREATE TRIGGER feedback_refused BEFORE INSERT ON feedback"
                         " BEGIN SELECT RAISE(ABORT, 'feedback is read-only'); END")
        await emu.push_interactive(ACME, emu.block_action(ACME, ALICE, dm["channel"], answer.params["ts"],
                                                          bk.FEEDBACK_UP, message_id(ACME, dm["channel"], dm["ts"])))
        told = await ephemeral_to(emu, ALICE, "didn't go through")

    assert "Deskhand's side" in told["text"] and "Try again" in told["text"]
    assert not any("Thanks for the feedback" in m["text"] for m in emu.team.ephemerals)
