"""Config that fails fast (bot/config.py, bot/config_errors.py) and text that is not UTF-8 at
every door (bot/utf8.py): the real `deskhand` executable, real files, real email bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.config_errors import ConfigError
from bot.contracts import Channel, MessageEnvelope
from kb_loader.loaders import load_folder
from mailbridge.inbound import build_envelope
from mailbridge.parse import parse_message

DESKHAND = str(Path(sys.executable).with_name("deskhand"))
NOT_UTF8 = b"hi \xff\xfe A-1042"


def deskhand(*args: str | bytes, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([DESKHAND, *args], input=stdin, capture_output=True, timeout=240,
                          env={**os.environ, "DESKHAND_KB_DIR": "no-kb", **env})


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *needles: str) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("command", [["ask", "hi"], ["run"], ["plan"], ["kb", "status"],
                                     ["mail", "outbox"], ["check"]])
def test_a_missing_tenants_file_stops_every_command_with_exit_2(tmp_path, command):
    missing = tmp_path / "nope" / "tenants.yml"
    result = deskhand(*command, DESKHAND_TENANTS_FILE=str(missing))
    assert_one_line_exit_2(result, str(missing), "no such file")


def test_a_misspelt_key_names_the_file_the_tenant_and_the_nearest_key(tmp_path):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text("tenants:\n  T_ACME:\n    name: Acme\n    approver: [U1]\n")
    err = assert_one_line_exit_2(deskhand("ask", "hi", DESKHAND_TENANTS_FILE=str(tenants)),
                                 str(tenants), "T_ACME", "'approver'", "did you mean 'approvers'")


@pytest.mark.parametrize(("yaml_text", "needles"), [
    ("tenants:\n  T1:\n    shadowmode: true\n", ("T1", "'shadowmode'", "'shadow_mode'")),
    ("tenants:\n  T1:\n    forbiden_tools: [issue_refund]\n", ("'forbiden_tools'", "'forbidden_tools'")),
    ("tenants:\n  T1:\n    backend: {base_url: http://x, timeout: 3}\n", ("'backend.timeout'", "'timeout_s'")),
    ("tenant:\n  T1: {}\n", ("top-level key 'tenant'", "'tenants'")),
    ("tenants:\n  T1: [unclosed\n", ("not valid YAML",)),
    ("tenants:\n  T1:\n    pending_ttl_hours: -1\n", ("T1", "pending_ttl_hours")),
])
def test_every_broken_tenants_file_is_one_config_error(tmp_path, yaml_text, needles):
    tenants = tmp_path / "tenants.yml"
    tenants.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tenants_file=tenants)  # eager: no attribute needs touching
    message = str(caught.value)
    assert str(tenants) in message and "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_an_unreadable_tenants_file_is_a_config_error(tmp_path):
    tenants = tmp_path / "tenants.yml"
    tenants.write_bytes(b"tenants:\n  T1:\n    name: Caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tenants_file=tenants)


def test_an_invalid_environment_setting_is_exit_2_and_one_line():
    assert_one_line_exit_2(deskhand("ask", "hi", DESKHAND_PLANNER="bogus"), "DESKHAND_PLANNER", "bogus")


def test_the_demo_tenants_file_is_valid():
    assert "T_DEMO" in load_settings().tenants


# ---------------------------------------------------------------- UTF-8 at every door

def test_door_envelope_repairs_lone_surrogates_and_flags_them():
    env = MessageEnvelope(tenant_id="T", channel=Channel.cli, user_id="U", session_id="s",
                          text=NOT_UTF8.decode("utf-8", "surrogateescape") + " \ud800")
    assert env.text == "hi \ufffd\ufffd A-1042 \ufffd" and env.metadata == {"invalid_utf8": True}
    env.model_dump_json()  # the serialisation that used to raise PydanticSerializationError
    clean = MessageEnvelope(tenant_id="T", channel=Channel.cli, user_id="U", session_id="s", text="hi")
    assert "invalid_utf8" not in clean.metadata


def test_door_cli_argument(tmp_path):
    # argv bytes that are not UTF-8 arrive as surrogate escapes.
    result = deskhand("ask", "--json", os.fsdecode(NOT_UTF8))
    assert result.returncode == 0, result.stderr.decode()
    envelope = json.loads(result.stdout)["envelope"]
    assert envelope["text"] == "hi \ufffd\ufffd A-1042" and envelope["metadata"]["invalid_utf8"] is True


def test_door_plan_stdin_and_file(tmp_path):
    line = b'{"text": "' + NOT_UTF8 + b'"}\n' + b'{"text": "where is A-1042?"}\n'
    from_stdin = deskhand("plan", stdin=line)
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()
    plans = [json.loads(p) for p in from_stdin.stdout.decode().splitlines()]
    assert len(plans) == 2 and all("intent" in p for p in plans)
    assert "A-1042" in json.dumps(plans[0])
    (tmp_path / "lines.jsonl").write_bytes(line)
    from_file = deskhand("plan", str(tmp_path / "lines.jsonl"))
    assert from_file.returncode == 0 and from_file.stdout == from_stdin.stdout


@pytest.mark.parametrize("content_type", [b"Content-Type: text/plain; charset=utf-8\r\n", b""])
def test_door_email_body_with_a_lying_or_no_charset(content_type):
    raw = (b"From: ada@example.com\r\nTo: support@deskhand.example\r\nSubject: order\r\n"
           b"Message-ID: <lie@example.com>\r\n" + content_type + b"\r\n" + NOT_UTF8 + b"\r\n")
    parsed = parse_message(raw)
    assert "invalid_utf8" in parsed.flags and "A-1042" in parsed.text
    settings = load_settings()
    envelope = build_envelope(parsed, tenant_id="T_DEMO", policy=settings.policy("T_DEMO"),
                              mail_from=settings.mail_from, session_id="email:lie")
    assert "invalid_utf8" in envelope.metadata["flags"]
    envelope.model_dump_json()


def test_door_kb_folder_file_with_invalid_bytes(tmp_path):
    (tmp_path / "good.md").write_text("# Good\n\nFine.\n")
    (tmp_path / "cafe.md").write_bytes(b"# Caf\xe9 opening hours\n\nOpen " + NOT_UTF8 + b"\n")
    result = load_folder(tmp_path)  # the article stays in the help centre, repaired and flagged
    cafe = next(d for d in result.documents if d.doc_id == "cafe")
    assert cafe.flags == ("invalid_utf8",) and "hi \ufffd\ufffd A-1042" in cafe.text
    assert cafe.title == "Caf\ufffd opening hours"
    assert [w.source for w in result.warnings] == ["cafe.md"] and result.errors == []


async def test_door_kb_reload_indexes_a_repaired_article(tmp_path):
    from kb_loader.kb import KnowledgeBase

    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "cafe.md").write_bytes(b"# Caf\xe9 hours\n\nThe zebraquartz caf\xe9 opens at nine.\n")
    kb = KnowledgeBase(load_settings(kb_dir=tmp_path / "kb"))
    report = kb.reload("T_DEMO", tmp_path / "kb")
    assert report.docs == 1 and report.errors == []
    assert kb.search("T_DEMO", "zebraquartz")[0].citation.doc_id == "cafe"
