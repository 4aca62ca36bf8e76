"""Which store a process uses: PostgreSQL when `database_url` is set, else the SQLite file.

    async with open_store(settings) as store:    # an AsyncStore or a PgStore, the same methods
        await store.inbox_add(envelope)

`store_location` is what the own-connection probes (probes.py: metrics gauges, `/readyz`,
`deskhand check`) are pointed at: the database URL, or the SQLite file's path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from bot.store.async_store import AsyncStore
from bot.store.sqlite import Store

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.store.postgres import PgStore

def store_location(settings: Settings) -> Path | str:
    return settings.database_url or settings.db_path


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[AsyncStore | PgStore]:
    """The store `settings` name, open (migrated) for the block and closed after it."""
    if settings.database_url:
        from bot.store.postgres import PgStore  # psycopg is only imported when it is used

        pg = PgStore(settings.database_url)
        await pg.open()
        try:
            yield pg
        finally:
            await pg.close()
        return
    store = AsyncStore(Store(settings.db_path))
    try:
        yield store
    finally:
        store.close()
