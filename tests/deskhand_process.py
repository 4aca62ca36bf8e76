"""The real `deskhand run` process for end-to-end tests, the way a team starts it.

    env = run_env(emu, tmp_path / "home", DESKHAND_TENANTS_FILE=str(tenants))
    async with deskhand_run(env, tmp_path / "run.err") as proc:
        ...  # connected to the Slack emulator; push events, wait on observable state
    # stopped with SIGTERM, and it exited 0

`start_run` / `stop_run` are the two halves, for tests that restart the process.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

DESKHAND = str(Path(sys.executable).with_name("deskhand"))
CONNECT_TIMEOUT_S = 240  # the first start on a cold machine loads the encoder


def run_env(emu, home: Path, **extra: str) -> dict[str, str]:
    """`deskhand run`'s environment: a fresh `home`, the emulator's first workspace, no KB
    folder (a KB test names its own), and a free ops port."""
    return {**os.environ, "DESKHAND_HOME": str(home), "DESKHAND_KB_DIR": str(home.parent / "no-kb"),
            "SLACK_BOT_TOKEN": emu.team.bot_token, "SLACK_APP_TOKEN": emu.team.app_token,
            "DESKHAND_SLACK_API_URL": emu.api_url, "DESKHAND_OPS_PORT": "0", **extra}


async def start_run(env: dict[str, str], err: Path) -> asyncio.subprocess.Process:
    """Start `deskhand run` and return once it says it is connected to Slack. Its stderr is
    appended to `err`, so a restarted process keeps the earlier runs' lines."""
    with open(err, "ab") as errors:
        proc = await asyncio.create_subprocess_exec(DESKHAND, "run", env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=errors)
    line = await asyncio.wait_for(proc.stdout.readline(), CONNECT_TIMEOUT_S)  # printed once connected
    assert b"connected to Slack" in line, err.read_text()
    return proc


async def mail_port(proc: asyncio.subprocess.Process, err: Path) -> int:
    """The SMTP port a started `deskhand run` with mail on prints once it accepts mail."""
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), CONNECT_TIMEOUT_S)
        assert line, err.read_text()
        if match := re.search(rb"Mail: receiving on 127\.0\.0\.1:(\d+)", line):
            return int(match.group(1))


async def stop_run(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM, as a process manager stops it; returns the exit code."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 60)


@asynccontextmanager
async def deskhand_run(env: dict[str, str], err: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await start_run(env, err)
    try:
        yield proc
    finally:
        code = await stop_run(proc)
    assert code == 0, err.read_text()
