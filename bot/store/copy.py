"""Copy a SQLite home's store into PostgreSQL (`deskhand store copy --to URL`, bot/store_cli.py).

Every table of the SQLite file is copied, row for row and ids kept, into a PostgreSQL database
that `PgStore` has just migrated to the same schema; `_migrations` is not copied (the target
records its own). The source is read in one read transaction, so the copy is one consistent
snapshot even while Deskhand is writing to the file, and written in one transaction, so a
failed copy leaves the target as it was. Rows travel in batches (`COPY … FROM STDIN`), in
rowid order, so the inbox's insertion counter (`seq`) keeps SQLite's order. Identity columns
are then moved past the highest id copied, so new rows never collide with copied ones.

A target that already holds rows is refused; with `force=True` its tables are emptied first.
Afterwards each table's row count is read back from both sides (`TableCount`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.store.postgres import PgStore
from bot.store.sqlite import Store

BATCH_ROWS = 1000


class CopyRefused(Exception):
    """The copy did not start: no source file, different schemas, or a target holding rows."""


@dataclass(frozen=True)
class TableCount:
    table: str
    source: int
    copied: int

    @property
    def ok(self) -> bool:
        return self.source == self.copied


def _source_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                        " AND name != '_migrations' ORDER BY name").fetchall()
    return [name for (name,) in rows]


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")').fetchall()]


async def _target_columns(pg: PgStore) -> dict[str, set[str]]:
    rows = await pg._rows("SELECT table_name, column_name FROM information_schema.columns"
                          " WHERE table_schema = current_schema()")
    tables: dict[str, set[str]] = {}
    for row in rows:
        tables.setdefault(row["table_name"], set()).add(row["column_name"])
    return tables


async def _held_rows(pg: PgStore, tables: list[str]) -> dict[str, int]:
    held = {}
    for table in tables:
        row = await pg._row(f'SELECT count(*) AS n FROM "{table}"')
        if row["n"]:
            held[table] = row["n"]
    return held


async def copy_to_postgres(sqlite_path: Path, url: str, *, force: bool = False, batch_rows: int = BATCH_ROWS,
                           on_table: Callable[[str, int], None] | None = None) -> list[TableCount]:
    """Copy the SQLite store at `sqlite_path` into the (empty) PostgreSQL database at `url`.
    `on_table(name, rows)` is called as each table is done. Raises `CopyRefused` before
    writing anything when the copy cannot be made."""
    if not Path(sqlite_path).is_file():
        raise CopyRefused(f"no SQLite store at {sqlite_path}")
    source = Store(sqlite_path)  # applies any migration the file lacks, as every command does
    try:
        async with PgStore(url, min_size=1, max_size=2) as pg:
            return await _copy(source.db.conn, pg, force=force, batch_rows=batch_rows, on_table=on_table)
    finally:
        source.close()


async def _copy(conn: sqlite3.Connection, pg: PgStore, *, force: bool, batch_rows: int,
                on_table: Callable[[str, int], None] | None) -> list[TableCount]:
    conn.execute("BEGIN")  # one snapshot of the file for the whole copy (WAL lets writers go on)
    try:
        source_schema = {name for (name,) in conn.execute("SELECT name FROM _migrations").fetchall()}
        target_schema = {row["name"] for row in await pg._rows("SELECT name FROM _migrations")}
        if source_schema != target_schema:
            raise CopyRefused(f"the schemas differ: only in SQLite {sorted(source_schema - target_schema)},"
                              f" only in PostgreSQL {sorted(target_schema - source_schema)}")
        tables = _source_tables(conn)
        target_columns = await _target_columns(pg)
        for table in tables:
            missing = set(_columns(conn, table)) - target_columns.get(table, set())
            if missing:
                raise CopyRefused(f"PostgreSQL's {table} has no column {', '.join(sorted(missing))}")
        held = await _held_rows(pg, tables)
        if held and not force:
            listed = ", ".join(f"{table} ({n})" for table, n in held.items())
            raise CopyRefused(f"the target database already holds rows: {listed}; --force empties it first")
        counts = {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}
        async with pg._transaction() as target:
            if held:
                await target.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY")
            for table in tables:
                written = await _copy_table(conn, target, table, batch_rows)
                if on_table is not None:
                    on_table(table, written)
    finally:
        conn.execute("COMMIT")
    return [TableCount(table, counts[table], (await pg._row(f'SELECT count(*) AS n FROM "{table}"'))["n"])
            for table in tables]


async def _copy_table(conn: sqlite3.Connection, target, table: str, batch_rows: int) -> int:
    columns = _columns(conn, table)
    names = ", ".join(f'"{c}"' for c in columns)
    copied, last_rowid = 0, None
    async with target.cursor() as cur:
        async with cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
            while True:
                if last_rowid is None:
                    batch = conn.execute(f'SELECT rowid, {names} FROM "{table}" ORDER BY rowid LIMIT ?',
                                         [batch_rows]).fetchall()
                else:
                    batch = conn.execute(f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ?'
                                         " ORDER BY rowid LIMIT ?", [last_rowid, batch_rows]).fetchall()
                if not batch:
                    break
                for row in batch:
                    await copy.write_row(row[1:])
                copied += len(batch)
                last_rowid = batch[-1][0]
        # Ids were copied as they were: move each identity column's counter past the highest.
        await cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                          " AND table_name = %s AND is_identity = 'YES'", [table])
        for identity in [row["column_name"] for row in await cur.fetchall()]:
            await cur.execute(
                f'SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max("{identity}"), 1),'
                f' max("{identity}") IS NOT NULL) FROM "{table}"', [f'"{table}"', identity])
    return copied


__all__ = ["copy_to_postgres", "CopyRefused", "TableCount", "BATCH_ROWS"]
