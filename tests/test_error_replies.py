"""What a customer is told when a tool fails (bot/error_replies.py): chosen by the error's
type, most specific class first, and naming the system that really failed. The turns run
through the real runtime against a real HTTP shop whose routes hang or fail."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope, PlanStep
from bot.error_replies import CUSTOMER_REPLIES, TEAMMATE_REPLIES, customer_reply, handler_for, reply_for
from bot.hands.context import HandContext
from bot.hands.errors import (
    CircuitOpen, ClientError, HandError, KBUnavailable, NotFound, NotRefundable, ToolTimeout, TransientError,
    error_class, error_from_result, kinds_under,
)
from bot.runtime import open_runtime
from tests.shop_server import tenants_yaml

TENANT = "T_HTTP"


@pytest.fixture
async def rt(tmp_path, shop):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(tenants_yaml(shop.url))
    settings = load_settings(home=tmp_path / "home", tenants_file=tenants, tool_timeout_s=0.3,
                             rate_per_second=1000)
    async with open_runtime(settings) as runtime:
        runtime.executor.backoff_s = 0.01
        yield runtime


def ask(text: str, n: int = 1) -> MessageEnvelope:
    return MessageEnvelope(id=f"m{n}", tenant_id=TENANT, channel=Channel.cli, user_id="U1",
                           session_id=f"cli:errors-{n}", text=text)


def ctx(rt) -> HandContext:
    return HandContext(tenant_id=TENANT, session_id="s1", user_id="U1", channel="cli", correlation_id="c1",
                       policy=rt.settings.policy(TENANT), backends=rt.backends_for(TENANT), store=rt.store)


# -- the lookup ---------------------------------------------------------------------------------
class SlowWarehouse(ToolTimeout):
    """An error a team's own tool might raise: not listed anywhere, worded by its ancestors."""


def test_the_first_class_in_the_mro_with_a_handler_wins():
    handlers = {HandError: lambda e: "any", TransientError: lambda e: "transient",
                ToolTimeout: lambda e: "timeout"}
    assert reply_for(ToolTimeout("x"), handlers) == "timeout"
    assert reply_for(SlowWarehouse("x"), handlers) == "timeout"  # its nearest handled ancestor
    assert reply_for(TransientError("x"), handlers) == "transient"
    assert reply_for(CircuitOpen("x"), handlers) == "any"
    assert reply_for(NotFound("x"), handlers) == "any"
    assert handler_for(ValueError, handlers) is None  # not a HandError: no handler at all


def test_every_hand_error_has_a_customer_reply_and_a_teammates_advice_by_its_nearest_class():
    for kind in kinds_under(HandError):
        assert reply_for(error_class(kind)("x"), CUSTOMER_REPLIES)
    assert handler_for(ToolTimeout, TEAMMATE_REPLIES) is TEAMMATE_REPLIES[TransientError]
    assert handler_for(NotFound, TEAMMATE_REPLIES) is TEAMMATE_REPLIES[ClientError]
    assert handler_for(KBUnavailable, TEAMMATE_REPLIES) is TEAMMATE_REPLIES[HandError]
    assert handler_for(ValueError, TEAMMATE_REPLIES) is TEAMMATE_REPLIES[Exception]
    assert "try again" in reply_for(ToolTimeout("x", system="refunds"), TEAMMATE_REPLIES)
    assert "won't help" in reply_for(NotRefundable("x", system="refunds"), TEAMMATE_REPLIES)


def test_each_reply_names_the_system_the_error_came_from():
    assert "ticket system" in reply_for(ToolTimeout("x", tool="create_ticket", system="tickets"))
    assert "order system" in reply_for(ToolTimeout("x", tool="get_order_status", system="orders"))
    assert "refund system" in reply_for(TransientError("x", tool="process_refund", system="refunds"))
    assert "help centre" in reply_for(KBUnavailable("x", tool="search_kb", system="kb"))
    unnamed = reply_for(ToolTimeout("x"))
    assert "order" not in unnamed and "ticket" not in unnamed  # nothing invented when it is unknown
    assert reply_for(ClientError("x", system="refunds")) != reply_for(NotFound("x", system="orders"))


# -- the executor says where an error came from -----------------------------------------------
async def test_the_executor_attaches_the_tool_and_its_system(rt, shop):
    shop.script("ticket", "hang")
    ticket = await rt.executor.run(PlanStep(tool="create_ticket", args={"subject": "Broken lamp"}), ctx(rt))
    shop.script("order", 503)
    order = await rt.executor.run(PlanStep(tool="get_order_status", args={"order_id": "A-2001"}), ctx(rt))
    # A refund proposal first reads the order: a failure there is the order system's.
    proposal = await rt.executor.run(PlanStep(tool="process_refund", args={"order_id": "A-2001"}), ctx(rt))
    bad = await rt.executor.run(PlanStep(tool="create_ticket", args={"subject": ""}), ctx(rt))

    assert (ticket.error_kind, ticket.error_system) == ("timeout", "tickets")
    assert (order.error_kind, order.error_system) == ("transient", "orders")
    assert (proposal.error_kind, proposal.error_system) == ("transient", "orders")
    assert (bad.error_kind, bad.error_system) == ("invalid_args", "tickets")
    rebuilt = error_from_result(ticket)
    assert type(rebuilt) is ToolTimeout and (rebuilt.tool, rebuilt.system) == ("create_ticket", "tickets")
    assert "ticket system" in customer_reply(ticket)


# -- through a real turn ------------------------------------------------------------------------
async def test_a_ticket_system_timeout_is_told_as_the_ticket_system(rt, shop):
    shop.script("ticket", "hang")
    outcome = await rt.orchestrator.handle(ask("I want to make a complaint, my lamp arrived broken"))

    assert [r.error_kind for r in outcome.results if r.tool == "create_ticket"] == ["timeout"]
    assert "ticket system" in outcome.reply, outcome.reply
    assert "order system" not in outcome.reply


async def test_an_order_system_timeout_is_told_as_the_order_system(rt, shop):
    shop.script("order", "hang")
    outcome = await rt.orchestrator.handle(ask("where is my order A-2001?", n=2))

    assert [r.error_kind for r in outcome.results] == ["timeout"]
    assert "order system" in outcome.reply and "ticket system" not in outcome.reply


async def test_a_refund_whose_order_lookup_fails_names_the_order_system(rt, shop):
    shop.script("order", 503)
    outcome = await rt.orchestrator.handle(ask("I want a refund for A-2001", n=3))

    assert "order system" in outcome.reply and "refund system" not in outcome.reply, outcome.reply
    assert "nothing left to refund" not in outcome.reply  # a failing system is not a refused refund


async def test_a_failed_turn_whose_ticket_also_fails_does_not_claim_a_ticket(rt, shop):
    shop.script("ticket", 503)

    class Broken:
        name = "broken"

        async def plan(self, context):
            raise RuntimeError("planner bug")

    rt.orchestrator.planner = Broken()
    outcome = await rt.orchestrator.handle(ask("hello there", n=4))

    assert outcome.state == "FAILED"
    assert "opened a ticket" not in outcome.reply and "ticket system" in outcome.reply, outcome.reply
