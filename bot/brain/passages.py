"""The passage of a help-centre article that answers the question.

A search hit is a whole chunk (several sections of an article) and the section that matched
best. The first lines of that section rarely answer the question ("what payment methods do
you accept?" is not answered by the section's last sentence, nor "how long do refunds take?"
by a link). So the hits' texts (up to three) are cut into candidates, each scored against the question:

- candidates: windows of one to three consecutive sentences within a paragraph; each list or
  table whole (with the sentence that introduces it, when it ends in ":"), a table scored by
  its best row read as a sentence; and a signpost
  ("We accept the following payment methods.") with what it announces: the list below it,
  or the first sentence of each section that follows;
- score: 0.9 x the encoder cosine of question and candidate (the KB's own MiniLM encoder,
  with the section heading as context) + 0.1 x BM25 over the candidates (scaled to 0..1 by
  the best) + 0.1 x the cosine of question and section heading, then small adjustments:
  extra sentences, signposts and cross-references cost; a stated quantity for a "how
  long/much/many/when" question and a section's first sentence gain; each rank down the
  search results costs 0.04;
- the pick reads on in its section while it is shorter than 250 characters;
- a window opening on a sentence that leans on the one before ("... also ...", "It ...")
  costs; a signpost stands for the sections below only from the top of its section.

The weights were chosen on fixtures/kb_questions.yml (bench/kb_answers.py), so they fit
the demo KB's style; `Pick.confident` is the routing rule for unsure questions.
Without an encoder the lexical score decides alone. Pure functions: the Brain never touches
the KB, it reads the search results the Hands returned.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np

from kb_loader.lexical import tokens

VECTOR_WEIGHT = 0.9
LEXICAL_WEIGHT = 0.15  # on the question set 0.1 and 0.2 each answer fewer questions
# The section heading alone against the question: "How long a refund takes" names the answer.
HEADING_WEIGHT = 0.1
EXTRA_SENTENCE_COST = 0.03  # per sentence beyond the first in a window
# "How long / how much / how many / when" asks for a quantity: a candidate that states one
# (a digit, a number word, a weekday) answers it better than one that only talks about it.
QUANTITY_BONUS = 0.06
# A sentence that only announces what follows ("We accept the following payment methods.",
# "This article explains ...") names the topic without answering anything.
SIGNPOST_COST = 0.08
# A section's first sentence usually states its point; what follows qualifies it.
OPENING_BONUS = 0.02
# A window that opens on a sentence leaning on the one before ("Signed-in customers also ...",
# "It is free ...", "These are set by ...") quotes half a thought.
LEANS_BACK_COST = 0.05
# Each rank down the search results costs a little: retrieval already weighed whole articles.
HIT_RANK_COST = 0.04
MAX_WINDOW = 3
SHORT_ANSWER_CHARS = 250
MAX_CHARS = 700
BM25_K1, BM25_B = 1.2, 0.75
CONFIDENT_SCORE = 0.45
CONFIDENT_COVERAGE = 0.5
# Inside a request the classifier is sure of ("my order already shipped, can I still cancel
# it?") the message is not out of scope, so half its content words in the hit are enough.
REQUEST_COVERAGE = 0.5
# A passage that scores well clear of every out-of-scope question (the highest, 0.60) may
# say what was asked in other words ("Is Klarna available ...?" / "only offered for ..."):
# a third of the question's content words then suffice.
HIGH_SCORE = 0.65
HIGH_SCORE_COVERAGE = 1 / 3
# Words of a question that say what kind of answer is wanted, not what it is about.
_QUESTION_WORDS = frozenset(tokens(
    "how long much many soon when what where why which who can could would do does did get take make "
    "need want please i my me you your us our order"))
# Candidates are help-centre text, the same every turn until the KB changes: their vectors are
# kept (about 1.5 kB each with MiniLM), so a turn encodes only its question and new text.
VECTOR_CACHE_SIZE = 8192

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*)$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,2}[.)])\s+")
_TABLE_ROW = re.compile(r"^\s*\|")
# A sentence ends at . ! ? followed by a space and a capital, digit or opening mark; "e.g. x"
# and "5.00 EUR" stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(*\[])")
_QUANTITY_QUESTION = re.compile(r"\b(how (long|much|many|soon|fast|old|often|quickly)|when|what time|until|fee|cost|price)\b", re.I)
_QUANTITY = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|twelve|fourteen|thirty|"
                       r"once|twice|immediately|at once|same day|next (business )?day|monday|friday|free)\b", re.I)
_LEANS_BACK = re.compile(r"^\W*(?:(?:this|these|that|those|it|its|they|their|then|however|but|so|otherwise)\b"
                         r"|(?:\S+\s+){1,3}also\b)", re.I)
_SIGNPOST = re.compile(r"(\bthis article\b|\bthe following\b|\bbelow\b|\bsee \[|:$)", re.I)
# Pointing elsewhere ("see [Refunds](...) for how long it takes") is never the answer itself.
_REFERRAL = re.compile(r"(\bthis article\b|\bsee \[)", re.I)


@dataclass(frozen=True)
class Candidate:
    text: str  # what the answer quotes
    section: str
    sentences: int = 1  # 0 for a list or table block
    anchor: str = ""  # what is scored, when not `text`: a signpost for its digest, a table's row
    following: tuple[str, ...] = ()  # the rest of the paragraph, which a short answer reads on into
    opens_section: bool = False  # starts at its section's first sentence

    @property
    def scored(self) -> str:
        return self.anchor or self.text


@dataclass(frozen=True)
class Pick:
    text: str
    score: float
    cosine: float  # of the question and the picked candidate; 0 without an encoder
    hit: int  # index of the hit it came from
    coverage: float = 0.0  # share of the question's content words found in that hit's text

    @property
    def confident(self) -> bool:
        """Whether the pick answers a question the intent classifier was unsure of.

        Measured on the 77 KB questions (fixtures/kb_questions.yml) and the 200 CLINC150
        out-of-scope questions against the demo KB: no out-of-scope question reaches both marks
        (the closest, "how long do wire transfers take", scores 0.60, but the chunk lacks
        "wire": coverage 0.5), while most KB questions the classifier is unsure of do.
        The score alone cannot tell them apart ("Do you take American Express?" scores below
        several out-of-scope questions); the words can. Only a score well above every
        out-of-scope one (HIGH_SCORE) lets a third of the words suffice."""
        # Without an encoder the lexical best scores about 1 by construction: no such shortcut.
        if self.cosine > 0 and self.score >= HIGH_SCORE:
            return self.coverage >= HIGH_SCORE_COVERAGE - 1e-9
        return self.score >= CONFIDENT_SCORE and self.coverage > CONFIDENT_COVERAGE

    @property
    def answers_request(self) -> bool:
        """Whether the pick answers the question inside a confidently classified request."""
        return self.score >= CONFIDENT_SCORE and self.coverage >= REQUEST_COVERAGE


@dataclass(frozen=True)
class _Block:
    section: str
    parts: tuple[str, ...]  # sentences of a paragraph, or the lines of a list/table
    listed: bool
    new_section: bool  # the block starts right after a heading


def sentences(paragraph: str) -> list[str]:
    flat = " ".join(paragraph.split())
    return [s for s in _SENTENCE_END.split(flat) if s.strip()]


def _blocks(text: str, section: str) -> list[_Block]:
    out: list[_Block] = []
    heading, new_section = section, False
    for raw in re.split(r"\n\s*\n", text.strip()):
        lines = [line for line in raw.splitlines() if line.strip()]
        while lines and (m := _HEADING.match(lines[0])):
            heading, new_section = m.group(1).strip(), True
            lines = lines[1:]
        if not lines:
            continue  # a heading alone: the next block starts its section
        listed = [i for i, line in enumerate(lines) if _LIST_ITEM.match(line) or _TABLE_ROW.match(line)]
        if listed and listed[0] > 0:  # a lead-in paragraph, then the list
            out.append(_Block(heading, tuple(sentences("\n".join(lines[: listed[0]]))), False, new_section))
            lines, new_section = lines[listed[0]:], False
        if listed:
            out.append(_Block(heading, tuple(line.strip() for line in lines), True, new_section))
        else:
            out.append(_Block(heading, tuple(sentences("\n".join(lines))), False, new_section))
        new_section = False
    return out


def candidates(text: str, section: str = "") -> list[Candidate]:
    """Sentence windows and whole lists/tables of a chunk's text, each with its section; a
    signpost that ends a paragraph ("... the following payment methods.") also stands for
    what follows it: the list below, or the first line of each section below."""
    blocks = _blocks(text, section)
    out: list[Candidate] = []
    for b, block in enumerate(blocks):
        if block.listed:
            before = blocks[b - 1] if b else None
            intro = before.parts[-1] if before and not before.listed and before.section == block.section \
                and before.parts and before.parts[-1].rstrip().endswith(":") else ""
            body = "\n".join(block.parts)
            text = f"{intro}\n{body}" if intro else body
            opens = block.new_section or b == 0
            rows = _table_rows_as_sentences(block.parts)
            # A table answers as well as its best row does ("how much is shipping?" is the
            # standard-delivery row), and is quoted whole, so the other rows stay in view.
            out.extend(Candidate(text, block.section, 0, anchor=row, opens_section=opens) for row in rows)
            if not rows:
                out.append(Candidate(text, block.section, 0, opens_section=opens))
            continue
        parts = list(block.parts)
        rest = _rest_of_section(blocks[b + 1 :])
        # A signpost announces the sections below only from the top of its own section; further
        # down ("... apply to all of these, as explained below.") it looks back, then away.
        announces = block.new_section or b == 0 or bool(blocks[b + 1 :] and blocks[b + 1].listed
                                                           and not blocks[b + 1].new_section)
        for n in range(1, MAX_WINDOW + 1):
            for i in range(len(parts) - n + 1):
                window = " ".join(parts[i : i + n])
                opens = i == 0 and (block.new_section or b == 0)
                out.append(Candidate(window, block.section, n, following=tuple(parts[i + n :]) + rest,
                                     opens_section=opens))
                if announces and any(_SIGNPOST.search(p.strip()) for p in parts[i : i + n]) \
                        and (digest := _digest(blocks[b + 1 :])):
                    out.append(Candidate(" ".join(parts) + "\n" + digest, block.section, n, anchor=window,
                                         opens_section=opens))
    return out


def _table_rows_as_sentences(lines: tuple[str, ...]) -> list[str]:
    """Each body row of a Markdown table as a sentence ("Standard delivery: Cost 4.95 EUR, Free
    from orders of 50 EUR or more."), which the encoder understands; pipes and rules it does
    not. [] when the lines are not a table with a header."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines
            if _TABLE_ROW.match(line)]
    if len(rows) < 3 or not all(set(cell) <= set("-: ") for cell in rows[1]):
        return []
    header, read = rows[0], []
    for row in rows[2:]:
        pairs = [f"{name} {value}" for name, value in zip(header[1:], row[1:]) if value]
        read.append(f"{row[0]}: {', '.join(pairs)}." if pairs else f"{row[0]}.")
    return read


