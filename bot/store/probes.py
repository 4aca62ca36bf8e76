"""Reads and probes of the database file on a connection of their own, for callers that must
not go through the store's thread: the metrics scrape (bot/metrics.py), `/readyz`
(bot/readiness.py) and `deskhand check` (bot/check.py). Each call opens, does one thing and
closes; all are blocking, so callers run them with `asyncio.to_thread`.

Each takes the store's location (bot/store/factory.py `store_location`): the SQLite file's path,
or a PostgreSQL URL, which they reach on a psycopg connection of their own.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

GAUGE_QUERIES = {
    "outbox": "SELECT channel, status, count(*) FROM outbox WHERE status IN ('pending', 'failed')"
              " GROUP BY channel, status",
    "pending": "SELECT tenant_id, count(*) FROM pending_actions WHERE status = 'pending' GROUP BY tenant_id",
    "dead": "SELECT tenant_id, count(*) FROM dead_letters WHERE status = 'dead' GROUP BY tenant_id",
}


class StoreUnavailable(Exception):
    """The database file cannot be opened, read or locked for writing (its message says why)."""


def store_gauges(location: Path | str) -> dict[str, list[tuple]]:
    """Outbox depth by channel and status (pending, and failed: given up), pending approvals
    and dead letters by tenant, read on a connection of their own (read-only for SQLite). An absent SQLite
    file is an empty database."""
    if is_database_url(location):
        with _pg_connect(str(location), 2.0) as conn:
            return {name: [tuple(row) for row in conn.execute(sql).fetchall()] for name, sql in GAUGE_QUERIES.items()}
    if not Path(location).exists():
        return {"outbox": [], "pending": [], "dead": []}
    conn = sqlite3.connect(f"file:{location}?mode=ro", uri=True, timeout=2.0)
    try:
        return {name: conn.execute(sql).fetchall() for name, sql in GAUGE_QUERIES.items()}
    finally:
        conn.close()


def take_write_lock(db_path: Path | str, timeout_s: float = 2.0) -> None:
    """Take and release SQLite's write lock on an existing database file (`/readyz`); on
    PostgreSQL, start a transaction that could write (a primary refuses it a transaction id
    only when it cannot take writes) and roll it back."""
    if is_database_url(db_path):
        with _pg_connect(str(db_path), timeout_s) as conn:
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT txid_current()")
        return
    conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, timeout=timeout_s, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def write_probe(db_path: Path | str, timeout_s: float) -> None:
    """Write to the database and roll the write back (`deskhand check`): the file can be
    created, locked and written (the PostgreSQL database reached and written). Raises
    `StoreUnavailable`."""
    if is_database_url(db_path):
        import psycopg

        try:
            with _pg_connect(str(db_path), timeout_s) as conn:
                with conn.transaction(force_rollback=True):
                    conn.execute("CREATE TABLE deskhand_check_probe (x INTEGER)")  # a real write, rolled back
        except psycopg.Error as exc:
            raise StoreUnavailable(str(exc).strip()) from exc
        return
    try:
        conn = sqlite3.connect(db_path, timeout=timeout_s, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE deskhand_check_probe (x INTEGER)")  # a real write, rolled back
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(str(exc)) from exc


def is_database_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def _pg_connect(url: str, timeout_s: float) -> Any:
    """A psycopg connection (autocommit) that gives up connecting, and any one statement,
    after about `timeout_s`."""
    import psycopg  # only where PostgreSQL is used

    conn = psycopg.connect(url, autocommit=True, connect_timeout=max(2, math.ceil(timeout_s)))
    conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
    return conn


def redact_url(url: str) -> str:
    """A database URL fit to print: its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
