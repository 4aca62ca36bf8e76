"""Deskhand's Slack app end to end: the real `serve` wiring (bolt AsyncApp on
AsyncSocketModeHandler, the responder, the orchestrator's workers) against the Slack
emulator on 127.0.0.1. Nothing sleeps to synchronise: tests wait on the emulator's record
of calls and acks, or on the orchestrator and the app's jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import threading
from contextlib import asynccontextmanager

import pytest
from typer.testing import CliRunner

from bot.brain.rules import RulesPlanner
from bot.config import FIXTURES, load_settings
from bot.contracts import BrainPlan, Citation
from bot.runtime import open_runtime
from bot.slack import blocks as bk
from bot.slack.app import SlackCredentials, SlackOptions, serve
from bot.slack_ids import message_id, placeholder_key, session_id
from bot.store import Store
from slack_emulator import SlackEmulator, Workspace
from tests.test_dead_letters import dlq

ACME, GLOBEX = "T0ACME0001", "T0GLOBEX01"
ALICE, BOB, CAROL, DAVE, ERIN = "U0ALICE01", "U0BOB0001", "U0CAROL01", "U0DAVE001", "U0ERIN001"
GINA, GUS = "U0GINA001", "U0GUS0001"
SUPPORT, GENERAL, GLOBEX_SUPPORT = "C0SUPPORT1", "C0GENERAL1", "C0GLOBEX01"
INITIAL_REFUNDS = len(json.loads((FIXTURES / "shop.json").read_text())["refunds"])
FAST = SlackOptions(ping_interval_s=0.2, outbox_retry_s=0.05, progress_interval_s=0.0)
TENANTS = f"""
tenants:
  {ACME}:
    name: Acme
    support_channel: {SUPPORT}
    approvers: [{BOB}]
    approver_usergroup: S0APPROVE1
    admins: [{CAROL}]
  {GLOBEX}:
    name: Globex
    support_channel: {GLOBEX_SUPPORT}
    approvers: [{GUS}]
"""


@pytest.fixture
async def emu():
    acme = Workspace(ACME, name="Acme")
    acme.add_user(ALICE, "alice", email="ada@example.com")
    for user, name in ((BOB, "bob"), (CAROL, "carol"), (DAVE, "dave"), (ERIN, "erin")):
        acme.add_user(user, name)
    acme.add_channel(SUPPORT, "support", [BOB, CAROL, DAVE, ERIN])
    acme.add_channel(GENERAL, "general", [ALICE, DAVE, BOB, CAROL])
    acme.add_usergroup("S0APPROVE1", [ERIN])
    globex = Workspace(GLOBEX, name="Globex")
    globex.add_user(GINA, "gina")
    globex.add_user(GUS, "gus")
    globex.add_channel(GLOBEX_SUPPORT, "help", [GUS])
    async with SlackEmulator([acme, globex]) as emu:
        yield emu


@pytest.fixture
def settings(tmp_path, emu):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(TENANTS)
    return load_settings(home=tmp_path / "home", slack_bot_token=emu.team.bot_token,
                         slack_app_token=emu.team.app_token, slack_api_url=emu.api_url, tenants_file=tenants)


@functools.cache
def rules() -> RulesPlanner:
    return RulesPlanner()  # built once: training the intent classifier takes a second


@asynccontextmanager
async def deskhand(settings, *, planner=None, credentials=None, kb=None):
    async with open_runtime(settings, planner=planner or rules()) as rt:
        if kb is not None:
            rt.kb = kb
        async with serve(rt, credentials=credentials, options=FAST) as slack:
            yield rt, slack


def answered(channel: str, text: str | None = None):
    """Matches a chat.update that turned a placeholder in `channel` into an answer."""
    return lambda c: c.params["channel"] == channel and c.params["text"] != bk.PLACEHOLDER and (
        text is None or text in c.params["text"])


def posts(emu, channel: str, thread_ts: str | None = None) -> list:
    return [c for c in emu.calls_to("chat.postMessage") if c.params["channel"] == channel
            and (thread_ts is None or c.params.get("thread_ts") == thread_ts)]


def action_ids(message: dict) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


def section_texts(blocks: list[dict]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]


async def ephemeral_to(emu, user: str, text: str, team: str = ACME) -> dict:
    return await emu.wait_for(lambda e: next((m for m in e.workspace(team).ephemerals
                                              if m["user"] == user and text in m["text"]), None))


def long_answer(paragraphs: int) -> str:
    return "\n\n".join([("Deskhand explains the policy in some detail here. " * 40).strip()] * paragraphs)


class Echo:
    """A planner that answers with the message's text (and a citation), or a long text."""

    name = "echo"

    async def plan(self, context) -> BrainPlan:
        text = context.text
        if text.startswith("long "):
            return BrainPlan(intent="policy", confidence=1.0, final_answer=long_answer(int(text.split()[1])))
        return BrainPlan(intent="echo", confidence=1.0, final_answer=f"You said: {text}", citations=[
            Citation(doc_id="refunds", title="Refunds & <returns>", url="https://help.example.com/refunds?a=1&b=2")])


# ------------------------------------------------------------------ messages in, answers out