def _rest_of_section(following: list[_Block]) -> tuple[str, ...]:
    """The sentences of the paragraphs after a block, up to its section's first list or end."""
    out: list[str] = []
    for block in following:
        if block.new_section or block.listed:
            break
        out.extend(block.parts)
    return tuple(out)


def _digest(following: list[_Block]) -> str:
    """What a signpost points at: the list that follows it, or each following section's
    heading with its first sentence (or its list), within MAX_CHARS."""
    if following and following[0].listed and not following[0].new_section:
        return "\n".join(following[0].parts)
    lines: list[str] = []
    for block in following:
        if not block.new_section:
            continue
        if block.listed:
            line = f"{block.section}:\n" + "\n".join(block.parts)
        else:
            line = f"- {block.section}: {block.parts[0]}" if block.parts else ""
        if sum(len(x) + 1 for x in lines) + len(line) > MAX_CHARS:
            break
        lines.append(line)
    return "\n".join(lines)


def bm25(question: str, texts: list[str]) -> np.ndarray:
    """Okapi BM25 of the question against each text, the texts themselves the corpus."""
    docs = [Counter(tokens(t)) for t in texts]
    if not docs:
        return np.zeros(0)
    avg = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    df = Counter(term for d in docs for term in d)
    n = len(docs)
    scores = np.zeros(n)
    for term in set(tokens(question)):
        if term not in df:
            continue
        idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            if tf:
                length = sum(d.values())
                scores[i] += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / avg))
    return scores


