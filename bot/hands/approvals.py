"""Deciding a pending action: who may, and making sure it runs at most once.

Safe by construction:
- the requester can never decide their own request;
- only approvers may decide (the runtime supplies the policy gate's `is_approver`,
  bot/hands/gate.py: configured IDs and user-group members, on every surface);
- the move out of `pending` is one conditional UPDATE, so of two concurrent clicks exactly
  one wins; the loser is told who decided;
- the execution itself carries the action's idempotency key, so a redelivered approval
  cannot refund twice either;
- an approval whose execution fails puts the action back to `pending` (one conditional
  UPDATE again): it can be approved again once the system answers, and the same key keeps
  the refund to one, or rejected. The decider is told why, by the error's type
  (bot/error_replies.py).
Every attempt, refused or not, is written to `audit_log`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.contracts import PendingAction, ToolResult
from bot.error_replies import teammate_reply
from bot.hands.context import HandContext


@dataclass
class Decision:
    ok: bool
    status: str  # approved | rejected | refused | already_decided | expired | not_found | failed
    message: str
    action: PendingAction | None = None
    result: ToolResult | None = None


async def decide(
    action_id: str,
    decider: str,
    approve: bool,
    *,
    store,
    executor,
    make_context: Callable[[PendingAction], HandContext],
    is_approver: Callable[[str, str], Awaitable[bool]],
) -> Decision:
    action = await store.pending_get(action_id)
    verb = "approve" if approve else "reject"
    if action is None:
        return Decision(False, "not_found", f"There is no pending action {action_id}.")
    if decider == action.requested_by:
        await store.audit(action.tenant_id, decider, f"{verb}_refused_self", action_id)
        return Decision(False, "refused", "You can't decide on your own request; another teammate has to.", action)
    if not await is_approver(action.tenant_id, decider):
        await store.audit(action.tenant_id, decider, f"{verb}_refused_not_approver", action_id)
        return Decision(False, "refused", "Only approvers can decide on refunds.", action)
    status = "approved" if approve else "rejected"
    if not await store.pending_decide(action_id, status, decider):
        current = await store.pending_get(action_id)
        if current.status == "expired":  # its time ran out first (bot/timers.py): nothing runs
            await store.audit(action.tenant_id, decider, f"{verb}_after_expiry", action_id)
            return Decision(False, "expired", "This refund request expired before anyone decided, so no refund "
                            "was made. The customer was told and can ask again.", current)
        await store.audit(action.tenant_id, decider, f"{verb}_duplicate", action_id)
        return Decision(False, "already_decided",
                        f"Already {current.status} by {current.decided_by}.", current)
    await store.audit(action.tenant_id, decider, status, action_id, {"tool": action.tool, "args": action.args})
    action = await store.pending_get(action_id)
    if not approve:
        return Decision(True, "rejected", f"Rejected by {decider}.", action)
    result = await executor.run_approved(action, make_context(action))
    await store.pending_set_result(action_id, result.model_dump(mode="json"))
    await store.audit(action.tenant_id, decider, "executed" if result.ok else "execution_failed", action_id,
                      {"ok": result.ok, "error": result.error})
    if not result.ok:
        await store.pending_reopen(action_id)
        return Decision(False, "failed", f"It didn't go through, and the request is still open. "
                        f"{teammate_reply(result)}", await store.pending_get(action_id), result)
    return Decision(True, "approved", f"Approved by {decider}.", action, result)