async def test_a_dm_gets_a_placeholder_then_the_answer_in_its_thread(emu, settings):
    async with deskhand(settings) as (rt, _):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        channel = dm["channel"]
        envelope_id = await emu.push_event(ACME, dm)
        assert await emu.wait_for_ack(envelope_id) is None
        answer = await emu.wait_for_call("chat.update", answered(channel))
        stored = await rt.store.inbox_envelope(message_id(ACME, channel, dm["ts"]))

    placeholder = posts(emu, channel)[0]
    assert (placeholder.params["thread_ts"], placeholder.params["text"]) == (dm["ts"], bk.PLACEHOLDER)
    assert answer.params["ts"] == placeholder.response["ts"]  # the placeholder became the answer
    assert len(posts(emu, channel)) == 1
    message = emu.message(channel, placeholder.response["ts"])
    assert "Order A-1042 has shipped" in section_texts(message["blocks"])[0]
    assert action_ids(message) == [bk.FEEDBACK_UP, bk.FEEDBACK_DOWN, bk.HANDOFF]
    assert stored.session_id == session_id(ACME, channel, dm["ts"]) and stored.channel == "slack_dm"
    assert stored.metadata["verified_email"] == "ada@example.com"
    assert (stored.metadata["slack_channel"], stored.metadata["thread_ts"]) == (channel, dm["ts"])


async def test_a_mention_is_answered_in_a_thread_and_its_message_copy_is_not(emu, settings):
    async with deskhand(settings) as (rt, _):
        mention = emu.mention(ACME, ALICE, GENERAL, "where is order A-1042?")
        await emu.push_event(ACME, mention)
        # Slack also sends the same message as a channel `message` (same client_msg_id).
        copy = {**mention, "type": "message", "channel_type": "channel"}
        copy_id = await emu.push_event(ACME, copy)
        await emu.wait_for_ack(copy_id)
        await emu.wait_for_call("chat.update", answered(GENERAL, "A-1042 has shipped"))
        stored = await rt.store.inbox_envelope(message_id(ACME, GENERAL, mention["ts"]))
        inbox = await rt.store.inbox_count()

    assert [c.params["thread_ts"] for c in posts(emu, GENERAL)] == [mention["ts"]]
    assert stored.text == "where is order A-1042?" and stored.channel == "slack_channel"
    assert inbox == 1


async def test_a_follow_up_in_the_thread_continues_the_conversation(emu, settings):
    async with deskhand(settings) as (rt, _):
        mention = emu.mention(ACME, ALICE, GENERAL, "I want a refund")
        await emu.push_event(ACME, mention)
        await emu.wait_for_call("chat.update", answered(GENERAL, "Which order number"))
        await emu.push_event(ACME, emu.thread_reply(ACME, ALICE, GENERAL, mention["ts"], "A-1120"))
        follow_up = await emu.wait_for_call("chat.update", answered(GENERAL, "refund of 64.00"))

        # Threads Deskhand is not part of, and plain channel messages, are acked and left alone.
        other = emu.thread_reply(ACME, DAVE, GENERAL, "1700000000.000100", "A-1042?")
        plain = emu._user_message(emu.team, DAVE, GENERAL, "lunch anyone?", None)
        for event in (other, plain):
            await emu.wait_for_ack(await emu.push_event(ACME, event))
        sessions = len(await rt.store.sessions_with_status(ACME, "active"))

    assert [c.params["thread_ts"] for c in posts(emu, GENERAL)] == [mention["ts"], mention["ts"]]
    assert follow_up.params["channel"] == GENERAL and sessions == 1


async def test_bot_posts_edits_deletes_and_own_posts_are_acked_and_ignored(emu, settings):
    async with deskhand(settings) as (rt, _):
        dm_channel = emu.team.im_channel(ALICE)
        noise = [
            emu.bot_message(ACME, GENERAL, "beep"),
            emu.bot_message(ACME, GENERAL, "beep", classic=True),
            emu.bot_message(ACME, dm_channel, "my own answer", own=True),
            emu.message_changed(ACME, dm_channel, "1700000000.000100", "edited"),
            emu.message_deleted(ACME, dm_channel, "1700000000.000100"),
        ]
        for event in noise:
            assert await emu.wait_for_ack(await emu.push_event(ACME, event)) is None
        count = await rt.store.inbox_count()
        await emu.push_event(ACME, emu.dm(ACME, ALICE, "hi"))
        await emu.wait_for_call("chat.update", answered(dm_channel))

    assert count == 0
    assert len(emu.calls_to("chat.postMessage")) == 1  # only the placeholder of "hi"


async def test_a_redelivered_event_gets_one_reply(emu, settings):
    async with deskhand(settings) as (rt, _):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        first = await emu.push_event(ACME, dm)
        event_id = emu.envelopes[first]["payload"]["event_id"]
        await emu.wait_for_call("chat.update", answered(dm["channel"]))
        retries = [await emu.push_event(ACME, dm, retry_attempt=n, event_id=event_id) for n in (1, 2)]
        for retry in retries:
            assert await emu.wait_for_ack(retry) is None
        inbox = await rt.store.inbox_count()

    assert len(posts(emu, dm["channel"])) == 1 and len(emu.calls_to("chat.update")) == 1
    assert inbox == 1


async def test_a_redelivery_after_a_restart_gets_no_second_reply(emu, settings):
    dm = emu.dm(ACME, ALICE, "where is order A-1042?")
    async with deskhand(settings):
        first = await emu.push_event(ACME, dm)
        await emu.wait_for_call("chat.update", answered(dm["channel"]))
    event_id = emu.envelopes[first]["payload"]["event_id"]

    async with deskhand(settings) as (rt, _):  # same DESKHAND_HOME: a restarted process
        retry = await emu.push_event(ACME, dm, retry_attempt=1, event_id=event_id)
        await emu.wait_for_ack(retry)
        inbox = await rt.store.inbox_count()

    assert emu.connections_opened == 2
    assert len(posts(emu, dm["channel"])) == 1 and len(emu.calls_to("chat.update")) == 1
    assert inbox == 1


