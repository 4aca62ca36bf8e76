"""Email conversations mirrored into Slack, end to end, as `deskhand run` runs them
(`bot.run.run_deskhand`): real SMTP in on 127.0.0.1, a real aiosmtpd relay out, and the real
bolt app over Socket Mode against the Slack emulator. Waits are on observable state: calls the
emulator recorded, messages at the relay, rows in SQLite.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import pytest

from bot.config import load_settings
from bot.hands.tools.escalate_to_human import HANDED_OFF
from bot.run import run_deskhand
from bot.runtime import open_runtime
from bot.slack import blocks as bk
from mailbridge.inbound import envelope_id
from mailbridge.service import MailOptions
from tests.test_mail_bridge import email, eventually, relay, send  # noqa: F401 - `relay` is a fixture
from tests.test_slack_app import (  # noqa: F401 - `emu` is a fixture
    ACME, BOB, CAROL, DAVE, FAST, INITIAL_REFUNDS, SUPPORT, TENANTS, action_ids, emu, ephemeral_to,
    rules, section_texts,
)

MAIL_OPTIONS = MailOptions(outbox_poll_s=0.05)


@pytest.fixture
def settings(tmp_path, emu, relay):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(TENANTS)
    return load_settings(
        home=tmp_path / "home", kb_dir=tmp_path / "no-kb", tenants_file=tenants,
        slack_bot_token=emu.team.bot_token, slack_app_token=emu.team.app_token, slack_api_url=emu.api_url,
        smtp_enabled=True, smtp_port=0, relay_port=relay.port, mail_tenant=ACME,
        outbox_backoff_base_s=0.05, outbox_backoff_max_s=0.2,
    )


@asynccontextmanager
async def deskhand(settings, planner=None):
    async with open_runtime(settings, planner=planner or rules()) as rt, \
            run_deskhand(rt, slack_options=FAST, mail_options=MAIL_OPTIONS) as running:
        yield rt, running.mail, running.slack


def in_thread(emu, root_ts: str) -> list[dict]:
    """What the support channel's thread under `root_ts` holds, in order."""
    return [m for m in emu.messages(SUPPORT) if m.get("thread_ts") == root_ts and m["ts"] != root_ts]


async def thread_root(emu) -> dict:
    call = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT
                                   and "Email from" in c.params["text"] and c.response.get("ok"))
    return emu.message(SUPPORT, call.response["ts"])


async def thread_post(emu, root: dict, text: str, count: int = 1) -> dict:
    return await emu.wait_for(lambda e: (m := [p for p in in_thread(e, root["ts"]) if text in p["text"]])
                              and len(m) >= count and m[count - 1])


async def turn_state(rt, message_id: str) -> str | None:
    """How the turn for the email with this Message-ID ended (None while it runs)."""
    row = await rt.store.inbox_get(envelope_id(ACME, message_id))
    return json.loads(row["outcome"]).get("state") if row and row["outcome"] else None


async def test_an_email_conversation_is_a_thread_with_the_customers_message_and_the_reply(emu, settings, relay):
    async with deskhand(settings) as (rt, bridge, _):
        await send(bridge, email("Where is order A-1042? Ada"))
        await relay.wait_for(1)
        root = await thread_root(emu)
        reply = await thread_post(emu, root, "Deskhand replied")
        posted = in_thread(emu, root["ts"])
        [row] = await rt.store.outbox_rows(channel="email")
        mirrored = await rt.store.mirror_session(ACME, SUPPORT, root["ts"])

    assert "Where is my lamp?" in section_texts(root["blocks"])[0] and "ada@example.com" in root["text"]
    assert action_ids(root) == [bk.HANDOFF]
    assert [p["text"].split(":")[0] for p in posted] == ["ada@example.com wrote", "🤖 Deskhand replied to ada@example.com by email"]
    assert "A-1042" in posted[0]["text"]
    emailed = relay.parsed(0).get_body(("plain",)).get_content()
    assert "A-1042" in " ".join(section_texts(reply["blocks"])) and "A-1042" in emailed
    assert row["session_id"] == mirrored