def best_passage(question: str, hits: list[dict], encoder=None) -> Pick | None:
    """The candidate of the hits' texts that best answers `question`, or None."""
    pool: list[tuple[int, Candidate]] = []
    for n, hit in enumerate(hits):
        section = (hit.get("citation") or {}).get("section", "")
        for c in candidates(hit.get("text") or hit.get("passage") or "", section):
            if len(c.text) <= MAX_CHARS + 200:
                pool.append((n, c))
    if not pool:
        return None
    texts = [c.scored for _, c in pool]
    lexical = bm25(question, texts)
    top = float(lexical.max()) if lexical.size else 0.0
    lexical = lexical / top if top > 0 else lexical
    cosine = np.zeros(len(pool))
    if encoder is not None:
        query = np.asarray(encoder.encode([question]), dtype=np.float32)[0]
        cosine = _VECTORS.get(encoder, [_with_context(c) for _, c in pool]) @ query
        headings = _VECTORS.get(encoder, [c.section.rsplit(" > ", 1)[-1] or c.text for _, c in pool]) @ query
        score = VECTOR_WEIGHT * cosine + LEXICAL_WEIGHT * lexical + HEADING_WEIGHT * headings
    else:
        score = lexical.astype(float)
    score = score - np.array([_adjustment(question, c) + n * HIT_RANK_COST for n, c in pool])
    i = int(np.argmax(score))
    n, chosen = pool[i]
    text = chosen.text
    for sentence in chosen.following:
        # One short sentence rarely says it all ("We send an invoice for every order." is
        # followed by where it is): read on in the paragraph while the answer is short.
        if len(text) >= SHORT_ANSWER_CHARS:
            break
        text = f"{text} {sentence}"
    return Pick(text=text, score=float(score[i]), cosine=float(cosine[i]), hit=n,
                coverage=coverage(question, hits[n].get("text") or ""))


