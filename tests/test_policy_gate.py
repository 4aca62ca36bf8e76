"""The policy gate (bot/hands/gate.py): one answer to which tools a tenant may use, which
scopes it grants, and who may approve, on every path (planner, executor, Slack, the CLI)."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from bot.brain.base import PlanContext
from bot.brain.rules import RulesPlanner
from bot.cli import app as cli_app
from bot.config import FIXTURES, TenantPolicy, load_settings
from bot.contracts import BrainPlan, Channel, MessageEnvelope, PlanStep
from bot.hands.context import HandContext
from bot.hands.registry import default_registry, hand
from bot.runtime import open_runtime
from bot.slack import blocks as bk
from bot.slack.app import SlackOptions, serve
from slack_emulator import SlackEmulator, Workspace

ACME = "T0ACME0001"
ALICE, BOB, DAVE, ERIN = "U0ALICE01", "U0BOB0001", "U0DAVE001", "U0ERIN001"
SUPPORT = "C0SUPPORT1"
INITIAL_REFUNDS = len(json.loads((FIXTURES / "shop.json").read_text())["refunds"])
FAST = SlackOptions(ping_interval_s=0.2, outbox_retry_s=0.05, progress_interval_s=0.0)


class CrmNote(BaseModel):
    text: str


class CrmNoted(BaseModel):
    noted: bool


@hand(side_effect="write", scopes=("crm:write",))
async def add_crm_note(ctx: HandContext, args: CrmNote) -> CrmNoted:
    """Add a note to the customer's CRM record."""
    return CrmNoted(noted=True)


class Recording:
    """A planner that plans nothing and keeps the tools each turn offered it."""

    name = "recording"

    def __init__(self):
        self.offered: list[set[str]] = []

    async def plan(self, context) -> BrainPlan:
        self.offered.append(context.tool_names())
        return BrainPlan(intent="echo", confidence=1.0, final_answer="Noted.")


def ask(tenant: str, text: str, session: str = "s1") -> MessageEnvelope:
    return MessageEnvelope(tenant_id=tenant, channel=Channel.cli, user_id="U_ADA", session_id=session, text=text)


def hand_context(rt, tenant: str) -> HandContext:
    return HandContext(tenant_id=tenant, session_id="s1", user_id="U_ADA", channel="cli", correlation_id="c1",
                       policy=rt.settings.policy(tenant), backends=rt.backends_for(tenant), store=rt.store)


# ------------------------------------------------------------------ tools and scopes


def test_the_default_scopes_grant_every_built_in_tool():
    declared = {spec.name: set(spec.scopes) for spec in default_registry().specs()}
    assert all(declared.values()), declared  # every built-in hand says what it needs
    assert set().union(*declared.values()) <= set(TenantPolicy().scopes)


async def test_a_tool_whose_scope_is_not_granted_is_refused_and_never_offered(tmp_path):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text("tenants:\n  T_PLAIN: {name: Plain}\n"
                       "  T_CRM: {name: Crm, scopes: [kb:read, orders:read, tickets:write, refunds:write,"
                       " handoff:write, crm:write]}\n")
    registry = default_registry()
    registry.register(add_crm_note)
    planner = Recording()
    settings = load_settings(home=tmp_path / "home", tenants_file=tenants)
    async with open_runtime(settings, planner=planner, registry=registry) as rt:
        await rt.orchestrator.handle(ask("T_PLAIN", "note this"))
        await rt.orchestrator.handle(ask("T_CRM", "note this"))
        step = PlanStep(tool="add_crm_note", args={"text": "called back"})
        refused = await rt.executor.run(step, hand_context(rt, "T_PLAIN"))
        granted = await rt.executor.run(step, hand_context(rt, "T_CRM"))

    plain, crm = planner.offered
    assert "add_crm_note" not in plain and "search_kb" in plain
    assert "add_crm_note" in crm
    assert refused.error_kind == "not_allowed" and "crm:write" in refused.error
    assert granted.ok and granted.data == {"noted": True}