class Stuck:
    """A planner that never returns: the turn is cut short when the process stops."""

    name = "stuck"

    async def plan(self, context):
        await asyncio.Event().wait()


async def stop_mid_turn(emu, settings, dm, before_stop=None) -> None:
    """Run a Deskhand that takes `dm`, posts its placeholder, and stops with the turn
    unfinished (cancelled, like a killed process); `before_stop(rt)` runs just before."""
    running = asyncio.Event()

    async def first_process():
        async with deskhand(settings, planner=Stuck()) as (rt, slack):
            await emu.push_event(ACME, dm)
            await emu.wait_for_call("chat.postMessage")
            await slack.jobs.idle()  # the placeholder's ts is stored
            if before_stop is not None:
                await before_stop(rt)
            running.set()
            await asyncio.Event().wait()

    crashed = asyncio.create_task(first_process())
    await running.wait()
    crashed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashed


async def test_a_turn_cut_short_finishes_after_a_restart_in_its_placeholder(emu, settings):
    dm = emu.dm(ACME, ALICE, "where is order A-1042?")
    await stop_mid_turn(emu, settings, dm)

    async with deskhand(settings):  # resumes the unfinished turn at start-up
        answer = await emu.wait_for_call("chat.update", answered(dm["channel"], "A-1042 has shipped"))

    assert len(posts(emu, dm["channel"])) == 1
    assert answer.params["ts"] == posts(emu, dm["channel"])[0].response["ts"]


async def test_the_ack_does_not_wait_for_slack_to_say_who_the_user_is(emu, settings):
    slow = emu.hold("users.info", lambda p: p.get("user") == ALICE)
    async with open_runtime(settings, planner=rules()) as rt, \
            serve(rt, options=dataclasses.replace(FAST, identity_timeout_s=60)):
        dm = emu.dm(ACME, ALICE, "where are my orders?")
        # Were users.info asked before the ack, the ack would wait on it (for up to 60 s).
        assert await emu.wait_for_ack(await emu.push_event(ACME, dm)) is None
        slow.set()
        answer = await emu.wait_for_call("chat.update", answered(dm["channel"]))
        stored = await rt.store.inbox_envelope(message_id(ACME, dm["channel"], dm["ts"]))

    assert stored.metadata["verified_email"] == "ada@example.com"
    assert "A-1042" in answer.params["text"]  # her orders, found by her verified email


async def test_a_placeholder_whose_ts_was_never_stored_is_still_replaced_after_a_restart(emu, settings):
    dm = emu.dm(ACME, ALICE, "where is order A-1042?")

    async def forget_the_placeholder(rt):  # what a crash between posting it and storing its ts leaves
        await rt.store.session_update(session_id(ACME, dm["channel"], dm["ts"]),
                                      **{placeholder_key(message_id(ACME, dm["channel"], dm["ts"])): None})

    await stop_mid_turn(emu, settings, dm, before_stop=forget_the_placeholder)

    async with deskhand(settings):  # resumes the unfinished turn at start-up
        answer = await emu.wait_for_call("chat.update", answered(dm["channel"], "A-1042 has shipped"))

    assert len(posts(emu, dm["channel"])) == 1  # no second message: the placeholder became the answer
    assert answer.params["ts"] == posts(emu, dm["channel"])[0].response["ts"]
    assert [m["text"] for m in emu.messages(dm["channel"]) if m.get("bot_id")] != [bk.PLACEHOLDER]


async def test_an_answer_ready_before_its_placeholder_is_posted_instead_of_it(emu, settings):
    # One placeholder post at a time, and Slack holds the first: the second message's
    # placeholder is still queued when its answer is ready.
    slow = emu.hold("chat.postMessage", lambda p: p.get("text") == bk.PLACEHOLDER)
    first = emu.dm(ACME, ALICE, "where is order A-1042?")
    second = emu.dm(ACME, DAVE, "where is order A-1042?")
    async with open_runtime(settings, planner=rules()) as rt, \
            serve(rt, options=SlackOptions(**{**FAST.__dict__, "max_placeholders_in_flight": 1})):
        await emu.push_event(ACME, first)
        await emu.wait_for(lambda e: e.acks)  # the first placeholder is now held by Slack
        await emu.push_event(ACME, second)
        answer = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == second["channel"])
        slow.set()
        await emu.wait_for_call("chat.update", answered(first["channel"], "A-1042 has shipped"))

    assert "A-1042 has shipped" in answer.params["text"]
    assert [c.params["text"] for c in posts(emu, second["channel"])] == [answer.params["text"]]
    assert not [c for c in emu.calls_to("chat.update") if c.params["channel"] == second["channel"]]
    assert [c.params["text"] for c in posts(emu, first["channel"])] == [bk.PLACEHOLDER]


# ------------------------------------------------------------------ approvals


async def refund_card(emu, user: str = ALICE, channel: str | None = None, team: str = ACME,
                      support: str = SUPPORT):
    """Ask for a refund of A-1120 and return (the customer's DM event, the approval card call)."""
    dm = emu.dm(team, user, "I want a refund for A-1120")
    await emu.push_event(team, dm)
    card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == support)
    return dm, card


