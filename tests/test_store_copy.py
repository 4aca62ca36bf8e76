"""`deskhand store copy --to URL`: a SQLite home with real turns in it, copied into PostgreSQL,
holds the same rows there, and Deskhand pointed at the copy reads the history and goes on."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import psycopg
from typer.testing import CliRunner

from bot.cli import app
from bot.config import load_settings
from bot.contracts import Channel, MessageEnvelope

runner = CliRunner()


def ask(*args: str) -> dict:
    result = runner.invoke(app, ["ask", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def sqlite_rows(path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()


def postgres_rows(url: str, table: str, columns: list[str]) -> list[tuple]:
    order = "seq" if table == "inbox" else ", ".join(f'"{c}"' for c in columns)
    with psycopg.connect(url) as conn:
        return conn.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in columns)} FROM "{table}"'
                            f" ORDER BY {order}").fetchall()


def test_a_home_copied_into_postgres_has_the_same_rows_and_deskhand_reads_it(pg_url, monkeypatch):
    first = ask("where is order A-1042?")
    ask("A-1042 again please", "--session", first["envelope"]["session_id"])
    refund = ask("I want a refund for A-1120", "--user", "U_ADA")
    assert refund["pending_action_id"]
    settings = load_settings()

    copied = runner.invoke(app, ["store", "copy", "--to", pg_url, "--batch", "2"])  # small batches: many rounds
    assert copied.exit_code == 0, copied.output
    assert "all counts match" in copied.output

    with sqlite3.connect(settings.db_path) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name != '_migrations' ORDER BY name")]
        columns = {t: [row[1] for row in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}
    assert {"inbox", "messages", "sessions", "traces", "tool_calls", "pending_actions"} <= set(tables)
    for table in tables:
        source = sqlite_rows(settings.db_path, table)
        target = postgres_rows(pg_url, table, columns[table])
        if table != "inbox":  # the inbox is compared in its stored order; the rest as sets of rows
            source, target = sorted(source, key=repr), sorted(target, key=repr)
        assert target == source, table
        assert f"{table} " in copied.output
    assert len(sqlite_rows(settings.db_path, "messages")) == 6

    # Deskhand pointed at the copy: the conversation's history is there, and a new turn
    # continues it with fresh ids (the identity counters moved past the copied ones).
    monkeypatch.setenv("DESKHAND_DATABASE_URL", pg_url)
    follow_up = ask("and where is A-1042 now?", "--session", first["envelope"]["session_id"])
    assert "A-1042" in follow_up["reply"]
    with psycopg.connect(pg_url) as conn:
        texts = [text for (text,) in conn.execute(
            "SELECT text FROM messages WHERE session_id = %s ORDER BY id", [first["envelope"]["session_id"]])]
    assert len(texts) == 6 and texts[0] == "where is order A-1042?" and texts[4] == "and where is A-1042 now?"
    assert len(sqlite_rows(settings.db_path, "messages")) == 6  # the SQLite file was left as it was


def test_open_runtime_on_the_copy_reads_the_history(pg_url):
    ask("where is order A-1042?")  # the CLI runs its own event loop: this test runs none of its own
    copied = runner.invoke(app, ["store", "copy", "--to", pg_url])
    assert copied.exit_code == 0, copied.output

    from bot.runtime import open_runtime

    async def on_the_copy() -> None:
        settings = load_settings().model_copy(update={"database_url": pg_url})
        async with open_runtime(settings) as rt:
            [answered] = await rt.store.replayable_turns(10)
            history = await rt.store.history(answered["session_id"])
            assert [h["role"] for h in history] == ["user", "assistant"]
            assert history[0]["text"] == "where is order A-1042?"
            env = MessageEnvelope(tenant_id=answered["tenant_id"], channel=Channel.cli, user_id="U1",
                                  session_id=answered["session_id"], text="thanks!")
            await rt.orchestrator.handle(env)
            assert len(await rt.store.history(answered["session_id"])) == 4

    asyncio.run(on_the_copy())


def test_a_target_holding_rows_is_refused_unless_forced(pg_url):
    ask("where is order A-1042?")
    assert runner.invoke(app, ["store", "copy", "--to", pg_url]).exit_code == 0
    ask("what payment methods do you accept")
    again = runner.invoke(app, ["store", "copy", "--to", pg_url])
    assert again.exit_code == 1 and "already holds rows" in again.output
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 1  # refused: nothing written
    forced = runner.invoke(app, ["store", "copy", "--to", pg_url, "--force"])
    assert forced.exit_code == 0, forced.output
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2


def test_copy_wants_a_postgres_url_and_an_existing_home(pg_url):
    assert runner.invoke(app, ["store", "copy", "--to", "sqlite:///x.db"]).exit_code == 2
    missing = runner.invoke(app, ["store", "copy", "--to", pg_url])
    assert missing.exit_code == 1 and "no SQLite store" in missing.output