async def test_a_tenant_that_withholds_a_built_in_scope_loses_that_tool_everywhere(tmp_path):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text("tenants:\n  T_KB: {name: KB only, scopes: [kb:read, tickets:write, handoff:write]}\n")
    settings = load_settings(home=tmp_path / "home", tenants_file=tenants)
    policy = settings.policy("T_KB")
    # The rules planner re-checks what it is offered: even offered every tool, it plans no lookup.
    plan = await RulesPlanner().plan(PlanContext(envelope=ask("T_KB", "where is order A-1042?"), policy=policy,
                                                 tools=default_registry().specs()))
    assert "get_order_status" not in [s.tool for s in plan.steps]
    async with open_runtime(settings, planner=RulesPlanner()) as rt:
        await rt.orchestrator.handle(ask("T_KB", "where is order A-1042?"))
        ran = [row["tool"] for row in rt.store.sync.db["tool_calls"].rows]
        lookup = await rt.executor.run(PlanStep(tool="get_order_status", args={"order_id": "A-1042"}),
                                       hand_context(rt, "T_KB"))
    assert "get_order_status" not in ran
    assert lookup.error_kind == "not_allowed" and "orders:read" in lookup.error


# ------------------------------------------------------------------ approvers on every path

TENANTS = f"""
tenants:
  {ACME}:
    name: Acme
    support_channel: {SUPPORT}
    approvers: [{BOB}]
    approver_usergroup: S0APPROVE1
"""


@pytest.fixture
async def emu():
    acme = Workspace(ACME, name="Acme")
    acme.add_user(ALICE, "alice", email="ada@example.com")
    for user, name in ((BOB, "bob"), (DAVE, "dave"), (ERIN, "erin")):
        acme.add_user(user, name)
    acme.add_channel(SUPPORT, "support", [BOB, DAVE, ERIN])
    acme.add_usergroup("S0APPROVE1", [ERIN])
    async with SlackEmulator([acme]) as emu:
        yield emu


@pytest.fixture
def slack_settings(tmp_path, emu, monkeypatch):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(TENANTS)
    # The CLI reads the same data directory and tenants file from the environment.
    monkeypatch.setenv("DESKHAND_TENANTS_FILE", str(tenants))
    return load_settings(home=tmp_path / "home", slack_bot_token=emu.team.bot_token,
                         slack_app_token=emu.team.app_token, slack_api_url=emu.api_url, tenants_file=tenants)


def cli(*args: str):
    """`deskhand …` as an operator runs it: its own event loop, its own runtime, no Slack."""
    return asyncio.to_thread(CliRunner().invoke, cli_app, list(args))


async def test_a_user_group_approver_approves_from_the_cli_with_the_membership_slack_last_returned(
        emu, slack_settings):
    async with open_runtime(slack_settings, planner=RulesPlanner()) as rt:
        async with serve(rt, options=FAST):
            await emu.push_event(ACME, emu.dm(ACME, ALICE, "I want a refund for A-1120"))
            card = await emu.wait_for_call("chat.postMessage", lambda c: c.params["channel"] == SUPPORT)
            action_id = next(e["value"] for b in card.params["blocks"] if b["type"] == "actions"
                             for e in b["elements"])
            # Slack has not been asked about the group yet: the CLI cannot know Erin is in it.
            unknown = await cli("approve", action_id, "--as", ERIN)
            # Dave's click is refused, and asking Slack taught the gate the group's members.
            await emu.push_interactive(ACME, emu.block_action(ACME, DAVE, SUPPORT, card.response["ts"],
                                                              bk.APPROVE, action_id, text="Approve"))
            await emu.wait_for(lambda e: next((m for m in e.workspace(ACME).ephemerals
                                               if m["user"] == DAVE and "Only approvers" in m["text"]), None))
            asked_slack = len(emu.calls_to("usergroups.users.list"))
    not_member = await cli("approve", action_id, "--as", DAVE)
    approved = await cli("approve", action_id, "--as", ERIN)

    assert unknown.exit_code == 1 and "Only approvers" in unknown.output
    assert not_member.exit_code == 1 and "Only approvers" in not_member.output
    assert approved.exit_code == 0 and f"Approved by {ERIN}" in approved.output, approved.output
    assert asked_slack == len(emu.calls_to("usergroups.users.list")) == 1  # the CLI never asks Slack
    async with open_runtime(slack_settings, planner=RulesPlanner()) as rt:
        action = await rt.store.pending_get(action_id)
        assert (action.status, action.decided_by) == ("approved", ERIN)
        assert rt.shop.count("refunds") == INITIAL_REFUNDS + 1