def approve_click(emu, user: str, card, approve: bool = True, team: str = ACME):
    value = next(e["value"] for b in card.params["blocks"] if b["type"] == "actions" for e in b["elements"])
    return emu.block_action(team, user, card.params["channel"], card.response["ts"],
                            bk.APPROVE if approve else bk.REJECT, value, text="Approve")


async def test_a_refund_approved_by_an_approver_runs_once_and_the_customer_is_told(emu, settings):
    async with deskhand(settings) as (rt, _):
        dm, card = await refund_card(emu)
        answer = await emu.wait_for_call("chat.update", answered(dm["channel"], "approve a refund of 64.00"))
        click = approve_click(emu, BOB, card)
        assert await emu.wait_for_ack(await emu.push_interactive(ACME, click)) is None
        decided = await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card.response["ts"])
        told = await emu.wait_for_call("chat.postMessage", lambda c: "Good news" in c.params["text"])
        await emu.wait_for_ack(await emu.push_interactive(ACME, click))  # a redelivered click
        again = await ephemeral_to(emu, BOB, "Already approved by <@U0BOB0001>")
        action_id = click["actions"][0]["value"]
        audit = [e["action"] for e in await rt.store.audit_entries(action_id)]
        refunds = rt.shop.count("refunds")

    fields = " ".join(f["text"] for f in card.params["blocks"][1]["fields"])
    assert "A-1120" in fields and "64.00" in fields and f"<@{ALICE}>" in fields
    assert "direct message" in section_texts(card.params["blocks"])[0]
    assert any("teammate will review" in e["text"] for b in answer.params["blocks"] if b["type"] == "context"
               for e in b["elements"])
    assert f"Approved by <@{BOB}>" in section_texts(decided.params["blocks"])[-1]
    assert "<!date^" in section_texts(decided.params["blocks"])[-1]
    assert bk.APPROVE not in str(decided.params["blocks"])  # the buttons are gone
    assert (told.params["channel"], told.params["thread_ts"]) == (dm["channel"], dm["ts"])
    assert "64.00" in told.params["text"] and again["channel"] == SUPPORT
    assert refunds == 1 + INITIAL_REFUNDS
    assert audit.count("approved") == 1 and audit.count("executed") == 1 and "approve_duplicate" in audit


async def test_an_approval_card_queued_again_after_a_crash_is_posted_once(emu, settings):
    async with deskhand(settings) as (rt, slack):
        dm, card = await refund_card(emu)
        action_id = approve_click(emu, BOB, card)["actions"][0]["value"]
        envelope = await rt.store.inbox_envelope(message_id(ACME, dm["channel"], dm["ts"]))
        # What a crash between queueing the card and noting it leaves: a re-run queues it again.
        await rt.store.pending_update_metadata(action_id, card_queued=False, card_ts=None)
        await slack.responder.post_approval_card(envelope, action_id)
        await slack.responder.flush_outbox()

    assert len(posts(emu, SUPPORT)) == 1


async def test_approval_is_refused_to_a_non_approver_and_to_the_requester(emu, settings):
    async with deskhand(settings) as (rt, _):
        _, card = await refund_card(emu, user=BOB)  # an approver asks for a refund himself
        await emu.push_interactive(ACME, approve_click(emu, DAVE, card))
        refused = await ephemeral_to(emu, DAVE, "Only approvers")
        await emu.push_interactive(ACME, approve_click(emu, BOB, card))
        own = await ephemeral_to(emu, BOB, "your own request")
        # Erin approves through the approver user group (usergroups.users.list).
        await emu.push_interactive(ACME, approve_click(emu, ERIN, card, approve=False))
        decided = await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card.response["ts"])
        action = await rt.store.pending_get(card.params["blocks"][3]["elements"][0]["value"])
        refunds = rt.shop.count("refunds")

    assert refused["channel"] == own["channel"] == SUPPORT
    assert f"Rejected by <@{ERIN}>" in section_texts(decided.params["blocks"])[-1]
    assert (action.status, action.decided_by) == ("rejected", ERIN)
    assert emu.calls_to("usergroups.users.list")[0].params["usergroup"] == "S0APPROVE1"
    assert refunds == INITIAL_REFUNDS


async def test_a_double_click_on_approve_refunds_once(emu, settings):
    async with deskhand(settings) as (rt, _):
        dm, card = await refund_card(emu)
        clicks = [approve_click(emu, BOB, card), approve_click(emu, ERIN, card)]
        envelopes = await asyncio.gather(*(emu.push_interactive(ACME, c) for c in clicks))
        for envelope_id in envelopes:
            await emu.wait_for_ack(envelope_id)
        await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card.response["ts"])
        loser = await emu.wait_for(lambda e: next((m for m in e.team.ephemerals if "Already approved" in m["text"]), None))
        await emu.wait_for_call("chat.postMessage", lambda c: "Good news" in c.params["text"])
        refunds = rt.shop.count("refunds")

    assert loser["user"] in (BOB, ERIN)
    assert refunds == INITIAL_REFUNDS + 1
    assert len([c for c in posts(emu, dm["channel"]) if "Good news" in c.params["text"]]) == 1
    assert len([c for c in emu.calls_to("chat.update") if c.params["ts"] == card.response["ts"]]) == 1


# ------------------------------------------------------------------ handoff


