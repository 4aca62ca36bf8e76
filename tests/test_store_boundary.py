"""Nothing outside bot/store/ talks to Deskhand's database: no `sqlite3` or `sqlite_utils`
import, and no SQL run (`.execute(…)`, `.executemany(…)`, `.executescript(…)`, sqlite-utils'
`.rows_where(…)`) anywhere else in the code Deskhand ships. The one exception is the demo
shop's backend (bot/hands/backends/sqlite_demo.py), which keeps the demo shop's own database,
not Deskhand's store. kb_loader keeps its index in Chroma and runs no SQL; it is checked too.
Read from the source with `ast`, so a comment or a docstring mentioning SQL does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "mailbridge", "kb_loader", "bench")
STORE = ROOT / "bot" / "store"
ALLOWED = {ROOT / "bot" / "hands" / "backends" / "sqlite_demo.py"}
DRIVERS = {"sqlite3", "sqlite_utils"}
SQL_CALLS = {"execute", "executemany", "executescript", "rows_where"}


def sql_outside_the_store(source: str) -> list[str]:
    """Where a module imports a database driver or runs SQL, as `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in DRIVERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in DRIVERS:
            found.append(f"{node.lineno}: from {node.module} import")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in SQL_CALLS):
            found.append(f"{node.lineno}: .{node.func.attr}(…)")
    return found


def shipped_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                  if STORE not in path.parents and path not in ALLOWED and ".venv" not in path.parts)


def test_no_module_outside_bot_store_touches_the_database():
    offenders = {str(path.relative_to(ROOT)): hits for path in shipped_modules()
                 if (hits := sql_outside_the_store(path.read_text(encoding="utf-8")))}
    assert offenders == {}, "SQL belongs in bot/store/: " + repr(offenders)


def test_the_check_sees_drivers_and_sql_but_not_words():
    source = '''
import sqlite3
from sqlite_utils import Database
"""a docstring saying db.execute("SELECT 1")"""
rows = db.execute("SELECT 1").fetchall()  # and a comment: conn.execute(...)
chroma.query(query_embeddings=[])
'''
    assert sql_outside_the_store(source) == ["2: import sqlite3", "3: from sqlite_utils import", "5: .execute(…)"]
    assert shipped_modules() and all(STORE not in p.parents for p in shipped_modules())
