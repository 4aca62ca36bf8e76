"""`open_runtime` owns every resource from its first line: whatever fails to open, what was
already open is closed (the store's thread stops, no file under the home stays open)."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.runtime import open_runtime


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "deskhand-store" and t.is_alive()]


def open_files_under(folder: Path) -> list[str]:
    """Files under `folder` this process has open (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    if not fds.exists():
        pytest.skip("needs /proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while listing
            continue
        if target.startswith(str(folder.resolve())):
            found.append(target)
    return found


async def test_a_store_that_fails_to_open_leaves_no_file_open(tmp_path):
    settings = load_settings(home=tmp_path / "home")
    settings.db_path.write_bytes(b"this is not a database" * 100)

    with pytest.raises(sqlite3.DatabaseError):
        async with open_runtime(settings):
            pass

    assert open_files_under(settings.home) == []


async def test_a_shop_that_fails_to_open_closes_the_store_opened_before_it(tmp_path):
    settings = load_settings(home=tmp_path / "home")
    settings.shop_db_path.write_bytes(b"this is not a database" * 100)
    before = store_threads()

    with pytest.raises(sqlite3.DatabaseError):
        async with open_runtime(settings):
            pass

    assert store_threads() == before
    assert open_files_under(settings.home) == []


async def test_a_planner_that_fails_to_open_closes_the_store_and_the_shop(tmp_path):
    # A base URL the HTTP client refuses: the LLM planner fails as it is built, after the
    # store and the demo shop are open.
    settings = load_settings(home=tmp_path / "home", planner="llm", openai_base_url="http://[::1")
    before = store_threads()

    with pytest.raises(Exception, match="port"):
        async with open_runtime(settings):
            pass

    assert store_threads() == before
    assert open_files_under(settings.home) == []


async def test_a_failure_inside_the_lifespan_closes_everything(tmp_path):
    settings = load_settings(home=tmp_path / "home")
    before = store_threads()
    with pytest.raises(RuntimeError, match="boom"):
        async with open_runtime(settings) as rt:
            assert await rt.store.inbox_count() == 0
            raise RuntimeError("boom")

    assert store_threads() == before
    assert open_files_under(settings.home) == []


async def test_the_knowledge_base_is_closed_with_the_runtime(tmp_path):
    settings = load_settings(home=tmp_path / "home")
    async with open_runtime(settings) as rt:
        await rt.ensure_kb("T_DEMO")
        assert rt.kb is not None and rt.kb.status("T_DEMO").chunks > 0
        assert any("chroma" in path for path in open_files_under(settings.home))

    assert open_files_under(settings.home) == []