async def test_handoff_by_button_then_silence_then_hand_back(emu, settings):
    async with deskhand(settings) as (rt, _):
        mention = emu.mention(ACME, ALICE, GENERAL, "where is order A-1042? mail me at ada@example.com")
        await emu.push_event(ACME, mention)
        answer = await emu.wait_for_call("chat.update", answered(GENERAL, "A-1042 has shipped"))
        thread = session_id(ACME, GENERAL, mention["ts"])
        click = emu.block_action(ACME, ALICE, GENERAL, answer.params["ts"], bk.HANDOFF, thread)
        await emu.push_interactive(ACME, click)
        card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT)
        told = await emu.wait_for_call("chat.postMessage", lambda c: "passed this conversation" in c.params["text"])

        # Handed off: Deskhand records the thread but says nothing.
        reply = emu.thread_reply(ACME, ALICE, GENERAL, mention["ts"], "hello? where is A-1042?")
        await emu.wait_for_ack(await emu.push_event(ACME, reply))
        silent = await rt.orchestrator.process(message_id(ACME, GENERAL, reply["ts"]))
        await emu.wait_for_ack(await emu.push_interactive(ACME, emu.block_action(
            ACME, DAVE, SUPPORT, card.response["ts"], bk.HANDBACK, thread)))
        refused = await ephemeral_to(emu, DAVE, "Only support teammates")
        await emu.push_interactive(ACME, emu.block_action(ACME, CAROL, SUPPORT, card.response["ts"], bk.HANDBACK, thread))
        back = await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card.response["ts"])
        again = emu.thread_reply(ACME, ALICE, GENERAL, mention["ts"], "where is order A-1042?")
        await emu.push_event(ACME, again)
        await emu.wait_for_call("chat.update", answered(GENERAL, "A-1042 has shipped"), count=2)
        audit = [e["action"] for e in await rt.store.audit_entries(thread)]

    excerpt = section_texts(card.params["blocks"])[1]
    assert "[email]" in excerpt and "ada@example.com" not in excerpt and "A-1042" in excerpt
    assert bk.HANDBACK in str(card.params["blocks"]) and f"<@{ALICE}>" in section_texts(card.params["blocks"])[0]
    assert told.params["thread_ts"] == mention["ts"]
    assert silent.state == "SILENT" and silent.reply is None
    assert refused["channel"] == SUPPORT
    assert f"Handed back to Deskhand by <@{CAROL}>" in section_texts(back.params["blocks"])[-1]
    assert [p.params["thread_ts"] for p in posts(emu, GENERAL) if p.params["text"] == bk.PLACEHOLDER] == [
        mention["ts"], again["thread_ts"]]  # no placeholder while a human had the thread
    assert audit == ["handoff", "handback_refused", "handback"]


async def test_escalating_in_words_then_handback_by_slash_command(emu, settings):
    async with deskhand(settings) as (rt, _):
        mention = emu.mention(ACME, ALICE, GENERAL, "I want to talk to a human")
        await emu.push_event(ACME, mention)
        reply = await emu.wait_for_call("chat.update", answered(GENERAL, "passed this conversation"))
        card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT)
        link = f"https://{emu.team.domain}.slack.com/archives/{GENERAL}/p{mention['ts'].replace('.', '')}"
        assert link in section_texts(card.params["blocks"])[0]
        command = emu.slash_command(ACME, BOB, SUPPORT, f"handback {link}")
        assert await emu.wait_for_ack(await emu.push_slash_command(ACME, command)) is None
        answer = await emu.wait_for_call("response_url")
        session = await rt.store.session_get(session_id(ACME, GENERAL, mention["ts"]))

    assert bk.HANDOFF not in action_ids(emu.message(GENERAL, reply.params["ts"]))
    assert "Handed back" in answer.params["text"] and session["status"] == "active"


# ------------------------------------------------------------------ /deskhand and App Home


class FakeKB:
    """Stands in for the knowledge base: reload reports progress and waits to be let go."""

    def __init__(self):
        self.release = threading.Event()
        self.reloads = []

    def status(self, tenant_id):
        from kb_loader.models import KBStatus

        return KBStatus(tenant_id=tenant_id, available=True, docs=3, chunks=42, stale_after_hours=168)

    def reload(self, tenant_id, kb_dir, progress=None):
        self.reloads.append(tenant_id)
        progress("embed", 1, 2)  # the knowledge base reports (stage, done, total)
        assert self.release.wait(10)
        progress("embed", 2, 2)
        return {"documents": 2, "chunks": 40, "skipped": 1}


async def test_kb_reload_by_an_admin_shows_progress_in_one_message(emu, settings):
    kb = FakeKB()
    async with deskhand(settings, kb=kb):
        refused = await emu.push_slash_command(ACME, emu.slash_command(ACME, DAVE, SUPPORT, "kb reload"))
        assert "Only Deskhand admins" in (await emu.wait_for_ack(refused))["text"]
        started = await emu.push_slash_command(ACME, emu.slash_command(ACME, CAROL, SUPPORT, "kb reload"))
        assert "Reloading" in (await emu.wait_for_ack(started))["text"]
        first = await emu.wait_for_call("chat.update", lambda c: "1/2" in c.params["text"])
        kb.release.set()
        done = await emu.wait_for_call("chat.update", lambda c: "reloaded" in c.params["text"])
        status = await emu.push_slash_command(ACME, emu.slash_command(ACME, DAVE, SUPPORT, "kb status"))
        await emu.wait_for_ack(status)
        kb_status = await emu.wait_for_call("response_url", lambda c: "chunks: 42" in c.params["text"])

    progress = posts(emu, SUPPORT)
    assert len(progress) == 1 and first.params["ts"] == done.params["ts"] == progress[0].response["ts"]
    assert "embed" in first.params["text"] and "chunks: 40" in done.params["text"]
    assert kb.reloads == [ACME] and "documents: 3" in kb_status.params["text"]


