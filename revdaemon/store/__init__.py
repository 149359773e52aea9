"""The state store: every durable fact the daemon keeps, behind one typed interface (`Store`).

Only this package contains SQL: one implementation (sql_store.py) over two databases, each a dialect
(dialect.py: sqlite.py, postgres.py), with one list of schema versions (migrations.py). `open_store` picks the
database from what it is given: a path (or a `sqlite:///` URL) is a SQLite file on this box; a `postgresql://`
(or `postgres://`) URL is a PostgreSQL database that several replicas may share.
"""

from __future__ import annotations

from pathlib import Path

from revdaemon.errors import StoreError
from revdaemon.store.base import Store
from revdaemon.store.records import Clock, utcnow
from revdaemon.store.sql_store import SqlStore
from revdaemon.store.sqlite import SqliteDialect

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///path` URL: `sqlite:///state/db.sqlite3` is relative, `sqlite:////var/db` absolute
    (the usual reading of these URLs)."""
    if not url.startswith(SQLITE_SCHEME) or len(url) == len(SQLITE_SCHEME):
        raise ValueError("a SQLite store URL is sqlite:///<path to the file>")
    return Path(url.removeprefix(SQLITE_SCHEME))


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.lower().startswith(POSTGRES_SCHEMES)


def _sqlite_file(target: Path | str) -> Path:
    """The SQLite file `target` names; StoreError for a URL that is neither SQLite nor PostgreSQL."""
    if isinstance(target, Path):
        return target
    if target.lower().startswith("sqlite:"):
        try:
            return sqlite_path(target)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
    if "://" in target:
        # Never echo the text back: it may be a URL with a password in it.
        raise StoreError("a store URL is sqlite:///<path> or postgresql://...; this one is neither")
    return Path(target)  # a plain path given as text


async def open_store(target: Path | str, *, clock: Clock | None = None, read_only: bool = False) -> Store:
    """Open (creating and migrating as needed) the store at `target`: a SQLite file's path, a `sqlite:///path`
    URL, or a `postgresql://` URL. `read_only` changes nothing and refuses a store the daemon has not created
    yet instead of creating it. `clock` (tests): the store's notion of now; by default this box's for SQLite, the
    database's own for PostgreSQL (one clock for every replica)."""
    if is_postgres_url(target):
        from revdaemon.store.postgres import PostgresDialect  # asyncpg is loaded only for a PostgreSQL store

        assert isinstance(target, str)
        store = SqlStore(await PostgresDialect.open(target, clock=clock, read_only=read_only))
    else:
        store = SqlStore(await SqliteDialect.open(_sqlite_file(target), clock=clock or utcnow, read_only=read_only))
    if not read_only:
        try:
            await store.record_created_on()
        except BaseException:
            await store.close()
            raise
    return store


__all__ = ["Store", "is_postgres_url", "open_store", "sqlite_path"]
