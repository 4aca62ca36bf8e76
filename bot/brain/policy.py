"""The default intent → plan mapping (DESIGN §4). A tenant's `intent_plans` overrides it."""

from __future__ import annotations

ORDER_LOOKUP = {"track_order", "track_refund"}
REFUND = {"get_refund"}
TICKET = {"cancel_order", "change_order", "change_shipping_address", "payment_issue",
          "complaint", "review", "delete_account"}
HUMAN = {"contact_human_agent", "contact_customer_service"}
KB = {"check_refund_policy", "check_cancellation_fee", "delivery_options", "delivery_period",
      "check_payment_methods", "check_invoice", "get_invoice", "place_order",
      "set_up_shipping_address", "create_account", "edit_account", "recover_password",
      "registration_problems", "switch_account", "newsletter_subscription"}
SMALL_TALK = {"greeting", "thanks"}
OUT_OF_SCOPE = "out_of_scope"

# Intents that carry an order and need its ID before a tool can run.
NEEDS_ORDER_ID = ORDER_LOOKUP | REFUND | {"cancel_order", "change_order", "change_shipping_address"}

DEFAULT_PLANS: dict[str, list[str]] = {
    **{i: ["get_order_status"] for i in ORDER_LOOKUP},
    **{i: ["process_refund"] for i in REFUND},
    **{i: ["create_ticket", "search_kb"] for i in TICKET},
    **{i: ["escalate_to_human"] for i in HUMAN},
    **{i: ["search_kb"] for i in KB},
    "greeting": [], "thanks": [], OUT_OF_SCOPE: [],
}

ALL_INTENTS = sorted(DEFAULT_PLANS)

PRIORITY = {"complaint": "high", "payment_issue": "high", "delete_account": "normal"}

TICKET_SUBJECTS = {
    "cancel_order": "Cancel order", "change_order": "Change order",
    "change_shipping_address": "Change shipping address", "payment_issue": "Payment issue",
    "complaint": "Complaint", "review": "Customer feedback", "delete_account": "Delete account",
}


def tools_for(intent: str, overrides: dict[str, list[str]] | None = None) -> list[str]:
    if overrides and intent in overrides:
        return list(overrides[intent])
    return list(DEFAULT_PLANS.get(intent, []))
