"""Shared fixtures: a fresh data directory per test, real SQLite, the real demo shop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Nothing from the developer's environment leaks into a test.
    for key in list(os.environ):
        if key.startswith(("DESKHAND_", "SLACK_", "OPENAI_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DESKHAND_HOME", str(tmp_path / "home"))
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
