"""`deskhand mail parse`: prints what the bridge read, sends nothing."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mailbridge.cli import mail_app

DATA = Path(__file__).parent / "data" / "mail"
runner = CliRunner()


def test_parse_prints_the_normalised_message():
    result = runner.invoke(mail_app, ["parse", str(DATA / "forwards" / "outlook_forward.eml")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "From:" in out and "alex@shop.example" in out
    assert "Original sender:  Renée Dupont <renee.dupont@example.fr>" in out
    assert "Original subject: Wrong size delivered" in out
    assert "--- text ---\nFYI, customer asking about an exchange." in out
    assert "--- forwarded message ---" in out and "Can I exchange it?" in out
    assert "--- quoted text removed" in out
    assert "Thread keys:" in out and "Flags:" in out


def test_parse_json():
    result = runner.invoke(mail_app, ["parse", "--json", str(DATA / "forwards" / "rfc822_attached_forward.eml")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["original_sender"] == "luis.ortega@example.com"
    assert data["attachments"][0]["content_type"] == "message/rfc822"
    assert data["thread_keys"][0] == "<fwd-attached-0001@shop.example>"


def test_parse_reads_stdin_and_reports_flags():
    result = runner.invoke(mail_app, ["parse", "-"], input=b"Subject: hi\n\n")
    assert result.exit_code == 0
    assert "no_message_id" in result.output and "no_text" in result.output


def test_missing_file():
    result = runner.invoke(mail_app, ["parse", "/nonexistent/x.eml"])
    assert result.exit_code == 2


def test_help_has_a_summary_and_an_example():
    result = runner.invoke(mail_app, ["parse", "--help"])
    assert result.exit_code == 0
    assert "Parse one email" in result.output
    assert "Example:" in result.output and "deskhand mail parse" in result.output
    top = runner.invoke(mail_app, ["--help"])
    assert "The email sidecar" in top.output and "parse" in top.output and "outbox" in top.output