async def test_a_teammates_reply_in_the_thread_is_the_email_reply_and_deskhand_stays_quiet(emu, settings, relay):
    async with deskhand(settings) as (rt, bridge, _):
        await send(bridge, email("Where is order A-1042?"))
        await relay.wait_for(1)
        root = await thread_root(emu)
        await thread_post(emu, root, "Deskhand replied")
        session = await rt.store.mirror_session(ACME, SUPPORT, root["ts"])

        note = emu.thread_reply(ACME, DAVE, SUPPORT, root["ts"], "// checking the warehouse first")
        await emu.wait_for_ack(await emu.push_event(ACME, note))
        reply = emu.thread_reply(ACME, DAVE, SUPPORT, root["ts"], "Hi Ada, it left our warehouse today &amp; "
                                 "arrives Friday.")
        await emu.wait_for_ack(await emu.push_event(ACME, reply))
        await emu.wait_for_ack(await emu.push_event(ACME, reply, retry_attempt=1))  # Slack's retry
        await relay.wait_for(2)
        card = await thread_post(emu, root, "A conversation needs a human")
        await thread_post(emu, root, "Sending to ada@example.com")
        handed_off = (await rt.store.session_get(session))["status"]

        # The customer answers the teammate: the thread shows it, Deskhand says nothing.
        teammate_mail = relay.parsed(1)
        await send(bridge, email("Thanks! Where is order A-1042 now?", mid="<q2@example.com>",
                                 subject="Re: Where is my lamp?", in_reply_to=teammate_mail["Message-ID"]))
        silent = await eventually(lambda: turn_state(rt, "<q2@example.com>"))
        shown = await thread_post(emu, root, "Thanks! Where is order A-1042 now?")

        # Handed back with the card's button: Deskhand answers the next email.
        await emu.push_interactive(ACME, emu.block_action(ACME, CAROL, SUPPORT, card["ts"], bk.HANDBACK, session))
        await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card["ts"])
        await send(bridge, email("And order A-1042?", mid="<q3@example.com>", subject="Re: Where is my lamp?",
                                 in_reply_to="<q2@example.com>"))
        await relay.wait_for(3)
        emails = len(relay.messages)
        transcript = [m["text"] for m in await rt.store.history(session, 20)]

    assert handed_off == HANDED_OFF and silent == "SILENT" and shown
    assert emails == 3  # the bot's first reply, the teammate's reply (once), the bot after handback
    assert teammate_mail["To"] == "ada@example.com" and teammate_mail["In-Reply-To"] == "<q1@example.com>"
    assert "Dave" in teammate_mail["From"] and "Acme" in teammate_mail["From"]
    assert teammate_mail["Auto-Submitted"] is None
    body = teammate_mail.get_body(("plain",)).get_content()
    assert "it left our warehouse today & arrives Friday." in body and "checking the warehouse" not in body
    assert "Hi Ada, it left our warehouse today & arrives Friday." in transcript
    assert bk.HANDBACK in action_ids(card)
    assert "A-1042" in relay.parsed(2).get_body(("plain",)).get_content()



async def test_a_refund_asked_by_email_is_decided_on_a_card_in_its_thread(emu, settings, relay):
    async with deskhand(settings) as (rt, bridge, _):
        await send(bridge, email("I want a refund for A-1120", subject="Refund", mid="<r1@example.com>"))
        await relay.wait_for(1)
        root = await thread_root(emu)
        card = await thread_post(emu, root, "Refund approval needed")
        [action] = await rt.store.pending_list()
        refuse = emu.block_action(ACME, DAVE, SUPPORT, card["ts"], bk.APPROVE, action.id)
        await emu.push_interactive(ACME, refuse)
        refused = await ephemeral_to(emu, DAVE, "approver")
        click = emu.block_action(ACME, BOB, SUPPORT, card["ts"], bk.APPROVE, action.id)
        await emu.push_interactive(ACME, click)
        await emu.push_interactive(ACME, click)  # a double click
        decided = await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card["ts"])
        await relay.wait_for(2)
        told = await thread_post(emu, root, "Deskhand emailed ada@example.com")
        await ephemeral_to(emu, BOB, "Already approved")
        refunds = rt.shop.count("refunds")

    fields = " ".join(f["text"] for f in card["blocks"][1]["fields"])
    assert "A-1120" in fields and "64.00" in fields and "ada@example.com" in fields
    assert bk.EMAIL_THREAD in section_texts(card["blocks"])[0]
    assert refused["channel"] == SUPPORT
    assert f"Approved by <@{BOB}>" in section_texts(decided.params["blocks"])[-1]
    assert refunds == INITIAL_REFUNDS + 1 and len(relay.messages) == 2
    notice = relay.parsed(1)
    assert notice["In-Reply-To"] == "<r1@example.com>" and "Good news" in notice.get_body(("plain",)).get_content()
    assert "Good news" in told["text"]


