"""PII kept from the model on the real `deskhand run` process (DESKHAND_PLANNER=llm), with
the Slack emulator and the scripted OpenAI-compatible server."""

from __future__ import annotations

import pytest

from bot.slack import blocks as bk
from deskhand_process import deskhand_run, run_env
from openai_server import OpenAIServer, Reply, plan_reply, text_reply
from slack_emulator import SlackEmulator, Workspace
from test_llm_planner import Router, plan_of

ACME, ALICE = "T0ACME0001", "U0ALICE01"
EMAIL, NAME, PHONE, IBAN = "ada@example.com", "Maria Garcia", "+44 20 7946 0958", "GB82 WEST 1234 5698 7654 32"
ADDRESS = "221B Baker Street"


class AnswersPings(Router):
    """`deskhand run` probes the endpoint at start (bot/check.py); that call plans nothing."""

    def __call__(self, body: dict, index: int) -> Reply:
        if body["messages"] == [{"role": "user", "content": "ping"}]:
            return text_reply("pong")
        return super().__call__(body, index)


@pytest.fixture
async def emu():
    acme = Workspace(ACME, name="Acme")
    acme.add_user(ALICE, "alice", email=EMAIL)
    async with SlackEmulator([acme]) as emu:
        yield emu


async def test_deskhand_run_keeps_pii_from_the_model_and_shows_the_customer_real_values(emu, tmp_path):
    lookup = plan_of("track_order", 0.9, [{"tool": "get_order_status", "args": {"email": "[email_1]"}}])
    reply = "Thanks [name_1]: the orders of [email_1] are listed below; we'll ring [phone_1] if anything changes."
    async with OpenAIServer(AnswersPings(plans=[plan_reply(lookup)], replies=[plan_reply({"text": reply})])) as model:
        env = run_env(emu, tmp_path / "home", DESKHAND_PLANNER="llm", DESKHAND_OPENAI_BASE_URL=model.base_url,
                      DESKHAND_OPENAI_API_KEY="test-key")
        async with deskhand_run(env, tmp_path / "run.err"):
            text = (f"Hi, my name is {NAME}. Where are my orders? I'm {EMAIL}, phone {PHONE}, "
                    f"I live at {ADDRESS}; refunds to {IBAN}. It's about A-1042 from 2026-11-16.")
            dm = emu.dm(ACME, ALICE, text)
            await emu.push_event(ACME, dm)
            update = await emu.wait_for_call("chat.update", lambda c: c.params["channel"] == dm["channel"]
                                             and c.params["text"] != bk.PLACEHOLDER, timeout=60)
        sent = model.bodies_text()

    assert len(model.requests) == 3  # the start-up probe, the plan and the draft
    for value in [EMAIL, NAME, "7946", ADDRESS, IBAN, IBAN.replace(" ", "")]:
        assert value not in sent, value
    said = "\n".join(str(m["content"]) for body in model.requests for m in body["messages"] if m["role"] == "user")
    assert "[email_1]" in said and "[iban_1]" in said and "A-1042" in said and "2026-11-16" in said
    shown = update.params["text"]
    assert shown.startswith(f"Thanks {NAME}: the orders of {EMAIL} are listed below") and PHONE in shown
    assert "[" not in shown
