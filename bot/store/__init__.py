"""Persistence: the one place Deskhand's SQL lives.

    from bot.store.factory import open_store
    async with open_store(settings) as store:     # what the runtime builds: SQLite or PostgreSQL
        await store.inbox_add(envelope)           # typed: Store.inbox_add's own signature

| module            | holds                                                            |
|-------------------|------------------------------------------------------------------|
| `sqlite.py`       | `Store`: the SQLite file and the core tables                      |
| `async_store.py`  | `AsyncStore`: the typed async interface the rest of the code uses  |
| `migrations.py`   | the named, ordered schema migrations                             |
| `delivery.py`     | the outbox, email threads and the Slack mirror of email          |
| `mail_outbox.py`  | the mail bridge's `OutboxStore` over the shared outbox table     |
| `dead_letters.py` | the dead ends `deskhand dlq` handles: poison messages, outbox rows given up |
| `shadow.py`       | shadow-mode turns                                                |
| `feedback.py`     | a 👎's reasons                                                    |
| `memberships.py`  | the approver user groups' members, as Slack last returned them   |
| `rows.py`         | JSON and time helpers every table uses                           |
| `reports.py`      | the rows `deskhand report` is computed from (`ReportTables`)     |
| `probes.py`       | own-connection reads and probes: metrics gauges, `/readyz`, `deskhand check` |
| `factory.py`      | `open_store`: `AsyncStore(Store(...))`, or `PgStore` when `database_url` is set |
| `postgres.py`     | `PgStore`: the same methods on PostgreSQL (psycopg, a connection pool) |
| `pg_base.py`      | `PgBase`: the pool and the query helpers every PostgreSQL table uses |
| `pg_migrations.py`| the same named migrations in PostgreSQL's SQL, run under an advisory lock |
| `pg_delivery.py`  | `PgDeliveryTables`: the outbox (claimed with leases), email threads, the mirror |
| `pg_dead_letters.py` | the dead ends on PostgreSQL: poison messages, outbox rows given up |
| `pg_reports.py`   | `PgReportTables`: the report's reads on PostgreSQL               |
| `pg_shadow.py`    | shadow turns and the turns `deskhand replay` re-plans, on PostgreSQL |
| `copy.py`         | `deskhand store copy`: a SQLite home's tables into an empty PostgreSQL database |

Handlers never touch the store; the orchestrator, the hands and the surfaces' delivery code do,
through `AsyncStore` (or `PgStore`, which has its methods). Nothing outside this package writes
SQL against Deskhand's database (tests/test_store_boundary.py checks it).
"""

from bot.store.async_store import AsyncStore
from bot.store.sqlite import ANSWERED, DELIVERED, FAILED, PROCESSING, RECEIVED, SKIPPED, UNFINISHED, Store

__all__ = ["AsyncStore", "Store", "RECEIVED", "PROCESSING", "ANSWERED", "DELIVERED", "FAILED", "SKIPPED",
           "UNFINISHED"]