async def test_take_over_from_the_thread_then_hand_back_with_the_slash_command(emu, settings, relay):
    async with deskhand(settings) as (rt, bridge, slack):
        await send(bridge, email("Where is order A-1042?"))
        await relay.wait_for(1)
        root = await thread_root(emu)
        session = await rt.store.mirror_session(ACME, SUPPORT, root["ts"])
        await emu.push_interactive(ACME, emu.block_action(ACME, DAVE, SUPPORT, root["ts"], bk.HANDOFF, session))
        card = await thread_post(emu, root, "A conversation needs a human")
        handed_off = (await rt.store.session_get(session))["status"]
        await send(bridge, email("Any news on A-1042?", mid="<q2@example.com>", subject="Re: Where is my lamp?",
                                 in_reply_to="<q1@example.com>"))
        silent = await eventually(lambda: turn_state(rt, "<q2@example.com>"))

        home = json.dumps(await slack.home.view(ACME, BOB))  # an approver sees every handoff
        await emu.push_slash_command(ACME, emu.slash_command(ACME, DAVE, SUPPORT, "handback"))
        refused = await emu.wait_for_call("response_url")  # the one handed-off thread here, but not staff
        link = f"https://{emu.team.domain}.slack.com/archives/{SUPPORT}/p{root['ts'].replace('.', '')}"
        await emu.push_slash_command(ACME, emu.slash_command(ACME, BOB, SUPPORT, f"handback {link}"))
        answer = await emu.wait_for_call("response_url", count=2)
        back = await emu.wait_for_call("chat.update", lambda c: c.params["ts"] == card["ts"])
        status = (await rt.store.session_get(session))["status"]

    assert handed_off == HANDED_OFF and silent == "SILENT"
    assert len(relay.messages) == 1  # taking over does not email the customer; the silent turn neither
    assert "taken over by Dave" in section_texts(card["blocks"])[0]
    assert "Only support teammates" in refused.params["text"]
    assert "Open handoffs (1)" in home and "email from ada@example.com" in home
    assert "Handed back" in answer.params["text"] and status == "active"
    assert f"Handed back to Deskhand by <@{BOB}>" in section_texts(back.params["blocks"])[-1]


async def test_an_email_that_needs_a_person_arrives_handed_off_with_its_attachments_listed(emu, settings, relay):
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = (
        "Ada <ada@example.com>", "support@deskhand.example", "Photo of the damage", "<p1@example.com>")
    msg.add_attachment(b"\x89PNG fake", maintype="image", subtype="png", filename="lamp.png")
    async with deskhand(settings) as (rt, bridge, _):
        await send(bridge, msg.as_bytes())
        root = await thread_root(emu)
        shown = await thread_post(emu, root, "ada@example.com wrote")
        card = await thread_post(emu, root, "A conversation needs a human")
        session = (await rt.store.session_get(await rt.store.mirror_session(ACME, SUPPORT, root["ts"])))
        posted = [m["text"] for m in in_thread(emu, root["ts"])]

    assert "lamp.png (image/png" in str(shown["blocks"]) and "`no_text`" in str(shown["blocks"])
    assert session["status"] == HANDED_OFF and bk.HANDBACK in action_ids(card)
    assert "no_text" in section_texts(card["blocks"])[0]
    assert len(posted) == 2 and not relay.messages  # no separate notice, and no automatic email


async def test_mail_that_arrives_while_slack_fails_is_mirrored_in_order_when_it_is_back(emu, settings, relay):
    emu.fail_next("chat.postMessage", error="fatal_error", times=2)  # not retried by the SDK itself
    async with deskhand(settings) as (rt, bridge, _):
        await send(bridge, email("Where is order A-1042?"))
        await relay.wait_for(1)
        root = await thread_root(emu)
        await thread_post(emu, root, "Deskhand replied")
        roots = [c for c in emu.calls_to("chat.postMessage") if "Email from" in c.params["text"]]

    assert [m["text"].split(":")[0] for m in in_thread(emu, root["ts"])] == [
        "ada@example.com wrote", "🤖 Deskhand replied to ada@example.com by email"]
    assert [c.response.get("ok") for c in roots] == [False, False, True]


