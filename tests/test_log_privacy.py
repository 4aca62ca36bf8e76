"""Logs at INFO name no one: no email address, card number or secret in any line, third-party
loggers included, and third-party debug output (aiosmtpd's SMTP dialogue, bm25s) only at
DEBUG. On the real processes (`deskhand kb reload`, then `deskhand run` with mail on and a
real SMTP client) and the real logging chain (bot/logs.py)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
from pathlib import Path

from bot.config import FIXTURES
from bot.logs import configure_logging, get_logger
from bot.redact import mask_for_log, mask_sensitive
from tests.test_mail_bridge import email, relay, smtp_send  # noqa: F401 - `relay` is a fixture
from deskhand_process import DESKHAND, deskhand_run, mail_port
from tests.test_slack_app import ACME, TENANTS, emu  # noqa: F401 - `emu` is a fixture

CUSTOMER = "zelda.quist@example.org"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_deskhand_run_with_mail_logs_no_address_and_no_library_debug_at_info(tmp_path, relay, emu):
    home, log_file, kb, tenants = tmp_path / "home", tmp_path / "deskhand.log", tmp_path / "kb", tmp_path / "t.yml"
    shutil.copytree(FIXTURES / "kb", kb)
    tenants.write_text(TENANTS)
    env = {**os.environ, "DESKHAND_HOME": str(home), "DESKHAND_LOG_FILE": str(log_file),
           "DESKHAND_LOG_LEVEL": "INFO", "DESKHAND_KB_DIR": str(kb), "DESKHAND_SMTP_ENABLED": "1",
           "DESKHAND_SMTP_PORT": "0", "DESKHAND_RELAY_PORT": str(relay.port), "DESKHAND_MAIL_TENANT": ACME,
           "DESKHAND_TENANTS_FILE": str(tenants), "SLACK_BOT_TOKEN": emu.team.bot_token,
           "SLACK_APP_TOKEN": emu.team.app_token, "DESKHAND_SLACK_API_URL": emu.api_url,
           "DESKHAND_OPS_PORT": "0"}
    reload = await asyncio.create_subprocess_exec(DESKHAND, "kb", "reload", str(kb), "--tenant", ACME, env=env,
                                                  stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, reload_err = await asyncio.wait_for(reload.communicate(), 300)
    assert reload.returncode == 0, reload_err.decode()

    err = tmp_path / "run.err"
    async with deskhand_run(env, err) as proc:
        port = await mail_port(proc, err)
        raw = email("Where is order A-1042? My card is 4242 4242 4242 4242.", sender=f"Zelda Quist <{CUSTOMER}>")
        assert await asyncio.to_thread(smtp_send, port, raw, CUSTOMER) == {}
        await relay.wait_for(1)  # answered: the whole mail path has run and logged

    lines = log_lines(log_file)
    events = [line["event"] for line in lines]
    assert "kb.reloaded" in events and any(e.startswith("mail") for e in events), events
    text = log_file.read_text()
    assert CUSTOMER not in text and "4242 4242" not in text
    assert all(LEVELS[line["level"]] >= LEVELS["info"] for line in lines)  # no debug line in an INFO log
    assert not [line for line in lines if "bm25s" in str(line) or "Building index" in line["event"]]
    assert not [line for line in lines if "sender:" in line["event"] or ">> b'" in line["event"]]  # aiosmtpd's dialogue


def test_library_info_chatter_is_demoted_to_debug_and_addresses_are_shortened():
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        logging.getLogger("mail.log").info("%r sender: %s", ("127.0.0.1", 40000), CUSTOMER)
        logging.getLogger("mail.log").warning("%r unrecognised: %s", ("127.0.0.1", 40000), "HELO")
        logging.getLogger("bm25s").info("The query is empty.")
        logging.getLogger("mail.logger").info("not aiosmtpd's")  # a name that only starts alike
        get_logger("deskhand.mail").info("mail_received", sender=CUSTOMER, card="4242424242424242")
    finally:
        configure_logging("INFO", stream=io.StringIO())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["debug", "warning", "debug", "info", "info"]
    assert "z***@example.org" in lines[0]["event"] and CUSTOMER not in stream.getvalue()
    assert lines[4]["sender"] == "z***@example.org" and lines[4]["card"] == "[card]"

    quiet = io.StringIO()
    configure_logging("INFO", stream=quiet)
    logging.getLogger("mail.log").info("%r sender: %s", ("127.0.0.1", 40000), CUSTOMER)
    logging.getLogger("bm25s").debug("Building index from tokens")  # bm25s sets its own logger to DEBUG
    assert quiet.getvalue() == ""


def test_log_masking_shortens_addresses_and_stored_text_keeps_them():
    assert mask_for_log("from ada.lovelace@example.com, cc bob@x.co") == "from a***@example.com, cc b***@x.co"
    assert mask_for_log("Message-ID <q1@example.com>") == "Message-ID <q***@example.com>"
    assert mask_sensitive("ada@example.com") == "ada@example.com"  # stored text keeps addresses
