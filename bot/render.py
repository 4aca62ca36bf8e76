"""Replies are Markdown; each surface shows them in its own format.

KB passages are Markdown (`**bold**`, `[text](url)`, lists, tables) and every other reply is
plain text, which is valid Markdown, so one parser reads them all. Rendering happens at the
surface, after the output guard: the guard and the stored conversation see the Markdown.

- `to_mrkdwn(md)`: Slack mrkdwn, `*bold*`, `_italic_`, `<url|text>`, `•` lists, with `&`, `<`
  and `>` escaped in all text, so a `<!channel>` or `<@U…>` in a reply never pings anyone.
- `to_text(md)`: plain text for email and the terminal: links as "text (url)", lists with
  "- ", no emphasis markers.
- `to_html(md)`: an HTML fragment for email, from markdown-it's own renderer.

The parser runs with raw HTML off: a `<script>` (or any tag a customer wrote and a reply
repeats) is text, escaped in every format. Soft line breaks (the KB's hard-wrapped lines)
become spaces; paragraphs stay apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from bot.slack.mrkdwn import escape as slack_escape
from bot.slack.mrkdwn import link as slack_link

_PARSER = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


@dataclass(frozen=True)
class _Style:
    """What one plain-ish output format writes for each Markdown construct."""

    escape: Callable[[str], str]
    strong: str
    em: str
    strike: str
    code: str
    link: Callable[[str, str], str]
    bullets: Sequence[str]
    indent: str
    heading: Callable[[str], str]
    header_cell: Callable[[str], str]
    cell_sep: str
    quote: str
    rule: str
    fence: Callable[[str], str]


def _text_link(url: str, label: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme == "mailto":
        address = url.strip()[len("mailto:"):]
        return label if label == address else f"{label} ({address})"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return label  # a link we would not click ourselves is not offered as one
    return url.strip() if label.strip() in ("", url.strip()) else f"{label} ({url.strip()})"


def _slack_fence(code: str) -> str:
    return "```\n" + slack_escape(code) + "\n```"


_MRKDWN = _Style(
    escape=slack_escape, strong="*", em="_", strike="~", code="`",
    link=lambda url, label: slack_link(url, label or url), bullets=("•", "◦", "▪"), indent="    ",
    heading=lambda text: f"*{text}*", header_cell=lambda text: f"*{text}*", cell_sep=" · ",
    quote="> ", rule="———", fence=_slack_fence,
)
_TEXT = _Style(
    escape=lambda text: text, strong="", em="", strike="", code="",
    link=_text_link, bullets=("-",), indent="  ",
    heading=lambda text: text, header_cell=lambda text: text, cell_sep=" | ",
    quote="> ", rule="----", fence=lambda code: "\n".join("    " + line for line in code.split("\n")),
)


def to_mrkdwn(md: str) -> str:
    """Slack mrkdwn for a Markdown reply; every character of text escaped."""
    return _Renderer(_MRKDWN).render(md)


def to_text(md: str) -> str:
    """Plain text for a Markdown reply (email's text/plain part, the terminal)."""
    return _Renderer(_TEXT).render(md)


def to_html(md: str) -> str:
    """An escaped HTML fragment (`<p>`, `<strong>`, `<a href>`, `<ul>`, `<table>`) for a
    Markdown reply. Raw HTML in `md` is shown as text; markdown-it refuses `javascript:`
    and similar link targets."""
    return _PARSER.render(md)


class _Renderer:
    """Walks markdown-it's block tokens, writing each leaf block (a paragraph, a heading, a
    table, a code block) with the prefixes of the lists and quotes it sits in."""

    def __init__(self, style: _Style) -> None:
        self.style = style
        self.parts: list[str] = []
        self.lists: list[list] = []  # one [kind, next number] per open list
        self.marker: str | None = None  # the list marker still owed to the next leaf
        self.quotes = 0
        self.heading = False
        self.rows: list[str] = []
        self.row: list[str] = []
        self.cell = self.header_cell = False
        self.prev_in_list = False

    def render(self, md: str) -> str:
        for token in _PARSER.parse(md or ""):
            self._block(token)
        return "".join(self.parts).strip()

    def _block(self, token: Token) -> None:
        kind, style = token.type, self.style
        if kind in ("bullet_list_open", "ordered_list_open"):
            self.lists.append([kind, int(token.attrGet("start") or 1)])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            self.lists.pop()
        elif kind == "list_item_open":
            current = self.lists[-1]
            if current[0] == "ordered_list_open":
                self.marker, current[1] = f"{current[1]}. ", current[1] + 1
            else:
                self.marker = style.bullets[min(len(self.lists), len(style.bullets)) - 1] + " "
        elif kind == "blockquote_open":
            self.quotes += 1
        elif kind == "blockquote_close":
            self.quotes -= 1
        elif kind == "heading_open":
            self.heading = True
        elif kind == "heading_close":
            self.heading = False
        elif kind == "tr_open":
            self.row = []
        elif kind == "tr_close":
            self.rows.append(style.cell_sep.join(self.row))
        elif kind == "table_close":
            self._leaf("\n".join(self.rows))
            self.rows = []
        elif kind == "inline":
            text = self._inline(token.children or [])
            if self.cell:
                self.row.append(style.header_cell(text) if self.header_cell else text)
            else:
                self._leaf(style.heading(text) if self.heading else text)
        elif kind in ("fence", "code_block"):
            self._leaf(style.fence(token.content.rstrip("\n")))
        elif kind == "hr":
            self._leaf(style.rule)
        elif kind in ("th_open", "td_open"):
            self.cell, self.header_cell = True, kind == "th_open"
        elif kind in ("th_close", "td_close"):
            self.cell = False

    def _leaf(self, text: str) -> None:
        if not text.strip():
            return
        depth = len(self.lists)
        indent = self.style.indent * max(0, depth - 1)
        if self.marker is not None:
            first, rest = indent + self.marker, indent + " " * len(self.marker)
            self.marker = None
        elif depth:
            first = rest = indent + " " * 3  # a second paragraph in a list item
        else:
            first = rest = ""
        quote = self.style.quote * self.quotes
        lines = text.split("\n")
        block = "\n".join(quote + (first if i == 0 else rest) + line for i, line in enumerate(lines))
        if self.parts:
            self.parts.append("\n" if depth and self.prev_in_list else "\n\n")
        self.parts.append(block)
        self.prev_in_list = bool(depth)

    def _inline(self, children: list[Token]) -> str:
        style, out, i = self.style, [], 0
        # A heading is bold already: bold inside it would close the heading's own mark.
        marks = {"strong": "" if self.heading else style.strong, "em": style.em, "s": style.strike}
        while i < len(children):
            tok = children[i]
            kind = tok.type
            if kind == "text":
                out.append(style.escape(tok.content))
            elif kind == "softbreak":
                out.append(" ")
            elif kind == "hardbreak":
                out.append("\n")
            elif kind == "code_inline":
                out.append(style.code + style.escape(tok.content) + style.code)
            elif kind.endswith(("_open", "_close")) and kind.rsplit("_", 1)[0] in marks:
                out.append(marks[kind.rsplit("_", 1)[0]])
            elif kind == "link_open":
                end = _closing(children, i)
                label = _plain(children[i + 1:end])
                out.append(style.link(str(tok.attrGet("href") or ""), label))
                i = end
            elif kind == "image":
                label = _plain(tok.children or []) or "image"
                out.append(style.link(str(tok.attrGet("src") or ""), label))
            else:  # anything else a future rule adds: its text, escaped
                out.append(style.escape(tok.content))
            i += 1
        return "".join(out)


def _closing(children: list[Token], start: int) -> int:
    depth = 0
    for at in range(start, len(children)):
        depth += children[at].nesting
        if depth == 0:
            return at
    return len(children) - 1


def _plain(children: list[Token]) -> str:
    """A link's label as plain text: its words, without emphasis."""
    words = []
    for tok in children:
        if tok.type in ("text", "code_inline"):
            words.append(tok.content)
        elif tok.type in ("softbreak", "hardbreak"):
            words.append(" ")
        elif tok.type == "image":
            words.append(_plain(tok.children or []))
    return "".join(words).strip()
