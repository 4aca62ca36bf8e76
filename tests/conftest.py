"""Shared fixtures: a fresh data directory per test, real SQLite, the real demo shop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _user_folders(tmp_path_factory):
    """The whole run sees an empty HOME (and no XDG folders): the developer's own home and
    cache are never written, and anything a test writes there fails the run at the end.
    Deskhand's caches are one folder shared by every test (DESKHAND_CACHE_DIR), so the
    intent vectors are encoded once per run, not once per test home."""
    home = tmp_path_factory.mktemp("user-home")
    caches = tmp_path_factory.mktemp("deskhand-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        for key in [k for k in os.environ if k.startswith("XDG_")]:
            patch.delenv(key)
        yield caches
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], f"the tests wrote outside DESKHAND_HOME, in HOME: {written}"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, _user_folders):
    # Nothing from the developer's environment leaks into a test.
    for key in list(os.environ):
        if key.startswith(("DESKHAND_", "SLACK_", "OPENAI_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DESKHAND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DESKHAND_CACHE_DIR", str(_user_folders))
    # Every `deskhand run` a test starts takes a free ops port (it writes it to ops.port),
    # so tests running side by side never fight over the default one.
    monkeypatch.setenv("DESKHAND_OPS_PORT", "0")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path):
    return load_settings(home=tmp_path / "home")


@pytest.fixture
async def runtime(settings):
    from bot.runtime import open_runtime

    async with open_runtime(settings) as rt:
        yield rt


@pytest.fixture
async def shop():
    """A real HTTP shop backend on 127.0.0.1 (tests/shop_server.py), scripted per route."""
    from tests.shop_server import ShopServer

    server = await ShopServer().start()
    yield server
    server.release_hung()  # a request a test left hanging must not hold up the stop
    await server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole run (tests/postgres_server.py), started on
    first use; skipped, saying why, where PostgreSQL is not installed."""
    from tests.postgres_server import running_postgres

    try:
        with running_postgres() as server:
            yield server
    except LookupError as missing:
        pytest.skip(str(missing))


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of an empty PostgreSQL database of this test's own."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request, tmp_path):
    """The store's async interface on each backend: SQLite in tmp_path, then a fresh
    PostgreSQL database (skipped, saying why, where PostgreSQL is missing)."""
    from bot.store import AsyncStore, Store

    if request.param == "sqlite":
        sqlite = AsyncStore(Store(tmp_path / "d.db"))
        yield sqlite
        sqlite.close()
        return
    from bot.store.postgres import PgStore

    async with PgStore(request.getfixturevalue("pg_url")) as pg:
        yield pg