async def test_deskhand_run_receives_mail_and_mirrors_it(emu, settings, relay, tmp_path):
    """The real `deskhand run` process: Slack over Socket Mode and the mail bridge together."""
    import os

    from deskhand_process import deskhand_run, mail_port
    from tests.test_mail_bridge_crash import Serve

    env = {**os.environ, "DESKHAND_HOME": str(tmp_path / "run-home"), "DESKHAND_KB_DIR": str(tmp_path / "no-kb"),
           "DESKHAND_TENANTS_FILE": str(settings.tenants_file), "SLACK_BOT_TOKEN": emu.team.bot_token,
           "SLACK_APP_TOKEN": emu.team.app_token, "DESKHAND_SLACK_API_URL": emu.api_url,
           "DESKHAND_SMTP_ENABLED": "1", "DESKHAND_SMTP_PORT": "0", "DESKHAND_RELAY_PORT": str(relay.port),
           "DESKHAND_MAIL_TENANT": ACME}
    err = tmp_path / "run.err"
    async with deskhand_run(env, err) as proc:
        port = await mail_port(proc, err)
        sender = Serve(tmp_path / "run-home", relay.port)
        sender.port = port
        await sender.send(email("Where is order A-1042?"))
        await relay.wait_for(1)
        root = await thread_root(emu)
        await thread_post(emu, root, "Deskhand replied")
    assert relay.parsed(0)["In-Reply-To"] == "<q1@example.com>"


async def test_a_reply_still_being_written_when_a_teammate_takes_over_is_not_sent(emu, settings, relay):
    class Slow:
        """The rules planner, once it is let go: the turn is in flight until then."""

        name = "slow"

        def __init__(self):
            self.started, self.go = asyncio.Event(), asyncio.Event()

        async def plan(self, context):
            self.started.set()
            await self.go.wait()
            return await rules().plan(context)

    planner = Slow()
    async with deskhand(settings, planner=planner) as (rt, bridge, _):
        await send(bridge, email("Where is order A-1042?"))
        root = await thread_root(emu)
        await planner.started.wait()
        reply = emu.thread_reply(ACME, DAVE, SUPPORT, root["ts"], "Hi Ada, I'm on it.")
        await emu.wait_for_ack(await emu.push_event(ACME, reply))
        await relay.wait_for(1)
        planner.go.set()
        state = await eventually(lambda: turn_state(rt, "<q1@example.com>"))
        told = await thread_post(emu, root, "was not sent")

    assert state == "DONE" and len(relay.messages) == 1  # the teammate's email only
    assert "I'm on it." in relay.parsed(0).get_body(("plain",)).get_content()
    assert "Deskhand replied" not in str(in_thread(emu, root["ts"])) and told


async def test_automatic_mail_opens_no_thread_but_shows_in_an_existing_one(emu, settings, relay):
    away = {"Auto-Submitted": "auto-replied"}
    async with deskhand(settings) as (rt, bridge, _):
        await send(bridge, email("I am out of the office.", subject="Out of office", mid="<ooo1@example.com>",
                                 headers=away))
        await send(bridge, email("Where is order A-1042?"))
        root = await thread_root(emu)
        await thread_post(emu, root, "Deskhand replied")
        await send(bridge, email("I am out of the office.", subject="Re: Where is my lamp?", mid="<ooo2@example.com>",
                                 in_reply_to="<q1@example.com>", headers=away))
        shown = await thread_post(emu, root, "out of the office")
        roots = [c for c in emu.calls_to("chat.postMessage") if "Email from" in c.params["text"]]

    assert len(roots) == 1 and "Where is my lamp?" in roots[0].params["text"]
    assert "auto_submitted" in str(shown["blocks"]) and len(relay.messages) == 1


async def test_with_mail_off_a_teammates_reply_in_a_mirror_thread_is_not_emailed_and_they_are_told(
        emu, settings, relay):
    from bot.slack.app import serve

    async with deskhand(settings) as (rt, bridge, _):
        await send(bridge, email("Where is order A-1042?"))
        await relay.wait_for(1)
        root = await thread_root(emu)
        session = await rt.store.mirror_session(ACME, SUPPORT, root["ts"])

    # The next start runs Slack alone: the mirror thread is still there, email is not.
    slack_only = settings.model_copy(update={"smtp_enabled": False})
    async with open_runtime(slack_only, planner=rules()) as rt, serve(rt, options=FAST):
        reply = emu.thread_reply(ACME, DAVE, SUPPORT, root["ts"], "Hi Ada, it ships today.")
        await emu.wait_for_ack(await emu.push_event(ACME, reply))
        told = await ephemeral_to(emu, DAVE, "Email is not connected")
        status = (await rt.store.session_get(session))["status"]

    assert told and status != HANDED_OFF  # nothing taken over, nothing queued
    assert len(relay.messages) == 1