async def test_slash_command_without_a_kb_status_help_and_unknown(emu, settings):
    async with deskhand(settings) as (rt, _):
        rt.kb = None
        acks = {}
        for text in ("kb reload", "help", "frobnicate <!channel>", ""):
            envelope = await emu.push_slash_command(ACME, emu.slash_command(ACME, CAROL, SUPPORT, text))
            acks[text] = (await emu.wait_for_ack(envelope))["text"]
        await emu.push_slash_command(ACME, emu.slash_command(ACME, CAROL, SUPPORT, "status"))
        status = await emu.wait_for_call("response_url", lambda c: "Deskhand status" in c.params["text"])

    assert "not configured" in acks["kb reload"]
    assert acks["help"] == acks[""] and "/deskhand kb reload" in acks["help"]
    assert "`/deskhand frobnicate &lt;!channel&gt;`" in acks["frobnicate <!channel>"]
    assert "kb status" in acks["frobnicate <!channel>"]
    assert f"<#{SUPPORT}>" in status.params["text"] and "0 approvals" in status.params["text"]


async def test_app_home_shows_kb_pending_approvals_handoffs_and_today(emu, settings):
    async with deskhand(settings, kb=FakeKB()):
        await refund_card(emu)
        await emu.push_event(ACME, {"type": "app_home_opened", "user": BOB, "channel": "D0BOB0001",
                                    "tab": "home", "event_ts": "1700000000.000100"})
        await emu.wait_for_call("views.publish")
        other = await emu.push_event(ACME, {"type": "member_joined_channel", "user": DAVE, "channel": SUPPORT,
                                            "event_ts": "1700000000.000200"})
        assert await emu.wait_for_ack(other) is None  # events Deskhand does not use are still acked

    view = emu.team.home_views[BOB]
    text = " ".join(section_texts(view["blocks"]))
    assert "chunks: 42" in text and "Pending approvals (1)" in text and "A-1120" in text
    assert "Open handoffs (0)" in text and "messages answered: *1*" in text


async def test_feedback_buttons_are_recorded(emu, settings):
    async with deskhand(settings) as (rt, _):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        await emu.push_event(ACME, dm)
        answer = await emu.wait_for_call("chat.update", answered(dm["channel"]))
        value = message_id(ACME, dm["channel"], dm["ts"])
        await emu.push_interactive(ACME, emu.block_action(ACME, ALICE, dm["channel"], answer.params["ts"],
                                                          bk.FEEDBACK_UP, value))
        await ephemeral_to(emu, ALICE, "Thanks for the feedback")
        await emu.push_interactive(ACME, emu.block_action(ACME, ALICE, dm["channel"], answer.params["ts"],
                                                          bk.FEEDBACK_DOWN, value))
        await emu.wait_for_call("views.open", lambda c: c.response["ok"])  # what went wrong? (tests/test_feedback.py)
        # A trigger too old to open the modal: the 👎 is still kept, and thanked for.
        emu.team.trigger_ttl_s = 0.0
        await emu.push_interactive(ACME, emu.block_action(ACME, ALICE, dm["channel"], answer.params["ts"],
                                                          bk.FEEDBACK_DOWN, value))
        await emu.wait_for_call("views.open", lambda c: c.response.get("error") == "expired_trigger_id")
        await ephemeral_to(emu, ALICE, "A teammate reviews answers marked")
        rows = list(rt.store.sync.db["feedback"].rows)

    assert [(r["value"], r["user_id"], r["inbox_id"]) for r in rows] == [("up", ALICE, value), ("down", ALICE, value),
                                                                         ("down", ALICE, value)]


# ------------------------------------------------------------------ reliability


async def test_a_429_on_chat_post_message_is_retried_after_retry_after(emu, settings):
    emu.fail_next("chat.postMessage", retry_after=1)
    async with deskhand(settings):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        await emu.push_event(ACME, dm)
        await emu.wait_for_call("chat.update", answered(dm["channel"], "A-1042 has shipped"))

    statuses = [c.status for c in emu.calls_to("chat.postMessage")]
    assert statuses == [429, 200]


async def test_a_failed_reply_is_kept_in_the_outbox_and_sent_later(emu, settings):
    emu.fail_next("chat.update", error="fatal_error")
    async with deskhand(settings):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        await emu.push_event(ACME, dm)
        await emu.wait_for_call("chat.update", answered(dm["channel"], "A-1042 has shipped"), count=2)
    store = Store(settings.db_path)  # shutdown waited for the outbox retrier to finish
    rows = store.outbox_rows()
    store.close()

    assert [c.response["ok"] for c in emu.calls_to("chat.update")] == [False, True]
    assert [(r["status"], r["payload"]["op"]) for r in rows] == [("sent", "update")]


