"""The policy gate: which tools a tenant may use, and who may approve. Every path asks here.

Tools. A tool is allowed for a tenant when its policy does not forbid it (`forbidden_tools`),
its allow-list, if it has one, names it (`allowed_tools`), and the tenant grants every scope
the tool declares (`@hand(scopes=...)` against `TenantPolicy.scopes`). `allowed_tools` is what
planners are offered (the orchestrator's turns and abuse plans, `deskhand plan`, both
replays), so the model never sees a tool's schema the tenant may not use; each planner checks
its own plan again (`PlanContext.allowed_tool_names`); and the executor refuses anything else
before it runs (`check_tool`, a `NotAllowed`), so a tool a model names anyway never runs.

Channels. No tool rule depends on the channel a message came from. The email rule of
`get_order_status` (over email an order answers only to the address that placed it) is about
whose data it is, not which tools may run, so it stays in that hand.

Approvers are a tenant's configured user IDs plus the members of its `approver_usergroup`,
on every path: a Slack click, the App Home tab, a handback, `deskhand approve`. The gate asks
a `Membership` port for the group's members, which is Slack's Directory while Slack is
connected (bot/slack/app.py sets it), and keeps every answer in the store
(`usergroup_members`). Without a port, as in the CLI, which has no Slack connection, it
uses the membership Slack returned last. Why this rather than a configured list of members:
the group is managed in Slack, so a copy in the tenants file would drift from it and be one
more thing to keep up to date, while the stored copy is exactly what Slack said last, renewed
whenever Slack is asked (an approval click, the App Home tab, a handback). A copy some hours
old is good enough for the CLI, where `--as` is the operator's word and the operator already
holds the data directory. Where Slack can be asked, a failed lookup still counts as "no"
rather than falling back to the stored copy, so someone just removed from the group cannot
approve on an old answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from bot.config import TenantPolicy
from bot.hands.errors import NotAllowed
from bot.hands.registry import ToolRegistry, ToolSpec


def tool_refusal(policy: TenantPolicy, spec: ToolSpec) -> str | None:
    """Why this tenant may not use this tool, or None when it may."""
    if spec.name in policy.forbidden_tools:
        return f"tool {spec.name!r} is forbidden for this tenant"
    if policy.allowed_tools is not None and spec.name not in policy.allowed_tools:
        return f"tool {spec.name!r} is not in this tenant's allowed tools"
    missing = [scope for scope in spec.scopes if scope not in policy.scopes]
    if missing:
        return f"tool {spec.name!r} needs scope {', '.join(missing)}, which this tenant does not grant"
    return None


def allowed_tools(policy: TenantPolicy, specs: Iterable[ToolSpec]) -> list[ToolSpec]:
    """The tools of `specs` this tenant may use, in order: what a planner is offered."""
    return [spec for spec in specs if tool_refusal(policy, spec) is None]


def check_tool(policy: TenantPolicy, spec: ToolSpec) -> None:
    """Raise `NotAllowed` unless this tenant may use this tool (the executor, before any call)."""
    refusal = tool_refusal(policy, spec)
    if refusal is not None:
        raise NotAllowed(refusal)


class Membership(Protocol):
    """Who is in a user group right now (bot/slack/approvers.py `Directory`)."""

    async def group_members(self, tenant_id: str, usergroup: str) -> set[str] | None:
        """The group's members, or None when they cannot be asked (not connected, an error)."""
        ...


class PolicyGate:
    """One tenant-policy answer for the runtime and every surface (see the module docstring)."""

    def __init__(self, policy_for: Callable[[str], TenantPolicy], registry: ToolRegistry, store,
                 membership: Membership | None = None):
        self.policy_for = policy_for  # tenant_id -> TenantPolicy (Settings.policy)
        self.registry = registry
        self.store = store  # bot.store.AsyncStore: the memberships Slack last returned
        self.membership = membership

    def tools(self, tenant_id: str) -> list[ToolSpec]:
        """The registered tools this tenant may use."""
        return allowed_tools(self.policy_for(tenant_id), self.registry.specs())

    async def is_approver(self, tenant_id: str, user_id: str) -> bool:
        policy = self.policy_for(tenant_id)
        if user_id in policy.approvers:
            return True
        if not policy.approver_usergroup:
            return False
        return user_id in await self.approver_group(tenant_id, policy.approver_usergroup)

    def is_admin(self, tenant_id: str, user_id: str) -> bool:
        return user_id in self.policy_for(tenant_id).admins

    async def is_staff(self, tenant_id: str, user_id: str) -> bool:
        """Approvers and admins: who may hand a conversation back and see every request."""
        return self.is_admin(tenant_id, user_id) or await self.is_approver(tenant_id, user_id)

    async def approver_group(self, tenant_id: str, usergroup: str) -> set[str]:
        if self.membership is None:
            return await self.store.usergroup_members(tenant_id, usergroup) or set()
        members = await self.membership.group_members(tenant_id, usergroup)
        if members is None:
            return set()  # Slack could not say: "no", never an older answer (see above)
        await self.store.usergroup_members_save(tenant_id, usergroup, sorted(members))
        return members
