"""Split a `Document` into heading-aware chunks of 512–800 tokens with an 80-token overlap.

Tokens are the encoder's own tokenizer tokens. The body is first cut into units: heading
lines, sentences, list items, table rows and code blocks, each tagged with its section path
("Returns > Damaged items"). Units are then packed greedily. When a chunk must end, the cut
goes where it does least harm among the points that keep it within 512–800 tokens: a section
boundary first, then a paragraph boundary, then a sentence boundary. A chunk cut inside a
section starts with the last ~80 tokens of the previous one (whole sentences where possible);
a chunk that starts a new section starts clean. A document of at most 800 tokens is one chunk.

Each chunk also carries its passages: consecutive spans of its text, within one section and
at most 200 tokens, that the encoder embeds one by one (its input stops at 256 tokens, a
chunk reaches 800). The vector side of search matches passages and returns their chunk.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from tokenizers import Tokenizer

from kb_loader.loaders import Document

MIN_TOKENS = 512
MAX_TOKENS = 800
OVERLAP_TOKENS = 80
MAX_UNIT_TOKENS = 200  # longer sentences are cut at word boundaries
PASSAGE_TOKENS = 200  # plus the context line, within MiniLM's 256-token input
SECTION_SEP = " > "


@dataclass(frozen=True)
class Passage:
    start: int  # character span in the chunk text
    end: int
    section: str


@dataclass
class Chunk:
    id: str
    doc_id: str
    ordinal: int
    text: str
    section: str
    title: str
    source: str
    url: str
    updated_at: str  # ISO 8601
    allowed_channels: tuple[str, ...]
    tokens: int
    content_hash: str  # text + the metadata a search result shows or filters on
    passages: tuple[Passage, ...] = ()

    @property
    def context(self) -> str:
        """Title and section as one line: "Returns > Damaged items"."""
        return context_line(self.title, self.section)

    @property
    def index_text(self) -> str:
        """What the BM25 index sees: the context line, then the chunk."""
        return index_text(self.title, self.section, self.text)

    def passage_texts(self) -> list[str]:
        """What the encoder sees: each passage led by its own context line."""
        return [context_line(self.title, p.section) + "\n" + self.text[p.start : p.end] for p in self.passages]


def context_line(title: str, section: str) -> str:
    parts = [title] + [p for p in section.split(SECTION_SEP) if p and p != title]
    return SECTION_SEP.join(parts)


def index_text(title: str, section: str, text: str) -> str:
    return context_line(title, section) + "\n" + text


@dataclass
class _Unit:
    text: str
    section: tuple[str, ...]
    boundary: int  # strength of the cut before this unit: 3 section, 2 paragraph, 1 sentence, 0 word
    heading: bool = False
    sep: str = " "  # joins this unit to the previous one
    tokens: int = 0


_ATX = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_LINE_ITEM = re.compile(r"^\s*([-*+]\s|\d{1,3}[.)]\s|\|)")
_ABBREV = r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\betc\.)(?<!\bvs\.)(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bNo\.)"
_SENTENCE_END = re.compile(_ABBREV + r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(paragraph: str) -> list[str]:
    text = " ".join(paragraph.split())
    if not text:
        return []
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.start()].strip() + text[m.start() : m.end()].rstrip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _parse(doc: Document) -> list[_Unit]:
    """Body → units with section paths and boundary strengths."""
    units: list[_Unit] = []
    stack: list[tuple[int, str]] = []
    pending = 3  # boundary strength for the next unit
    para: list[str] = []
    lines = doc.text.split("\n")

    def section() -> tuple[str, ...]:
        return tuple(t for _, t in stack)

    def flush() -> None:
        nonlocal pending
        if not para:
            return
        block = para[:]
        para.clear()
        if any(_LINE_ITEM.match(line) for line in block):
            # Lists and tables: a line (with its continuation lines) is a unit.
            items: list[str] = []
            for line in block:
                if _LINE_ITEM.match(line) or not items:
                    items.append(line.rstrip())
                else:
                    items[-1] += " " + line.strip()
            for i, item in enumerate(items):
                units.append(_Unit(item, section(), pending if i == 0 else 1, sep="\n\n" if i == 0 else "\n"))
            pending = 2
            return
        for i, sentence in enumerate(split_sentences(" ".join(block))):
            units.append(_Unit(sentence, section(), pending if i == 0 else 1, sep="\n\n" if i == 0 else " "))
        pending = 2

    def heading(level: int, title: str) -> None:
        nonlocal pending
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        units.append(_Unit("#" * level + " " + title, section(), 3, heading=True, sep="\n\n"))
        pending = 1  # the heading's first sentence belongs with it

    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            flush()
            fence = _FENCE.match(line).group(1)
            block = [line]
            i += 1
            while i < len(lines):
                block.append(lines[i])
                if lines[i].strip().startswith(fence):
                    break
                i += 1
            units.append(_Unit("\n".join(block), section(), pending, sep="\n\n"))
            pending = 2
            i += 1
            continue
        m = _ATX.match(line)
        if m and m.group(2):
            heading(len(m.group(1)), m.group(2).strip())
        elif (
            line.strip() and not para and i + 1 < len(lines) and _SETEXT.match(lines[i + 1])
            and not _LINE_ITEM.match(line)
        ):
            heading(1 if lines[i + 1].strip().startswith("=") else 2, line.strip())
            i += 1
        elif not line.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return units


def _split_long(unit: _Unit, tokenizer: Tokenizer, limit: int) -> list[_Unit]:
    """Cut a unit longer than `limit` tokens at word starts (unavoidably mid-sentence)."""
    enc = tokenizer.encode(unit.text, add_special_tokens=False)
    offsets = enc.offsets
    pieces, start_tok = [], 0
    text = unit.text
    while len(offsets) - start_tok > limit:
        cut = start_tok + limit
        # Walk back to a token that begins a word (preceded by whitespace).
        while cut > start_tok + limit // 2 and not (offsets[cut][0] > 0 and text[offsets[cut][0] - 1].isspace()):
            cut -= 1
        if cut <= start_tok + limit // 2:
            cut = start_tok + limit
        pieces.append(text[offsets[start_tok][0] : offsets[cut][0]].strip())
        start_tok = cut
    pieces.append(text[offsets[start_tok][0] :].strip())
    out = []
    for k, piece in enumerate(p for p in pieces if p):
        out.append(_Unit(piece, unit.section, unit.boundary if k == 0 else 0, sep=unit.sep if k == 0 else " "))
    return out


def _count(units: list[_Unit], tokenizer: Tokenizer) -> None:
    for unit, enc in zip(units, tokenizer.encode_batch([u.text for u in units], add_special_tokens=False)):
        unit.tokens = len(enc.ids)


def _join(units: list[_Unit]) -> str:
    return "".join((u.sep if k else "") + u.text for k, u in enumerate(units))


def _passages(units: list[_Unit], budget: int) -> tuple[str, tuple[Passage, ...]]:
    """The chunk text, and its units grouped into passages: a passage never crosses a section
    and holds at most `budget` tokens (a single longer unit is a passage of its own)."""
    text, spans = "", []
    for k, unit in enumerate(units):
        if k:
            text += unit.sep
        spans.append((len(text), len(text) + len(unit.text)))
        text += unit.text
    lead = len(text) - len(text.lstrip())
    text = text.strip()
    groups: list[list[int]] = []
    total = 0
    for k, unit in enumerate(units):
        starts_new = (
            not groups or unit.heading or unit.section != units[groups[-1][0]].section
            or total + unit.tokens > budget
        )
        # A heading stays with what follows it.
        if starts_new and not (groups and units[groups[-1][-1]].heading and unit.section == units[groups[-1][0]].section):
            groups.append([k])
            total = unit.tokens
        else:
            groups[-1].append(k)
            total += unit.tokens
    # A heading directly followed by another heading adds nothing a context line lacks.
    groups = [g for g in groups if not all(units[k].heading for k in g)] or groups
    passages = []
    for group in groups:
        start = max(0, spans[group[0]][0] - lead)
        end = min(len(text), spans[group[-1]][1] - lead)
        section = next((u.section for u in (units[k] for k in group) if u.section), units[group[0]].section)
        if end > start:
            passages.append(Passage(start, end, SECTION_SEP.join(section)))
    return text, tuple(passages)


def _copy(unit: _Unit) -> _Unit:
    return _Unit(unit.text, unit.section, unit.boundary, unit.heading, unit.sep, unit.tokens)


def _overlap(chunk: list[_Unit], tokenizer: Tokenizer, target: int) -> list[_Unit]:
    """The tail of a chunk to repeat at the start of the next one, from the same section:
    whole sentences if some tail comes within 30% of `target` tokens, else the last `target`
    tokens cut at a word start."""
    section = chunk[-1].section
    run = len(chunk)
    while run > 0 and chunk[run - 1].section == section and not chunk[run - 1].heading:
        run -= 1
    best, best_gap, total = None, None, 0
    for k in range(len(chunk) - 1, run - 1, -1):
        total += chunk[k].tokens
        if total > target * 1.3:
            break
        gap = abs(total - target)
        if total >= target * 0.7 and (best_gap is None or gap < best_gap):
            best, best_gap = k, gap
    if best is not None:
        return [_copy(u) for u in chunk[best:]]
    tail = chunk[run:]
    if not tail:
        return []
    text = _join(tail)
    enc = tokenizer.encode(text, add_special_tokens=False)
    if len(enc.ids) <= target:
        return [_copy(u) for u in tail]
    start = len(enc.ids) - target
    while start > 0 and not (enc.offsets[start][0] > 0 and text[enc.offsets[start][0] - 1].isspace()):
        start -= 1
    return [_Unit(text[enc.offsets[start][0] :].strip(), section, 0, tokens=len(enc.ids) - start)]


def chunk_document(
    doc: Document,
    tokenizer: Tokenizer,
    *,
    min_tokens: int = MIN_TOKENS,
    max_tokens: int = MAX_TOKENS,
    overlap: int = OVERLAP_TOKENS,
    passage_tokens: int = PASSAGE_TOKENS,
) -> list[Chunk]:
    raw = _parse(doc)
    if not raw:
        return []
    _count(raw, tokenizer)
    limit = min(MAX_UNIT_TOKENS, max(1, (max_tokens - min_tokens) // 2))
    units: list[_Unit] = []
    for unit in raw:
        units.extend(_split_long(unit, tokenizer, limit) if unit.tokens > limit else [unit])
    _count(units, tokenizer)

    groups: list[tuple[list[_Unit], list[_Unit]]] = []  # (overlap prefix, own units)
    prefix: list[_Unit] = []
    start = 0
    while start < len(units):
        total = sum(u.tokens for u in prefix)
        end = start
        while end < len(units) and total + units[end].tokens <= max_tokens:
            total += units[end].tokens
            end += 1
        if end == len(units):
            groups.append((prefix, units[start:]))
            break
        end = max(end, start + 1)
        # The cut c in (start, end] keeps the chunk within [min, max] tokens, falls on the
        # strongest boundary available, and, among equals, keeps the most text.
        best, best_key, running = end, (-1, -1), sum(u.tokens for u in prefix)
        for c in range(start + 1, end + 1):
            running += units[c - 1].tokens
            if running < min_tokens or units[c - 1].heading:
                continue
            key = (units[c].boundary, c)
            if key > best_key:
                best, best_key = c, key
        groups.append((prefix, units[start:best]))
        new_section = units[best].boundary >= 3
        prefix = [] if new_section or overlap <= 0 else _overlap(units[start:best], tokenizer, overlap)
        start = best

    chunks = []
    for ordinal, (pre, own) in enumerate(groups):
        group = pre + own
        text, passages = _passages(group, passage_tokens)
        # The section is where the chunk's own text (after the overlap) starts.
        section = SECTION_SEP.join(next((u.section for u in own or group if u.section), ()))
        chunk = _make_chunk(doc, ordinal, text, section, sum(u.tokens for u in group))
        chunk.passages = passages or (Passage(0, len(text), section),)
        chunks.append(chunk)
    _dedupe_ids(chunks)
    return chunks


def _make_chunk(doc: Document, ordinal: int, text: str, section: str, tokens: int) -> Chunk:
    meta = {
        "doc_id": doc.doc_id, "title": doc.title, "section": section, "url": doc.url,
        "source": doc.source, "allowed_channels": list(doc.allowed_channels),
        "updated_at": doc.updated_at.isoformat(),
    }
    content_hash = hashlib.sha256(json.dumps([text, meta], sort_keys=True).encode()).hexdigest()
    doc_key = hashlib.sha1(doc.doc_id.encode()).hexdigest()[:10]
    return Chunk(
        id=f"{doc_key}-{content_hash[:24]}", doc_id=doc.doc_id, ordinal=ordinal, text=text,
        section=section, title=doc.title, source=doc.source, url=doc.url,
        updated_at=meta["updated_at"], allowed_channels=doc.allowed_channels, tokens=tokens,
        content_hash=content_hash,
    )


def _dedupe_ids(chunks: list[Chunk]) -> None:
    seen: dict[str, int] = {}
    for chunk in chunks:
        n = seen.get(chunk.id, 0)
        seen[chunk.id] = n + 1
        if n:
            chunk.id = f"{chunk.id}-{n}"
