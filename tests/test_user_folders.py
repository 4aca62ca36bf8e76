"""Deskhand writes only under DESKHAND_HOME: nothing lands in the user's home or cache folder.

A real `deskhand ask` runs in a process whose HOME is an empty folder and whose data
directory is elsewhere, with the semantic intent classifier on and a KB question (both load
the sentence encoder, build the intent vectors and index the help centre).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.deskhand_process import DESKHAND


def everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_turn_writes_nothing_outside_deskhand_home(tmp_path):
    user_home, deskhand_home = tmp_path / "user", tmp_path / "deskhand"
    user_home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DESKHAND_", "XDG_", "HF_", "SLACK_", "OPENAI_"))}
    env.update(HOME=str(user_home), DESKHAND_HOME=str(deskhand_home), DESKHAND_INTENT_SEMANTIC="true")

    done = subprocess.run([DESKHAND, "ask", "how long do refunds take?"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deskhand:")  # a reply, whatever it says
    assert everything_under(user_home) == []
    assert (deskhand_home / "chroma").is_dir()  # the KB was indexed
    assert list((deskhand_home / "cache").glob("intent-vectors-*.npy"))  # the cache is the home's