async def until(probe, timeout: float = 10):
    """Wait until the coroutine function `probe` returns something truthy: for store state."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the expected state")
        await asyncio.sleep(0.02)
    return value


async def test_a_post_that_keeps_failing_is_given_up_to_the_dlq_and_retried_from_there(emu, settings):
    bounded = load_settings(home=settings.home, slack_bot_token=settings.slack_bot_token,
                            slack_app_token=settings.slack_app_token, slack_api_url=settings.slack_api_url,
                            tenants_file=settings.tenants_file, outbox_max_attempts=3,
                            outbox_backoff_base_s=0.01, outbox_backoff_max_s=0.05)
    emu.fail_next("chat.postMessage", error="internal_error", times=3)  # then Slack is back
    async with deskhand(bounded) as (rt, slack):
        await slack.responder.queue({"op": "post", "team": ACME, "channel": SUPPORT, "text": "A card"},
                                    key="card:1")
        [row] = await until(lambda: rt.store.outbox_rows("failed", "slack"))
        assert row["attempts"] == 3 and row["last_error"] == "slack:internal_error"
        assert len(posts(emu, SUPPORT)) == 3  # given up: not tried a fourth time
        listed = await asyncio.to_thread(dlq, "list", home=bounded.home)
        assert listed.returncode == 0, listed.stderr
        assert f"outbox:{row['id']}" in listed.stdout and "slack:internal_error" in listed.stdout

        retried = await asyncio.to_thread(dlq, "retry", f"outbox:{row['id']}", "--as", "U_LEAD", home=bounded.home)
        assert retried.returncode == 0, retried.stderr
        await emu.wait_for_call("chat.postMessage", lambda c: c.response["ok"] and c.params["channel"] == SUPPORT)
        [row] = await until(lambda: rt.store.outbox_rows("sent", "slack"))
        audit = [a["action"] for a in await rt.store.audit_entries(f"outbox:{row['id']}")]

    assert [c.response["ok"] for c in posts(emu, SUPPORT)] == [False, False, False, True]
    assert audit == ["outbox_dead_letter", "dlq_retry"]
    assert f"outbox:{row['id']}" not in (await asyncio.to_thread(dlq, "list", home=bounded.home)).stdout


async def test_disconnect_and_dropped_socket_reconnect_and_nothing_is_lost(emu, settings):
    async with deskhand(settings):
        await emu.wait_for(lambda e: e.connection_count == 1)
        await emu.send_disconnect(reason="refresh_requested")
        await emu.wait_for(lambda e: e.connections_opened == 2 and e.connection_count == 1)
        first = emu.dm(ACME, ALICE, "where is order A-1042?")
        await emu.push_event(ACME, first)
        await emu.wait_for_call("chat.update", answered(first["channel"], "A-1042"))

        await emu.drop_sockets()
        second = emu.dm(ACME, ALICE, "I want a refund for A-1120")
        queued = await emu.push_event(ACME, second)  # sent while Deskhand is disconnected
        await emu.wait_for(lambda e: e.connections_opened == 3 and e.connection_count == 1)
        await emu.wait_for_ack(queued)
        await emu.wait_for_call("chat.update", answered(second["channel"], "64.00"))

    assert len(emu.calls_to("apps.connections.open")) == 3


async def test_shadow_mode_plans_and_records_but_posts_nothing(emu, settings, tmp_path):
    shadow = tmp_path / "shadow.yml"
    shadow.write_text(TENANTS.replace("name: Acme", "name: Acme\n    shadow_mode: true"))
    # Loaded anew: settings read (and keep) their tenants file when they are loaded.
    shadow_settings = load_settings(home=settings.home, slack_bot_token=settings.slack_bot_token,
                                    slack_app_token=settings.slack_app_token, slack_api_url=settings.slack_api_url,
                                    tenants_file=shadow)
    async with deskhand(shadow_settings) as (rt, slack):
        dm = emu.dm(ACME, ALICE, "where is order A-1042?")
        await emu.wait_for_ack(await emu.push_event(ACME, dm))
        outcome = await rt.orchestrator.process(message_id(ACME, dm["channel"], dm["ts"]))
        await slack.jobs.idle()

    assert outcome.shadow and "A-1042 has shipped" in outcome.reply
    assert emu.calls_to("chat.postMessage") == [] and emu.calls_to("chat.update") == []


# ------------------------------------------------------------------ tenants, text


async def test_two_workspaces_are_kept_apart(emu, settings):
    globex = emu.workspaces[GLOBEX]
    credentials = [SlackCredentials(ws.bot_token, ws.app_token) for ws in emu.workspaces.values()]
    async with deskhand(settings, credentials=credentials) as (rt, _):
        _, acme_card = await refund_card(emu)
        gina_dm, globex_card = await refund_card(emu, user=GINA, team=GLOBEX, support=GLOBEX_SUPPORT)
        # A Globex approver clicks a button carrying Acme's request id.
        forged = approve_click(emu, GUS, acme_card, team=GLOBEX)
        forged["channel"] = {"id": GLOBEX_SUPPORT, "name": "help"}
        forged["container"].update(channel_id=GLOBEX_SUPPORT, message_ts=globex_card.response["ts"])
        await emu.push_interactive(GLOBEX, forged)
        refused = await ephemeral_to(emu, GUS, "can't find that", team=GLOBEX)
        acme_action = await rt.store.pending_get(forged["actions"][0]["value"])
        sessions = [s["id"] for t in (ACME, GLOBEX) for s in await rt.store.sessions_with_status(t, "active")]
        refunds = rt.shop.count("refunds")

    assert acme_card.team == ACME and globex_card.team == GLOBEX
    assert {c.team for c in posts(emu, gina_dm["channel"])} == {GLOBEX}
    assert acme_action.status == "pending" and refunds == INITIAL_REFUNDS
    assert refused["channel"] == GLOBEX_SUPPORT
    assert sorted(s.split(":")[1] for s in sessions) == [ACME, GLOBEX]
    assert not any(GINA in str(c.params) for c in emu.calls if c.team == ACME)
    assert globex.ephemerals and not emu.team.ephemerals


async def test_mrkdwn_from_people_and_models_never_becomes_mentions_or_links(emu, settings):
    async with deskhand(settings, planner=Echo()):
        # What Slack sends when someone types `<!channel> & <@U0BOB0001>` literally, plus a real link.
        typed = "&lt;!channel&gt; &amp; &lt;@U0BOB0001&gt; see <https://evil.example/x|click here>"
        dm = emu.dm(ACME, ALICE, typed)
        await emu.push_event(ACME, dm)
        answer = await emu.wait_for_call("chat.update", answered(dm["channel"]))

    text = section_texts(answer.params["blocks"])[0]
    assert text == ("You said: &lt;!channel&gt; &amp; &lt;@U0BOB0001&gt; see click here "
                    "(https://evil.example/x)")
    assert "<!channel>" not in answer.params["text"] and "<@" not in answer.params["text"]
    sources = answer.params["blocks"][1]["elements"][0]["text"]
    assert sources == "Sources: <https://help.example.com/refunds?a=1&amp;b=2|Refunds &amp; &lt;returns&gt;>"


async def test_long_answers_are_split_into_sections_within_slack_limits(emu, settings):
    async with deskhand(settings, planner=Echo()):
        short, huge = emu.dm(ACME, ALICE, "long 5"), emu.dm(ACME, BOB, "long 60")
        await emu.push_event(ACME, short)
        await emu.push_event(ACME, huge)
        split = await emu.wait_for_call("chat.update", answered(short["channel"]))
        cut = await emu.wait_for_call("chat.update", answered(huge["channel"]))

    sections = section_texts(split.params["blocks"])
    assert len(sections) >= 4 and all(len(s) <= 3000 for s in sections)
    assert " ".join(sections).split() == long_answer(5).split()
    sections = section_texts(cut.params["blocks"])
    assert len(cut.params["blocks"]) <= 50 and all(len(s) <= 3000 for s in sections)
    assert sum(map(len, sections)) <= 40_000 and sections[-1].endswith(bk.SHORTENED)
    assert len(cut.params["text"]) <= 3000


def test_deskhand_run_without_tokens_says_what_is_missing(tmp_path):
    from bot.cli import app

    result = CliRunner().invoke(app, ["run"])

    assert result.exit_code == 2
    assert "SLACK_BOT_TOKEN is not set" in result.output and "SLACK_APP_TOKEN is not set" in result.output
    assert "manifest.yml" in result.output and "docs/slack.md" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_deskhand_run_refuses_two_workspaces_sharing_an_app_token(monkeypatch):
    from bot.cli import app

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    monkeypatch.setenv("DESKHAND_SLACK_WORKSPACES", '[{"bot_token": "xoxb-2", "app_token": "xapp-1"}, '
                                                    '{"bot_token": "xoxp-3", "app_token": ""}]')
    result = CliRunner().invoke(app, ["run"])

    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "share an app-level token" in result.output
    assert "DESKHAND_SLACK_WORKSPACES[1].bot_token must be a bot token" in result.output
    assert "DESKHAND_SLACK_WORKSPACES[1].app_token is not set" in result.output


async def test_deskhand_run_serves_every_configured_workspace(emu, settings, tmp_path):
    """The real `deskhand run` process, connected to two workspaces (one Slack app each)."""
    import os
    import signal
    import sys
    from pathlib import Path

    globex = emu.workspace(GLOBEX)
    env = {**os.environ, "DESKHAND_HOME": str(tmp_path / "run-home"), "DESKHAND_KB_DIR": str(tmp_path / "no-kb"),
           "DESKHAND_TENANTS_FILE": str(settings.tenants_file), "SLACK_BOT_TOKEN": emu.team.bot_token,
           "SLACK_APP_TOKEN": emu.team.app_token, "DESKHAND_SLACK_API_URL": emu.api_url,
           "DESKHAND_SLACK_WORKSPACES": json.dumps([{"bot_token": globex.bot_token, "app_token": globex.app_token}])}
    err = tmp_path / "run.err"
    with open(err, "wb") as errors:
        proc = await asyncio.create_subprocess_exec(str(Path(sys.executable).with_name("deskhand")), "run", env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=errors)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 240)  # printed once connected
        assert b"connected to Slack" in line, err.read_text()
        acme_dm, globex_dm = emu.dm(ACME, ALICE, "where is order A-1042?"), emu.dm(GLOBEX, GINA, "hello")
        await emu.push_event(ACME, acme_dm)
        await emu.push_event(GLOBEX, globex_dm)
        acme = await emu.wait_for_call("chat.update", answered(acme_dm["channel"], "A-1042"), timeout=60)
        hello = await emu.wait_for_call("chat.update", answered(globex_dm["channel"]), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)

    assert code == 0, err.read_text()
    assert (acme.team, hello.team) == (ACME, GLOBEX)  # each answered with its own bot token


def test_the_web_client_logger_has_its_own_level_so_the_sdk_skips_debug_formatting():
    import logging

    from bot.slack.client import web_client

    client = web_client("xoxb-1", "http://127.0.0.1:9/api/")  # no session: nothing to close

    # slack_sdk formats every request's debug line when its logger's own level is NOTSET.
    assert client.logger.level == logging.getLogger().getEffectiveLevel() != logging.NOTSET
