"""What the one store implementation (sql_store.py) needs from a database: the places where SQLite and
PostgreSQL truly differ, each answered once per database (sqlite.py, postgres.py).

- Transactions: SQLite has one connection and one writer (`BEGIN IMMEDIATE`); PostgreSQL a pool, row locks,
  READ COMMITTED writes and read-only snapshot reads, and a retry when it broke a deadlock.
- Time: the store's now. SQLite's is this box's clock; PostgreSQL's is the database's (`now()`), one clock for
  every replica. Stored timestamps come back as text from SQLite, as datetimes from PostgreSQL (`when`).
- The fence: a fenced transaction's first step reads the leadership epoch, atomically with the change it
  guards (SQLite: inside the single writer's transaction; PostgreSQL: `FOR SHARE`, which a takeover waits on).
- Batch insert of events and claiming (the hot paths: VALUES in chunks and select-then-update on SQLite,
  `unnest` and `FOR UPDATE SKIP LOCKED` on PostgreSQL), leadership (once per start vs an advisory lock), numbering
  under a lock, schema and migrations, backup, size on disk and giving space back, pruned payloads' rewrite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from revdaemon.errors import Fenced
from revdaemon.store.records import Leadership, MinuteCount, NewEvent

T = TypeVar("T")
Row = Any  # sqlite3.Row or asyncpg.Record: both indexed by column name


class Tx(Protocol):
    """One transaction. Statements use named parameters (store/sql.py)."""

    async def fetch(self, sql: str, /, **params: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, /, **params: Any) -> Row | None: ...

    async def fetchval(self, sql: str, /, **params: Any) -> Any:
        """The first column of the first row, or None."""
        ...

    async def execute(self, sql: str, /, **params: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def execute_many(self, sql: str, rows: Sequence[dict[str, Any]]) -> None: ...

    async def now(self, epoch: int | None = None) -> datetime:
        """The store's now in this transaction. With `epoch`, this is the fence and must be the transaction's first
        step: Fenced unless `epoch` is the current leadership epoch, and then nothing is changed."""
        ...


class Dialect(Protocol):
    read_only: bool

    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[Tx]:
        """One transaction, shielded from cancellation; the driver's errors become the store's own (StoreBusy,
        StoreUnavailable). A read-only store's transactions are all reads."""
        ...

    async def retrying(self, body: Callable[[], Awaitable[T]]) -> T:
        """Run a whole transaction again when the database aborted it to break a deadlock between replicas."""
        ...

    def when(self, value: Any) -> datetime | None:
        """A stored timestamp as it comes back from the driver -> an aware datetime."""
        ...

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def has_table(self, tx: Tx, name: str) -> bool:
        """Whether the schema has `name` yet (a read-only open of a store not yet migrated reads it as it is)."""
        ...

    async def accepts_writes(self, tx: Tx) -> bool:
        """False on a database that answers reads but takes no write (a PostgreSQL hot standby)."""
        ...

    async def insert_events(self, tx: Tx, events: Sequence[NewEvent], now: datetime) -> set[str]:
        """Insert new events in arrival order, skipping known keys; the keys inserted."""
        ...

    async def claim(self, tx: Tx, *, worker: str, limit: int, newest: int, until: datetime, now: datetime,
                    mapping_version: int | None, epoch: int | None) -> list[Row]:
        """Claim due events, and claims whose lease ran out or whose epoch is older: the `newest` most recently due,
        and the oldest for the rest of `limit`; the rows as claimed, in (next_attempt_at, id) order."""
        ...

    async def lock_for_numbering(self, tx: Tx, table: str) -> None:
        """Make numbering `max + 1` in `table` safe against another transaction doing the same."""
        ...

    async def finished_per_minute(self, tx: Tx, since: datetime) -> list[MinuteCount]: ...

    async def tombstone_payloads(self, tx: Tx, rows: Sequence[Row], tombstone: str) -> int:
        """Replace these done events' payloads with `tombstone`, everything else unchanged; how many changed."""
        ...

    async def size_on_disk(self, tx: Tx) -> tuple[int, int | None]:
        """The store's size in bytes, and of that what is free for reuse (None where unknown)."""
        ...

    async def reclaim_space(self) -> None: ...

    async def backup(self, destination: Path) -> None: ...

    async def try_lead(self, replica_id: str) -> Leadership | None: ...


def check_fence(epoch: int, row: Row | None, when: Callable[[Any], datetime | None]) -> None:
    """Raise Fenced unless the leadership row `row` (None: no row yet) is at `epoch`."""
    current = int(row["epoch"]) if row is not None else 0
    if current == epoch:
        return
    since = when(row["since"]) if row is not None else None
    who = f"{row['replica_id']} leads since {since.isoformat() if since else '?'}" \
        if row is not None and row["replica_id"] else "none leads"
    raise Fenced(f"leadership epoch {epoch} is over: it is {current} now ({who}); nothing was changed")
