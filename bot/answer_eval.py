"""Asking the KB question set (`fixtures/kb_questions.yml`) in the eval: does each answer state the fact and cite the article?

Each entry is `{question, doc_id, answer}`. The question is asked as the first message of a
fresh conversation; the reply is scored by bot/answer_scoring.py. The figures:

- answer correctness: the share of questions whose reply contains `answer`;
- citation precision (micro): of all documents cited across the set, the share that were the
  expected one;
- citation recall (micro): the share of questions whose expected document was cited.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bot.answer_scoring import cited_doc_ids, contains, score_answer
from bot.config import FIXTURES
from bot.contracts import Channel, MessageEnvelope

__all__ = ["KB_QUESTIONS", "AnswerReport", "cited_doc_ids", "contains", "load_questions", "run_questions"]

KB_QUESTIONS = FIXTURES / "kb_questions.yml"


@dataclass
class AnswerReport:
    questions: int = 0
    correct: int = 0
    cited_expected: int = 0  # questions whose expected document was cited
    cited_total: int = 0  # distinct documents cited, summed over the questions
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        def rate(a: int, b: int) -> float:
            return round(a / b, 4) if b else 1.0
        return {
            "kb_questions": self.questions,
            "answer_correctness": rate(self.correct, self.questions),
            "citation_precision": rate(self.cited_expected, self.cited_total),
            "citation_recall": rate(self.cited_expected, self.questions),
            "answers_failed": len(self.failures),
        }


def load_questions(path: Path = KB_QUESTIONS) -> list[dict]:
    """The question set; an absent file is an empty set (the golden eval still runs)."""
    if not path.exists():
        return []
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    for i, entry in enumerate(entries, 1):
        missing = {"question", "doc_id", "answer"} - set(entry)
        if missing:
            raise ValueError(f"{path.name} entry {i}: missing {', '.join(sorted(missing))}")
    return entries


async def run_questions(rt, path: Path = KB_QUESTIONS, *, user: str = "U_EVAL") -> AnswerReport:
    """Ask every question of the set, each in a fresh conversation, and score the replies."""
    report = AnswerReport()
    tenant = rt.settings.default_tenant
    await rt.ensure_kb(tenant)
    for i, entry in enumerate(load_questions(path), 1):
        envelope = MessageEnvelope(tenant_id=tenant, channel=Channel.cli, user_id=user,
                                   session_id=f"eval:kbq:{uuid.uuid4().hex[:10]}", text=str(entry["question"]))
        outcome = await rt.orchestrator.handle(envelope)
        cited = cited_doc_ids(outcome.citations)
        correct, cited_right = score_answer(outcome.reply, cited, entry)
        report.questions += 1
        report.correct += correct
        report.cited_expected += cited_right
        report.cited_total += len(cited)
        where = f"{path.name} #{i} [{entry['question']}]"
        if not correct:
            report.failures.append(f"{where}: reply lacks {entry['answer']!r}: {outcome.reply!r}")
        if not cited_right:
            report.failures.append(f"{where}: cites {cited or 'nothing'}, expected {entry['doc_id']!r}")
    return report
