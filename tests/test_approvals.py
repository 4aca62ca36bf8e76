"""Refund approvals are safe by construction: approvers only, never your own, once."""

from __future__ import annotations

import asyncio

from bot.contracts import Channel, MessageEnvelope


async def propose_refund(rt, user="U_ADA", order="A-1120", session="s-refund"):
    env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id=user, session_id=session,
                          text=f"I want a refund for {order}")
    outcome = await rt.orchestrator.handle(env)
    assert outcome.state == "AWAITING_APPROVAL", outcome.reply
    return outcome.pending_action_id


async def test_a_proposed_refund_waits_for_approval(runtime):
    action_id = await propose_refund(runtime)
    action = await runtime.store.pending_get(action_id)
    assert action.status == "pending" and action.args["amount"] == 64.0
    assert runtime.shop.count("refunds") == 2  # only the seeded ones: nothing ran yet


async def test_an_approver_approves_and_it_runs_once_and_the_customer_is_told(runtime):
    action_id = await propose_refund(runtime)
    decision = await runtime.decide(action_id, "U_LEAD", True)
    assert decision.status == "approved" and decision.result.ok
    assert runtime.shop.count("refunds") == 3
    last = (await runtime.store.history("s-refund", 10))[-1]
    assert "approved" in last["text"] and "64.00" in last["text"]
    actions = [e["action"] for e in await runtime.store.audit_entries(action_id)]
    assert actions == ["propose", "approved", "executed"]


async def test_a_double_approve_runs_the_refund_once(runtime):
    action_id = await propose_refund(runtime)
    first, second = await asyncio.gather(
        runtime.decide(action_id, "U_LEAD", True), runtime.decide(action_id, "U_SAM", True))
    assert sorted([first.status, second.status]) == ["already_decided", "approved"]
    again = await runtime.decide(action_id, "U_LEAD", True)
    assert again.status == "already_decided"
    assert runtime.shop.count("refunds") == 3


async def test_the_requester_cannot_approve_their_own_refund(runtime):
    # U_LEAD is an approver, but it is their own request.
    action_id = await propose_refund(runtime, user="U_LEAD")
    decision = await runtime.decide(action_id, "U_LEAD", True)
    assert decision.status == "refused"
    assert (await runtime.store.pending_get(action_id)).status == "pending"
    assert runtime.shop.count("refunds") == 2
    assert "approve_refused_self" in [e["action"] for e in await runtime.store.audit_entries(action_id)]


async def test_a_non_approver_is_refused(runtime):
    action_id = await propose_refund(runtime)
    decision = await runtime.decide(action_id, "U_RANDOM", True)
    assert decision.status == "refused"
    assert runtime.shop.count("refunds") == 2


async def test_a_rejection_runs_nothing_and_tells_the_customer(runtime):
    action_id = await propose_refund(runtime)
    decision = await runtime.decide(action_id, "U_LEAD", False)
    assert decision.status == "rejected"
    assert runtime.shop.count("refunds") == 2
    assert "couldn't approve" in (await runtime.store.history("s-refund", 10))[-1]["text"]


async def test_asking_twice_in_a_conversation_proposes_one_refund(runtime):
    first = await propose_refund(runtime)
    second = await propose_refund(runtime)
    assert first == second
    assert len(await runtime.store.pending_list("T_DEMO")) == 1


async def test_a_refund_larger_than_the_order_is_not_proposed(runtime):
    env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U_ADA", session_id="s2",
                          text="I want a refund of $500.00 for A-1120")
    outcome = await runtime.orchestrator.handle(env)
    assert outcome.pending_action_id is None
    assert await runtime.store.pending_list("T_DEMO") == []
    assert outcome.offer_human
