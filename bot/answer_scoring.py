"""Scoring answers against the KB question set (fixtures/kb_questions.yml).

Each entry names a question, the doc_id of the article that answers it and a distinctive
substring of the answering sentence. A reply is correct when it contains that substring,
case-insensitively, once Markdown and Slack mrkdwn markup are removed and whitespace is
collapsed on both sides; its citations are scored against the doc_id.

    scores = AnswerScores()
    scores.add(entry, reply_text, [c.doc_id for c in citations])
    scores.summary()  # {"questions", "answer_correctness", "citation_precision", "citation_recall"}
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bot.config import FIXTURES

KB_QUESTIONS = FIXTURES / "kb_questions.yml"

_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MRKDWN_LINK = re.compile(r"<[^<>|]+\|([^<>]*)>")
_BARE_LINK = re.compile(r"<((?:https?|mailto):[^<>|]+)>")
_MARKS = re.compile(r"[*_~`]+")
_LINE_MARKS = re.compile(r"^\s*(?:#{1,6}\s+|>\s?|[-+•]\s+)", re.M)


@dataclass(frozen=True)
class KBQuestion:
    question: str
    doc_id: str
    answer: str


def load_questions(path: Path = KB_QUESTIONS) -> list[KBQuestion]:
    rows = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return [KBQuestion(str(r["question"]), str(r["doc_id"]), str(r["answer"])) for r in rows]


def plain(text: str | None) -> str:
    """Text without Markdown/mrkdwn markup, lower-cased, whitespace collapsed."""
    text = html.unescape(_BARE_LINK.sub(r"\1", _MRKDWN_LINK.sub(r"\1", _MD_LINK.sub(r"\1", text or ""))))
    text = _MARKS.sub("", _LINE_MARKS.sub("", text))
    return " ".join(text.split()).lower()


def answer_correct(reply: str | None, answer: str) -> bool:
    wanted = plain(answer)
    return bool(reply) and bool(wanted) and wanted in plain(reply)


@dataclass
class AnswerScores:
    questions: int = 0
    correct: int = 0
    cited: int = 0  # citations given, over all replies
    cited_right: int = 0  # of those, naming the expected article
    recalled: int = 0  # replies citing the expected article
    misses: list[dict] = field(default_factory=list)

    def add(self, entry: KBQuestion, reply: str | None, cited_doc_ids: list[str]) -> bool:
        docs = list(dict.fromkeys(cited_doc_ids))
        ok = answer_correct(reply, entry.answer)
        self.questions += 1
        self.correct += ok
        self.cited += len(docs)
        self.cited_right += docs.count(entry.doc_id)
        self.recalled += entry.doc_id in docs
        if not ok or entry.doc_id not in docs:
            self.misses.append({"question": entry.question, "want_doc": entry.doc_id, "want": entry.answer,
                                "cited": docs, "reply": reply})
        return ok

    def summary(self) -> dict:
        def rate(n: int, d: int) -> float:
            return round(n / d, 4) if d else 0.0

        return {"questions": self.questions, "answer_correctness": rate(self.correct, self.questions),
                "citation_precision": rate(self.cited_right, self.cited),
                "citation_recall": rate(self.recalled, self.questions)}


def contains(reply: str | None, needle: str) -> bool:
    """True when `reply` states `needle`, ignoring case, whitespace and markup."""
    return answer_correct(reply, needle)


def cited_doc_ids(citations) -> list[str]:
    """The distinct doc_ids of a reply's citations (Citation models or dicts), in order."""
    ids = (c.get("doc_id") if isinstance(c, dict) else getattr(c, "doc_id", None) for c in citations or [])
    return list(dict.fromkeys(i for i in ids if i))


def score_answer(reply: str | None, cited: list[str], entry) -> tuple[bool, bool]:
    """(the reply contains the entry's answer, the entry's doc_id is among `cited`); `entry`
    is a KBQuestion or a dict of the YAML entry."""
    answer = entry["answer"] if isinstance(entry, dict) else entry.answer
    doc_id = entry["doc_id"] if isinstance(entry, dict) else entry.doc_id
    return answer_correct(reply, str(answer)), str(doc_id) in cited
