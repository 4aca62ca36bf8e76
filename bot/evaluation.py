"""Golden-conversation evaluation (`deskhand eval`).

Each file in `fixtures/golden/` is a YAML conversation:

    name: track an order after being asked for its number
    user: U_ADA                 # optional; default U_EVAL
    email: ada@example.com      # optional verified email
    channel: cli                # optional
    turns:
      - user: where is my order?
        expect: {intent: track_order, tools: [], state: DONE, clarify: true}
      - user: A-1042
        expect: {intent: track_order, tools: [get_order_status], reply_contains: [shipped]}
      - user: how long does delivery take
        expect: {intent: delivery_period, reply_contains: [business days], cites: shipping/delivery-times}
      - approve: {as: U_LEAD}           # decide the conversation's last pending action
        expect: {status: approved, notice_contains: [approved]}

`reply_contains` and `notice_contains` ignore case, whitespace and markup (Markdown and Slack
mrkdwn, bot/answer_scoring.py `plain`); `cites` names the document the reply must cite.

Every expectation is checked; the report gives intent accuracy, tool accuracy, citation
coverage, and the handoff and clarification rates. `run_all` adds the KB question set
(bot/answer_eval.py): answer correctness and citation precision and recall.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bot.answer_eval import KB_QUESTIONS, AnswerReport, cited_doc_ids, contains, run_questions
from bot.config import FIXTURES
from bot.contracts import Channel, MessageEnvelope

GOLDEN_DIR = FIXTURES / "golden"


@dataclass
class EvalReport:
    conversations: int = 0
    turns: int = 0
    intent_checked: int = 0
    intent_correct: int = 0
    tools_checked: int = 0
    tools_correct: int = 0
    citations_checked: int = 0
    citations_ok: int = 0
    handoffs: int = 0
    clarifications: int = 0
    failures: list[str] = field(default_factory=list)
    failed_turns: set[str] = field(default_factory=set)

    def fail(self, where: str, message: str) -> None:
        self.failed_turns.add(where)
        self.failures.append(f"{where}: {message}")

    def summary(self) -> dict:
        def rate(a: int, b: int) -> float:
            return round(a / b, 4) if b else 1.0
        return {
            "conversations": self.conversations, "turns": self.turns,
            "intent_accuracy": rate(self.intent_correct, self.intent_checked),
            "tool_accuracy": rate(self.tools_correct, self.tools_checked),
            "citation_coverage": rate(self.citations_ok, self.citations_checked),
            "handoff_rate": rate(self.handoffs, self.turns),
            "clarification_rate": rate(self.clarifications, self.turns),
            "expectations_failed": len(self.failures),
            "pass_rate": rate(self.turns - len(self.failed_turns), self.turns),
        }


def load_golden(directory: Path = GOLDEN_DIR) -> list[dict]:
    convs = []
    for path in sorted(directory.glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        for conv in data if isinstance(data, list) else [data]:
            conv.setdefault("name", path.stem)
            conv["_file"] = path.name
            convs.append(conv)
    return convs


async def run_conversation(rt, conv: dict, report: EvalReport) -> None:
    tenant = conv.get("tenant", rt.settings.default_tenant)
    user = conv.get("user", "U_EVAL")
    session = f"eval:{uuid.uuid4().hex[:10]}"
    metadata = {"verified_email": conv["email"]} if conv.get("email") else {}
    channel = Channel(conv.get("channel", "cli"))
    last_pending: str | None = None
    for i, turn in enumerate(conv["turns"], 1):
        where = f"{conv['_file']} [{conv['name']}] turn {i}"
        expect = turn.get("expect", {})
        report.turns += 1
        if "approve" in turn or "reject" in turn:
            decision_args = turn.get("approve") or turn.get("reject")
            if last_pending is None:
                report.fail(where, "no pending action to decide")
                continue
            decision = await rt.decide(last_pending, decision_args["as"], "approve" in turn)
            _check(report, where, "status", expect.get("status"), decision.status)
            history = await rt.store.history(session, 50)
            notice = history[-1]["text"] if history else ""
            for needle in expect.get("notice_contains", []):
                if not contains(notice, str(needle)):
                    report.fail(where, f"notice lacks {needle!r}: {notice!r}")
            continue
        envelope = MessageEnvelope(tenant_id=tenant, channel=channel, user_id=user, session_id=session,
                                   text=turn["user"], metadata=metadata)
        outcome = await rt.orchestrator.handle(envelope)
        plan = outcome.plan
        tools = [r.tool for r in outcome.results]
        if outcome.pending_action_id:
            last_pending = outcome.pending_action_id
        if outcome.state == "HANDED_OFF":
            report.handoffs += 1
        if plan and plan.needs_clarification:
            report.clarifications += 1
        if "intent" in expect:
            report.intent_checked += 1
            report.intent_correct += _check(report, where, "intent", expect["intent"], plan.intent if plan else None)
        if "tools" in expect:
            report.tools_checked += 1
            report.tools_correct += _check(report, where, "tools", sorted(expect["tools"]), sorted(tools))
        if "state" in expect:
            _check(report, where, "state", expect["state"], outcome.state)
        if "clarify" in expect:
            _check(report, where, "clarify", expect["clarify"], bool(plan and plan.needs_clarification))
        if "offer_human" in expect:
            _check(report, where, "offer_human", expect["offer_human"], outcome.offer_human)
        if "citations" in expect:
            report.citations_checked += 1
            returned = {h["citation"]["doc_id"] for r in outcome.results if r.tool == "search_kb" and r.ok
                        for h in (r.data or {}).get("hits", [])}
            valid = bool(outcome.citations) and all(c.doc_id in returned for c in outcome.citations)
            report.citations_ok += _check(report, where, "citations", expect["citations"], valid)
        if "cites" in expect:
            cited = cited_doc_ids(outcome.citations)
            if expect["cites"] not in cited:
                report.fail(where, f"cites {cited or 'nothing'}, expected {expect['cites']!r}")
        for needle in expect.get("reply_contains", []):
            if not contains(outcome.reply, str(needle)):
                report.fail(where, f"reply lacks {needle!r}: {outcome.reply!r}")
        for needle in expect.get("reply_excludes", []):
            if contains(outcome.reply, str(needle)):
                report.fail(where, f"reply has {needle!r}: {outcome.reply!r}")
        if expect.get("silent") is not None:
            _check(report, where, "silent", expect["silent"], outcome.reply is None)


def _check(report: EvalReport, where: str, what: str, expected, actual) -> bool:
    if expected is None or expected == actual:
        return True
    report.fail(where, f"{what} expected {expected!r}, got {actual!r}")
    return False


async def run_eval(rt, directory: Path = GOLDEN_DIR) -> EvalReport:
    report = EvalReport()
    await rt.ensure_kb(rt.settings.default_tenant)
    for conv in load_golden(directory):
        report.conversations += 1
        await run_conversation(rt, conv, report)
    return report


async def run_all(rt, directory: Path = GOLDEN_DIR,
                  questions: Path = KB_QUESTIONS) -> tuple[EvalReport, AnswerReport]:
    """The golden conversations, then the KB question set, on the same runtime."""
    golden = await run_eval(rt, directory)
    return golden, await run_questions(rt, questions)
