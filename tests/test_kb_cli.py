"""`deskhand kb reload|status|search` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from kb_loader.cli import kb_app

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(kb_app, name="kb")
    return root


@pytest.fixture
def kb_dir(tmp_path, monkeypatch):
    root = tmp_path / "articles"
    (root / "internal").mkdir(parents=True)
    (root / "refunds.md").write_text("---\ntitle: Refunds\nurl: https://help.example/refunds\n---\n# Refunds\n\n"
                                     "Refunds reach your card within 5-10 business days.\n")
    (root / "internal" / "approvals.md").write_text(
        "---\nallowed_channels: [slack_channel]\n---\n# Refund approvals\n\nTeam leads approve refunds over 250 EUR.\n")
    monkeypatch.setenv("DESKHAND_KB_DIR", str(root))
    return root


def invoke(app, *args):
    return runner.invoke(app, ["kb", *args], env={"COLUMNS": "120"})


def test_reload_status_search(app, kb_dir):
    before = invoke(app, "status", "--json")
    assert before.exit_code == 0 and json.loads(before.stdout)["state"] == "empty"

    result = invoke(app, "reload", "--tenant", "T_CLI")
    assert result.exit_code == 0, result.output
    assert "2 documents" in result.output and "Embedding" in result.output

    status = json.loads(invoke(app, "status", "--tenant", "T_CLI", "--json").stdout)
    assert status["state"] == "ready" and status["documents"] == 2 and status["chunks"] == 2
    assert status["last_run_ok"] is True and status["last_error"] == ""
    assert "ready" in invoke(app, "status", "--tenant", "T_CLI").output

    hits = json.loads(invoke(app, "search", "how long do refunds take", "--tenant", "T_CLI", "--json").stdout)
    assert hits[0]["citation"]["doc_id"] == "refunds" and hits[0]["citation"]["url"] == "https://help.example/refunds"

    dm = json.loads(invoke(app, "search", "who approves big refunds", "-t", "T_CLI", "--channel", "slack_dm",
                           "--json").stdout)
    assert [h["citation"]["doc_id"] for h in dm] == ["refunds"]
    text = invoke(app, "search", "who approves big refunds", "-t", "T_CLI", "-c", "slack_channel")
    assert text.exit_code == 0 and "Refund approvals" in text.output


def test_reload_reports_skipped_files(app, kb_dir):
    (kb_dir / "bad.md").write_bytes(b"\xff\xfe\x00\x00")
    result = invoke(app, "reload", str(kb_dir), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["errors"][0]["source"] == "bad.md" and report["docs"] == 2
    assert invoke(app, "reload", str(kb_dir), "--strict").exit_code == 2


def test_bad_input_gives_clear_errors(app, kb_dir, tmp_path):
    missing = invoke(app, "reload", str(tmp_path / "nope"))
    assert missing.exit_code == 1 and "not found" in missing.output
    bad_channel = invoke(app, "search", "refunds", "--channel", "fax")
    assert bad_channel.exit_code == 2 and "unknown channel" in bad_channel.output
    empty = invoke(app, "search", "refunds", "--tenant", "T_EMPTY")
    assert empty.exit_code == 0 and "not available" in empty.output


@pytest.mark.parametrize("command", ["reload", "status", "search"])
def test_help_has_summary_and_example(app, command):
    result = invoke(app, command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and "deskhand kb " + command in result.output
