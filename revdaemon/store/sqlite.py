"""SQLite, the store's embedded database: one file, WAL, synchronous=FULL, one connection, one writer at a time.

Theory of operation: aiosqlite runs the connection on its own thread. Every transaction takes the dialect's lock
(`BEGIN IMMEDIATE` for writes, so another process sharing the file waits on the busy timeout instead of failing
half-way) and is shielded from cancellation: a worker cancelled at shutdown never leaves a transaction open or
half-recorded. WAL lets readers in other processes (the CLI's `status`) run while the daemon writes;
synchronous=FULL makes a commit durable before a webhook is acknowledged. Timestamps are fixed-width UTC text
(encoding.ts_text), which sorts in time order; the store's clock is this box's.

Fencing on one box: the leadership row is taken once per start (the daemon's first `try_lead`), so a second
daemon started on the same file by mistake takes the epoch and the first one's fenced steps are refused. The
check of the epoch and the change it guards share one `BEGIN IMMEDIATE` transaction, so they are atomic.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from revdaemon.errors import SchemaTooNew, StoreBusy, StoreMissing, StoreUnavailable
from revdaemon.store import rows as to_record
from revdaemon.store.dialect import check_fence
from revdaemon.store.encoding import dumps, ts_text
from revdaemon.store.migrations import MIGRATIONS, SCHEMA_VERSION
from revdaemon.store.records import Clock, Leadership, MinuteCount, NewEvent
from revdaemon.store.sql import for_sqlite

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000
INSERT_CHUNK = 500  # rows per INSERT: 7 parameters each stays far below SQLite's 32,766-variable limit


def _value(value: Any) -> Any:
    """A parameter as SQLite stores it: a timestamp as its fixed-width UTC text."""
    return ts_text(value) if isinstance(value, datetime) else value


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


class SqliteTx:
    def __init__(self, conn: aiosqlite.Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    async def fetch(self, sql: str, /, **params: Any) -> list[sqlite3.Row]:
        text, values = for_sqlite(sql).bind(params, _value)
        async with self._conn.execute(text, values) as cursor:
            return list(await cursor.fetchall())

    async def fetchrow(self, sql: str, /, **params: Any) -> sqlite3.Row | None:
        text, values = for_sqlite(sql).bind(params, _value)
        async with self._conn.execute(text, values) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def fetchval(self, sql: str, /, **params: Any) -> Any:
        row = await self.fetchrow(sql, **params)
        return row[0] if row is not None else None

    async def execute(self, sql: str, /, **params: Any) -> int:
        text, values = for_sqlite(sql).bind(params, _value)
        cursor = await self._conn.execute(text, values)
        return cursor.rowcount

    async def execute_many(self, sql: str, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            statement = for_sqlite(sql)
            await self._conn.executemany(statement.bind(rows[0], _value)[0],
                                         [statement.bind(row, _value)[1] for row in rows])

    async def now(self, epoch: int | None = None) -> datetime:
        if epoch is not None:
            # Inside BEGIN IMMEDIATE: no other process writes until this transaction ends.
            check_fence(epoch, await self.fetchrow("SELECT * FROM leadership"), when)
        return self._clock()


class SqliteDialect:
    """The store's database is one SQLite file. Open with `await SqliteDialect.open(path, ...)`."""

    def __init__(self, conn: aiosqlite.Connection, clock: Clock, path: Path, *, read_only: bool) -> None:
        self._conn = conn
        self._clock = clock
        self._path = path
        self._lock = anyio.Lock()
        self.read_only = read_only
        self._tx = SqliteTx(conn, clock)
        self._tables: set[str] = set()  # known to exist (a read-only open of an old file may lack some)
        self._leadership: Leadership | None = None  # this process's, once taken
        self._led = False  # taken once per start: not again after another process took it

    @classmethod
    async def open(cls, path: Path, *, clock: Clock, read_only: bool = False) -> SqliteDialect:
        """Open, creating and migrating as needed; `read_only` (for `status` and `check`) creates and
        migrates nothing and refuses a missing file."""
        if read_only and not await anyio.Path(path).exists():
            raise StoreMissing(f"no state database at {path} yet: the daemon creates it on its first start")
        if not read_only:
            try:
                await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(f"cannot create the state directory {path.parent}: "
                                       f"{exc.strerror or exc} (create it, writable by the daemon's user, or set "
                                       "state_dir)") from exc
        with _translated():
            target = f"file:{path}?mode=ro" if read_only else str(path)
            conn = await aiosqlite.connect(target, isolation_level=None, uri=read_only)
            conn.row_factory = sqlite3.Row
            try:
                await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if read_only:
                    await _check_version(conn)
                else:
                    await _enable_wal(conn)
                    await conn.execute("PRAGMA synchronous = FULL")
                    await conn.execute("PRAGMA foreign_keys = ON")
                    await _migrate(conn)
            except BaseException:
                await conn.close()
                raise
        return cls(conn, clock, path, read_only=read_only)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await self._conn.close()

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[SqliteTx]:
        write = write and not self.read_only
        async with self._lock:
            with anyio.CancelScope(shield=True), _translated():
                await self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._tx
                    await self._conn.execute("COMMIT")
                finally:
                    # Whatever failed (the body, or COMMIT itself on SQLITE_BUSY or a full disk), never leave a
                    # transaction open: every later call would fail with "cannot start a transaction".
                    if self._conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            await self._conn.execute("ROLLBACK")

    async def retrying(self, body: Callable[[], Awaitable[T]]) -> T:
        return await body()  # one writer: no deadlock to break

    def when(self, value: Any) -> datetime | None:
        return when(value)

    async def schema_version(self) -> int:
        async with self._lock:
            with _translated():
                return await _user_version(self._conn)

    async def has_table(self, tx: Any, name: str) -> bool:
        if name not in self._tables and await tx.fetchval(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name", name=name):
            self._tables.add(name)
        return name in self._tables

    async def accepts_writes(self, tx: Any) -> bool:
        return True

    async def insert_events(self, tx: Any, events: Sequence[NewEvent], now: datetime) -> set[str]:
        at = ts_text(now)
        rows = [(e.source, e.key, e.type, dumps(e.payload), at, at, at) for e in events]
        stored: set[str] = set()
        # One statement per chunk, not one per event: each statement is a round trip to aiosqlite's thread, and
        # under a webhook burst those round trips, not the fsync, are what cost.
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start:start + INSERT_CHUNK]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            async with self._conn.execute(
                f"""INSERT INTO inbox_events
                        (source, event_key, type, payload, next_attempt_at, received_at, updated_at)
                    VALUES {values}
                    ON CONFLICT (event_key) DO NOTHING
                    RETURNING event_key""",
                [value for row in chunk for value in row],
            ) as cursor:
                stored.update(row[0] for row in await cursor.fetchall())
        return stored

    async def claim(self, tx: Any, *, worker: str, limit: int, newest: int, until: datetime, now: datetime,
                    mapping_version: int | None, epoch: int | None) -> list[sqlite3.Row]:
        # Select, then update by id: cheaper than one UPDATE .. IN (SELECT ..) RETURNING on SQLite 3.40
        # (bench/store_layer_spike.md), and the one writer makes the two steps atomic.
        due = """SELECT id FROM inbox_events
                 WHERE (status = 'received' AND next_attempt_at <= :now)
                    OR (status = 'claimed' AND (claimed_until <= :now OR coalesce(claim_epoch, 0) < :epoch))"""
        latest = await tx.fetch(f"{due} ORDER BY next_attempt_at DESC, id DESC LIMIT :limit",
                                now=now, epoch=epoch or 0, limit=newest) if newest else []
        ids = [row["id"] for row in latest]
        if len(ids) == newest:  # fewer: every due event is among them
            taken = set(ids)
            oldest = await tx.fetch(f"{due} ORDER BY next_attempt_at, id LIMIT :limit", now=now, epoch=epoch or 0,
                                    limit=limit)
            ids += [row["id"] for row in oldest if row["id"] not in taken][: limit - len(ids)]
        if not ids:
            return []
        await tx.execute(
            """UPDATE inbox_events
               SET status = 'claimed', claimed_by = :worker, claimed_until = :until, attempts = attempts + 1,
                   updated_at = :now, mapping_version = coalesce(mapping_version, :mapping_version),
                   claim_epoch = :claim_epoch
               WHERE id IN :ids""",
            worker=worker, until=until, now=now, mapping_version=mapping_version, claim_epoch=epoch, ids=ids)
        claimed: list[sqlite3.Row] = await tx.fetch(
            "SELECT * FROM inbox_events WHERE id IN :ids ORDER BY next_attempt_at, id", ids=ids)
        return claimed

    async def lock_for_numbering(self, tx: Any, table: str) -> None:
        return None  # BEGIN IMMEDIATE holds the whole file

    async def finished_per_minute(self, tx: Any, since: datetime) -> list[MinuteCount]:
        rows = await tx.fetch(
            """SELECT substr(updated_at, 1, 16) AS minute, count(*) AS n FROM inbox_events
               WHERE status = 'done' AND updated_at >= :since GROUP BY minute ORDER BY minute""", since=since)
        return [MinuteCount(minute=datetime.fromisoformat(row["minute"] + ":00+00:00"), count=row["n"])
                for row in rows]

    async def tombstone_payloads(self, tx: Any, rows: Sequence[sqlite3.Row], tombstone: str) -> int:
        """The events written again with the tombstone for payload, ids and all else unchanged. Not an UPDATE:
        SQLite rebalances a page when rows are deleted from it, never when a row shrinks, so updated rows would
        leave every page as large as it was, its freed bytes unusable by new rows (which go to the end of the
        table). Deleted and inserted again, they pack into fewer pages and free the rest for new rows: the file
        stops growing by them."""
        # Intents, conflicts and dead letters name these ids: checked at commit, when the rows are back.
        await self._conn.execute("PRAGMA defer_foreign_keys = ON")
        await tx.execute("DELETE FROM inbox_events WHERE id IN :ids", ids=[row["id"] for row in rows])
        columns = list(rows[0].keys())
        await self._conn.executemany(
            f"INSERT INTO inbox_events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [[tombstone if column == "payload" else row[column] for column in columns] for row in rows])
        return len(rows)

    async def size_on_disk(self, tx: Any) -> tuple[int, int | None]:
        page_size = await tx.fetchval("PRAGMA page_size")
        free_pages = await tx.fetchval("PRAGMA freelist_count")
        size = 0
        for part in (self._path, self._path.with_name(self._path.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                size += (await anyio.Path(part).stat()).st_size
        return size, int(free_pages) * int(page_size) if free_pages is not None and page_size else None

    async def reclaim_space(self) -> None:
        """VACUUM: the file is written again without its free pages (it needs about its own size free on the disk
        meanwhile, and holds the write lock throughout: the daemon's writes wait); then the WAL, which carried the
        copy, is emptied."""
        async with self._lock:
            with anyio.CancelScope(shield=True), _translated():
                await self._conn.execute("VACUUM")
                await self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def backup(self, destination: Path) -> None:
        """A consistent copy of the whole database while the daemon runs (SQLite's online backup API)."""
        await anyio.Path(destination.parent).mkdir(parents=True, exist_ok=True)
        async with self._lock:
            with _translated():
                target = await aiosqlite.connect(str(destination))
                try:
                    await self._conn.backup(target)
                finally:
                    await target.close()

    async def try_lead(self, replica_id: str) -> Leadership | None:
        """One box, one daemon: the first call of this process takes the epoch; later calls keep it while the file
        still names it (a second daemon on the same file takes it for good, and this one stays on standby)."""
        if self.read_only or (self._led and self._leadership is None):
            return None
        async with self.transaction(write=self._leadership is None) as tx:
            if self._leadership is None:
                await tx.execute("UPDATE leadership SET epoch = epoch + 1, replica_id = :id, since = :now",
                                 id=replica_id, now=await tx.now())
            current = to_record.leadership(await tx.fetchrow("SELECT * FROM leadership"), when)
        if self._leadership is None:
            self._leadership, self._led = current, True
        elif current is None or current.epoch != self._leadership.epoch:
            self._leadership = None
        return self._leadership


# --- schema -----------------------------------------------------------------------------------------


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _enable_wal(conn: aiosqlite.Connection) -> None:
    """Switch to WAL. The switch needs the file to itself and does not wait on the busy timeout, so while
    another process opens the same new file it is retried for a while instead of failing at once."""
    deadline = anyio.current_time() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or anyio.current_time() > deadline:
                raise
            await anyio.sleep(0.05)


async def _check_version(conn: aiosqlite.Connection) -> int:
    current = await _user_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the state database is at schema version {current}, newer than this revdaemon "
            f"(which knows up to {SCHEMA_VERSION}); run the newer version or restore a backup"
        )
    return current


async def _migrate(conn: aiosqlite.Connection) -> None:
    await _check_version(conn)
    while True:
        # The version is read again under the write lock: two processes opening a new file at once must
        # not both apply the same migration.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            current = await _check_version(conn)
            if current >= SCHEMA_VERSION:
                await conn.execute("COMMIT")
                return
            for statement in _statements(MIGRATIONS[current].sqlite or ""):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {current + 1}")
            await conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    # Migrations hold no string literals with semicolons, so a split on ';' is exact here.
    return [part.strip() for part in script.split(";") if part.strip()]


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """sqlite3's errors become the store's own, so nothing above store/ knows the database."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreBusy(f"the state database stayed locked by another process: {exc}") from exc
        raise StoreUnavailable(f"the state database failed: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(f"the state database is unusable: {exc}") from exc

