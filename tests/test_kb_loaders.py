"""Reading the KB folder: front matter, derived metadata, HTML and text, broken files."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from bot.config import FIXTURES
from kb_loader.loaders import ALL_CHANNELS, load_folder


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_front_matter_sets_metadata(tmp_path):
    write(tmp_path, "returns.md", "---\ntitle: Returns\nurl: https://help.example/returns\n"
          "allowed_channels: [slack_channel, slack_thread]\nupdated_at: 2025-03-10\nid: returns-policy\n---\n"
          "# Our returns\n\nSend it back within 30 days.\n")
    [doc] = load_folder(tmp_path).documents
    assert doc.doc_id == "returns-policy"
    assert doc.title == "Returns"
    assert doc.url == "https://help.example/returns"
    assert doc.allowed_channels == ("slack_channel", "slack_thread")
    assert doc.updated_at == datetime(2025, 3, 10, tzinfo=timezone.utc)
    assert doc.text.startswith("# Our returns")


def test_missing_metadata_is_derived(tmp_path):
    path = write(tmp_path, "guides/delivery-times.md", "Intro line.\n\n## Germany\n\nOne to three days.\n")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    write(tmp_path, "faq.md", "# Frequently asked\n\nAnswers.\n")
    docs = {d.doc_id: d for d in load_folder(tmp_path).documents}
    guide = docs["guides/delivery-times"]
    assert guide.title == "Germany"  # first heading
    assert guide.url == "kb://guides/delivery-times.md"
    assert guide.allowed_channels == ALL_CHANNELS
    assert guide.updated_at == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    assert docs["faq"].title == "Frequently asked"
    write(tmp_path, "no-heading.md", "Just text.\n")
    assert {d.doc_id: d for d in load_folder(tmp_path).documents}["no-heading"].title == "No heading"


def test_html_and_text_articles(tmp_path):
    write(tmp_path, "invoices.html", "<html><head><title>Invoices</title>"
          "<meta name=\"url\" content=\"https://help.example/invoices\"></head><body><nav>Home | Help</nav>"
          "<h1>Invoices</h1><p>Download it from <b>Account</b>.</p><h2>Company details</h2>"
          "<p>Add your VAT ID first.</p><script>track()</script></body></html>")
    write(tmp_path, "news.txt", "Newsletter\n\nWe write weekly.\n\nHow to unsubscribe\n\nClick the link.\n")
    docs = {d.doc_id: d for d in load_folder(tmp_path).documents}
    html = docs["invoices"]
    assert html.title == "Invoices" and html.url == "https://help.example/invoices" and html.format == "html"
    assert "# Invoices" in html.text and "## Company details" in html.text
    assert "track()" not in html.text and "Home | Help" not in html.text
    text = docs["news"]
    assert text.title == "Newsletter" and text.format == "text"
    assert "## How to unsubscribe" in text.text


def test_broken_files_are_reported_and_skipped(tmp_path):
    write(tmp_path, "good.md", "# Good\n\nFine.\n")
    write(tmp_path, "latin1.md", "# Caf\xe9\n".encode("latin-1"))
    write(tmp_path, "broken-yaml.md", "---\ntitle: [unclosed\n---\nBody\n")
    write(tmp_path, "binary.txt", b"\x00\x01\x02PNG")
    write(tmp_path, "typo.md", "---\nallowed_channels: [slack-channel]\n---\n# Internal\n\nSecret.\n")
    write(tmp_path, "empty.md", "---\ntitle: Empty\n---\n")
    write(tmp_path, "image.png", b"\x89PNG")  # not an article: ignored, not an error
    write(tmp_path, ".hidden/notes.md", "# Hidden\n")
    result = load_folder(tmp_path)
    assert [d.doc_id for d in result.documents] == ["good", "latin1"]  # read with U+FFFD, flagged
    assert result.documents[1].flags == ("invalid_utf8",) and result.documents[1].title == "Caf\ufffd"
    assert [(w.source, "UTF-8" in w.error) for w in result.warnings] == [("latin1.md", True)]
    errors = {e.source: e.error for e in result.errors}
    assert set(errors) == {"broken-yaml.md", "binary.txt", "typo.md", "empty.md"}
    assert "front matter" in errors["broken-yaml.md"]
    assert "binary" in errors["binary.txt"]
    assert "slack-channel" in errors["typo.md"]  # a misspelt restriction never widens to all


def test_channel_values(tmp_path):
    write(tmp_path, "a.md", "---\nallowed_channels: all\n---\nA.\n")
    write(tmp_path, "b.md", "---\nallowed_channels: email, cli\n---\nB.\n")
    docs = {d.doc_id: d for d in load_folder(tmp_path).documents}
    assert docs["a"].allowed_channels == ALL_CHANNELS
    assert docs["b"].allowed_channels == ("email", "cli")


def test_demo_kb_loads_cleanly():
    result = load_folder(FIXTURES / "kb")
    assert result.errors == []
    assert len(result.documents) >= 15
    formats = {d.format for d in result.documents}
    assert formats == {"markdown", "html", "text"}
    restricted = [d for d in result.documents if d.allowed_channels != ALL_CHANNELS]
    assert [d.doc_id for d in restricted] == ["internal/refund-approvals"]
    assert all(d.url.startswith("https://") for d in result.documents)
