"""Persistence: the one place Deskhand's SQL lives.

    from bot.store import AsyncStore, Store
    store = AsyncStore(Store(settings.db_path))   # what the runtime builds
    await store.inbox_add(envelope)               # typed: Store.inbox_add's own signature

| module            | holds                                                            |
|-------------------|------------------------------------------------------------------|
| `sqlite.py`       | `Store`: the SQLite file and the core tables                      |
| `async_store.py`  | `AsyncStore`: the typed async interface the rest of the code uses  |
| `migrations.py`   | the named, ordered schema migrations                             |
| `delivery.py`     | the outbox, email threads and the Slack mirror of email          |
| `mail_outbox.py`  | the mail bridge's `OutboxStore` over the shared outbox table     |
| `dead_letters.py` | poison messages (`deskhand dlq`)                                 |
| `shadow.py`       | shadow-mode turns                                                |
| `feedback.py`     | a 👎's reasons                                                    |
| `rows.py`         | JSON and time helpers every table uses                           |

Handlers never touch the store; the orchestrator, the hands and the surfaces' delivery code do,
through `AsyncStore`. Nothing outside this package writes SQL against Deskhand's database.
"""

from bot.store.async_store import AsyncStore
from bot.store.sqlite import ANSWERED, DELIVERED, FAILED, PROCESSING, RECEIVED, SKIPPED, UNFINISHED, Store

__all__ = ["AsyncStore", "Store", "RECEIVED", "PROCESSING", "ANSWERED", "DELIVERED", "FAILED", "SKIPPED",
           "UNFINISHED"]
