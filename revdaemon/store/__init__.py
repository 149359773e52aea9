"""The state store: every durable fact the daemon keeps, behind one typed interface (`Store`).

Only this package contains SQL. `open_store` picks the backend from the settings.
"""

from __future__ import annotations

from pathlib import Path

from revdaemon.store.base import Store
from revdaemon.store.records import utcnow
from revdaemon.store.sqlite import Clock, SqliteStore


async def open_store(database_path: Path, *, clock: Clock = utcnow, read_only: bool = False) -> Store:
    """Open (creating and migrating as needed) the store at `database_path`; `read_only` changes nothing on
    disk and refuses a missing or older database instead of migrating it."""
    return await SqliteStore.open(database_path, clock=clock, read_only=read_only)


__all__ = ["Store", "open_store"]
