"""A card number typed by a customer never reaches the database, the logs or the planner."""

from __future__ import annotations

import json
import logging

from bot.brain.base import PlanContext
from bot.brain.rules import RulesPlanner
from bot.contracts import BrainPlan, Channel, MessageEnvelope
from bot.logs import configure_logging, get_logger
from bot.runtime import open_runtime

CARD = "4242 4242 4242 4242"
DIGITS = "4242424242424242"


class RecordingPlanner:
    """Delegates to the rules planner and keeps what it was shown."""

    name = "recording"

    def __init__(self):
        self.inner = RulesPlanner()
        self.seen: list[PlanContext] = []
        self.plans: list[BrainPlan] = []

    async def plan(self, context: PlanContext) -> BrainPlan:
        self.seen.append(context)
        plan = await self.inner.plan(context)
        self.plans.append(plan)
        return plan


async def test_card_number_absent_from_db_logs_and_plan(settings, tmp_path):
    log_file = tmp_path / "deskhand.log"
    configure_logging("DEBUG", log_file=log_file)
    planner = RecordingPlanner()
    async with open_runtime(settings, planner=planner) as rt:
        for text in (f"my card {CARD} was charged twice for A-1017", f"refund to {DIGITS} please, order A-1120"):
            env = MessageEnvelope(tenant_id="T_DEMO", channel=Channel.cli, user_id="U_ADA",
                                  session_id="s-card", text=text)
            get_logger("test").info("incoming", raw=text)  # even a careless log line is redacted
            logging.getLogger("thirdparty").warning("stdlib says %s", text)
            await rt.orchestrator.handle(env)
    for handler in logging.getLogger().handlers:
        handler.flush()

    for path in settings.home.iterdir():
        if path.is_file():
            data = path.read_bytes()
            assert DIGITS.encode() not in data and CARD.encode() not in data, path.name
    logs = log_file.read_text()
    assert "incoming" in logs and "stdlib says" in logs
    assert DIGITS not in logs and CARD not in logs
    for context, plan in zip(planner.seen, planner.plans):
        shown = context.envelope.model_dump_json() + json.dumps(context.history)
        assert DIGITS not in shown and CARD not in shown
        assert DIGITS not in plan.model_dump_json()
    assert "[card]" in planner.seen[0].envelope.text
