"""Read a folder of help articles (Markdown, HTML, plain text) into `Document`s.

Front matter (YAML between `---` lines) may set `title`, `url`, `allowed_channels`,
`updated_at` and `id`. What is missing is derived: the title from the first heading (or the
HTML `<title>`, or the file name), the URL as `kb://<relative path>`, every channel, and the
file's modification time. A file that cannot be read (bad UTF-8, broken front matter, binary
content, an unknown channel name) is reported by name and skipped; the rest still load.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import frontmatter
import html2text
import yaml

from bot.contracts import Channel

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".txt": "text"}
ALL_CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)
MAX_FILE_BYTES = 5 * 1024 * 1024


@dataclass
class Document:
    doc_id: str
    title: str
    url: str
    source: str  # path relative to the KB folder, posix style
    allowed_channels: tuple[str, ...]
    updated_at: datetime
    text: str  # Markdown-ish body: headings are `#` lines
    format: str = "markdown"
    # What had to be repaired to read it: `invalid_utf8` (bad bytes read as U+FFFD).
    flags: tuple[str, ...] = ()


@dataclass
class LoadError:
    source: str
    error: str


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)  # files skipped
    warnings: list[LoadError] = field(default_factory=list)  # files indexed after a repair


class DocumentError(ValueError):
    """One file is unusable; the message says why."""


def iter_files(root: Path) -> Iterator[Path]:
    """Article files under `root`, recursively, in a stable order. Hidden entries are skipped."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in SUFFIXES:
            yield path


def load_folder(root: Path) -> LoadResult:
    root = Path(root)
    result = LoadResult()
    if not root.is_dir():
        result.errors.append(LoadError(str(root), "knowledge-base folder not found"))
        return result
    seen: dict[str, str] = {}
    for path in iter_files(root):
        source = path.relative_to(root).as_posix()
        try:
            doc = load_file(path, root)
        except DocumentError as exc:
            result.errors.append(LoadError(source, str(exc)))
            continue
        if doc.doc_id in seen:
            result.errors.append(LoadError(source, f"duplicate id {doc.doc_id!r} (also {seen[doc.doc_id]})"))
            continue
        seen[doc.doc_id] = source
        result.documents.append(doc)
        if "invalid_utf8" in doc.flags:
            result.warnings.append(LoadError(source, "not valid UTF-8: bad bytes read as U+FFFD"))
    return result


def doc_id_for(source: str) -> str:
    """The default document id: the relative path without its extension."""
    return source.rsplit(".", 1)[0] if "." in Path(source).name else source


def load_file(path: Path, root: Path) -> Document:
    source = path.relative_to(root).as_posix()
    kind = SUFFIXES[path.suffix.lower()]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise DocumentError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    if b"\x00" in raw[:8192]:
        raise DocumentError("binary content")
    flags: tuple[str, ...] = ()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # A stray byte (a Latin-1 "é") should not take the article out of the help centre:
        # it is read with U+FFFD and flagged, as at every other door (bot/utf8.py).
        text, flags = raw.decode("utf-8-sig", "replace"), ("invalid_utf8",)
    try:
        meta, body = _split_front_matter(text)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DocumentError(f"broken front matter: {first}") from None

    html_title = ""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if kind == "html":
        html_meta, html_title = _html_head(body)
        meta = {**html_meta, **meta}
        body = html_to_text(body)
    elif kind == "text":
        body = text_headings(body)
    body = body.strip()
    if not body:
        raise DocumentError("empty document")

    title = _str(meta.get("title")) or html_title or _first_heading(body) or _title_from_name(path)
    doc_id = _str(meta.get("id")) or doc_id_for(source)
    url = _str(meta.get("url")) or f"kb://{source}"
    channels = parse_channels(meta.get("allowed_channels"))
    updated = parse_updated_at(meta.get("updated_at"), path)
    return Document(doc_id=doc_id, title=title, url=url, source=source, allowed_channels=channels,
                    updated_at=updated, text=body, format=kind, flags=flags)


_TEXT_HEADING = re.compile(r"^[^\s\-*+#|>\d][^\n]{0,70}$")


def text_headings(body: str) -> str:
    """Plain text has no markup; a short line standing alone, without closing punctuation,
    reads as a heading. The first one becomes `#`, later ones `##`."""
    lines = body.split("\n")
    out, seen_heading = [], False
    for i, line in enumerate(lines):
        alone = (i == 0 or not lines[i - 1].strip()) and (i + 1 < len(lines) and not lines[i + 1].strip())
        stripped = line.strip()
        if alone and _TEXT_HEADING.match(stripped) and not stripped.endswith((".", "!", ",", ";", ":")):
            out.append(("## " if seen_heading else "# ") + stripped)
            seen_heading = True
        else:
            out.append(line)
    return "\n".join(out)


def _split_front_matter(text: str) -> tuple[dict, str]:
    if not text.lstrip("\ufeff").startswith("---"):
        return {}, text
    post = frontmatter.loads(text)
    if not isinstance(post.metadata, dict):
        raise ValueError("front matter is not a mapping")
    return dict(post.metadata), post.content


def _str(value: object) -> str:
    return str(value).strip() if value is not None else ""


def parse_channels(value: object) -> tuple[str, ...]:
    """`allowed_channels` from front matter: missing, "all" or "*" mean every channel.

    Unknown names are an error rather than ignored: a misspelt restriction on an internal
    article must not silently widen it to every channel.
    """
    if value is None:
        return ALL_CHANNELS
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        items = [_str(v) for v in value if _str(v)]
    else:
        raise DocumentError(f"allowed_channels must be a list or a string, not {type(value).__name__}")
    if any(v.lower() in ("all", "*") for v in items):
        return ALL_CHANNELS
    if not items:
        raise DocumentError("allowed_channels is empty")
    unknown = sorted(set(items) - set(ALL_CHANNELS))
    if unknown:
        raise DocumentError(f"unknown channel(s) in allowed_channels: {', '.join(unknown)}")
    return tuple(c for c in ALL_CHANNELS if c in items)


def parse_updated_at(value: object, path: Path) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif value:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise DocumentError(f"updated_at is not an ISO date: {value!r}") from None
    else:
        dt = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _first_heading(body: str) -> str:
    m = _HEADING.search(body)
    return m.group(1).strip() if m else ""


def _title_from_name(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize() or path.name


_META = re.compile(r"<meta\s+[^>]*?name\s*=\s*[\"']([^\"']+)[\"'][^>]*?content\s*=\s*[\"']([^\"']*)[\"']", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_HEAD = re.compile(r"<head[^>]*>.*?</head>", re.I | re.S)
_CHROME = re.compile(r"<(nav|header|footer|aside|script|style|noscript)\b[^>]*>.*?</\1\s*>", re.I | re.S)


def _html_head(body: str) -> tuple[dict, str]:
    """`<meta name="url|allowed_channels|updated_at" content="…">` and `<title>`."""
    meta = {}
    for name, content in _META.findall(body):
        key = name.strip().lower().removeprefix("deskhand:")
        if key in ("url", "allowed_channels", "updated_at", "id"):
            meta[key] = html.unescape(content)
    m = _TITLE.search(body)
    return meta, (html.unescape(" ".join(m.group(1).split())) if m else "")


def html_to_text(body: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: the chunker works on sentences
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_links = False
    converter.inline_links = True
    converter.unicode_snob = True
    # The <head> (title, meta) is metadata, and page chrome is not help content.
    return converter.handle(_CHROME.sub("", _HEAD.sub("", body)))
