"""`PgBase`: the PostgreSQL store's connection pool and the helpers every table's SQL goes through.

`PgStore` (postgres.py) and its table mixins inherit it. Columns are TEXT, BIGINT and DOUBLE
PRECISION, exactly as the SQLite file has them, so a row comes back in the shapes the SQLite
`Store` returns: ISO-8601 text timestamps, JSON columns as text the caller `loads`, booleans
stored as 0/1 integers. Text columns compare bytewise (`COLLATE "C"`), as SQLite compares them:
ids built from Slack timestamps and ISO times sort the same on both.

Placeholders are psycopg's: `%s` (or `%(name)s`); a literal `%` in a statement with
parameters is written `%%`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bot.store.pg_migrations import apply_pg_migrations

Params = Sequence[Any] | dict[str, Any]

# The inbox's columns, without `seq`: the Postgres inbox has one more column, an insertion
# counter standing in for SQLite's rowid (the tie-break between messages received at the same
# instant). Read inbox rows with `SELECT {INBOX_COLUMNS} FROM inbox` so they have the SQLite keys.
INBOX_COLUMNS = ("id, tenant_id, channel, session_id, user_id, envelope, status, attempts, received_at,"
                 " updated_at, correlation_id, outcome, error, flags, raw_path")


class _BoolAsInteger(Dumper):
    """A Python bool is written as 0 or 1 into an integer column, as SQLite stores it."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


async def _configure(conn: psycopg.AsyncConnection) -> None:
    conn.adapters.register_dumper(bool, _BoolAsInteger)


class PgBase:
    """A pool of connections to one PostgreSQL database. `await open()` (or `async with`)
    connects and applies the migrations; `await close()` closes every connection."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10):
        self.url = url
        # Autocommit: a single statement commits on its own; `_transaction` wraps several.
        self.pool = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, configure=_configure,
            kwargs={"autocommit": True, "row_factory": dict_row}, name="deskhand-store")

    async def open(self) -> PgBase:
        await self.pool.open(wait=True)
        try:
            async with self.pool.connection() as conn:
                await apply_pg_migrations(conn)
        except BaseException:
            await self.pool.close()
            raise
        return self

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> PgBase:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _rows(self, sql: str, params: Params = ()) -> list[dict]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if cur.description else []

    async def _row(self, sql: str, params: Params = ()) -> dict | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone() if cur.description else None

    async def _execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """One connection inside one transaction: committed when the block ends, rolled back
        if it raises. Rows come back as dicts (`await (await conn.execute(...)).fetchall()`)."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                yield conn
