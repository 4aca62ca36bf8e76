"""Slack mrkdwn out: what Deskhand may post.

Any text that came from a person or a model is passed through `escape`, so a `<!channel>`
or `<@U…>` a customer typed, or a model repeated, is shown as text and never pings anyone.
Only links Deskhand builds itself (`link`) are real mrkdwn. (The way in, what a person
typed, is bot/handlers/plain_text.py.)
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

SECTION_LIMIT = 3000  # characters of text in one section block
TEXT_LIMIT = 40_000  # Slack truncates a message's text beyond this


def escape(text: str) -> str:
    """Escape the three characters mrkdwn gives a meaning to (`&` first)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, title: str) -> str:
    """A link Deskhand vouches for: `<url|title>`, or just the escaped title when the URL is
    not a plain http(s) address."""
    title = escape(title.replace("|", "/")) or "source"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return title
    safe = quote(url.strip(), safe=":/?#[]@!$&'()*+,;=%~-._")
    safe = safe.replace("&", "&amp;")  # in mrkdwn the URL is escaped too
    return f"<{safe}|{title}>"


def split(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Split escaped mrkdwn into pieces of at most `limit` characters, preferring paragraph,
    line, sentence and word boundaries, and never cutting an `&amp;`-style entity or a
    `<url|text>` link (unless one link alone is longer than `limit`)."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut(rest, limit)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _cut(text: str, limit: int) -> int:
    window = text[:limit]
    for sep in ("\n\n", "\n", ". ", " "):
        at = window.rfind(sep)
        while at >= limit // 2 and _in_token(window, at):
            at = window.rfind(sep, 0, at)  # a space inside `<url|two words>` is no boundary
        if at >= limit // 2:
            return at + len(sep)
    if _in_token(window, limit) and (start := window.rfind("<")) > 0:
        return start
    amp = window.rfind("&", limit - 6)
    return amp if amp > 0 and ";" not in window[amp:] else limit


def _in_token(text: str, at: int) -> bool:
    """Whether position `at` is inside a `<…>` link or mention. In escaped mrkdwn every `<`
    opens one, since a literal `<` is `&lt;`."""
    return text.rfind("<", 0, at) > text.rfind(">", 0, at)


def truncate(text: str, limit: int, marker: str = "…") -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - len(marker)]
    if _in_token(cut, len(cut)):
        cut = cut[: cut.rfind("<")]  # never half a link
    amp = cut.rfind("&", len(cut) - 6)
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + marker