def coverage(question: str, text: str) -> float:
    """The share of the question's content words (stemmed, question words aside) in `text`."""
    wanted = set(tokens(question)) - _QUESTION_WORDS
    return len(wanted & set(tokens(text))) / len(wanted) if wanted else 0.0


def _adjustment(question: str, c: Candidate) -> float:
    cost = max(0, c.sentences - 1) * EXTRA_SENTENCE_COST
    if c.sentences and not c.opens_section and _LEANS_BACK.match(c.scored):
        cost += LEANS_BACK_COST
    if c.opens_section:
        cost -= OPENING_BONUS
    if c.anchor and c.sentences:
        cost -= 0.001  # a signpost with what it points at beats the bare signpost
    elif (c.sentences == 1 and _SIGNPOST.search(c.text.strip())) or _REFERRAL.search(c.text):
        cost += SIGNPOST_COST
    if _QUANTITY_QUESTION.search(question) and _QUANTITY.search(c.text):
        cost -= QUANTITY_BONUS
    return cost


def _with_context(c: Candidate) -> str:
    heading = c.section.rsplit(" > ", 1)[-1]
    return f"{heading}: {c.scored}" if heading else c.scored


class _VectorCache:
    def __init__(self, size: int = VECTOR_CACHE_SIZE):
        self.size = size
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, encoder, texts: list[str]) -> np.ndarray:
        name = getattr(encoder, "name", type(encoder).__name__)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if (name, t) not in self._vectors))
        if missing:
            fresh = np.asarray(encoder.encode(missing), dtype=np.float32)
            with self._lock:
                for text, vector in zip(missing, fresh):
                    self._vectors[(name, text)] = vector
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        with self._lock:
            rows = []
            for text in texts:
                vector = self._vectors.get((name, text))
                if vector is not None:
                    self._vectors.move_to_end((name, text))
                rows.append(vector)
        if any(r is None for r in rows):  # evicted meanwhile by a larger batch: encode directly
            return np.asarray(encoder.encode(texts), dtype=np.float32)
        return np.stack(rows)


_VECTORS = _VectorCache()
