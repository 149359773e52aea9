from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_server import PgServer, pg_server


@pytest.fixture
def anyio_backend() -> str:
    """revdaemon runs on anyio's asyncio backend only."""
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server_or_reason() -> Iterator[PgServer | str]:
    """One PostgreSQL server for the session (tests/pg_server.py), or why there is none."""
    with pg_server() as server:
        yield server


def _fresh_database(pg_server_or_reason: PgServer | str) -> Iterator[str]:
    # Skipped, saying why, on a machine without Debian's postgresql (.ci/run installs it where it may).
    if isinstance(pg_server_or_reason, str):
        pytest.skip(pg_server_or_reason)
    name, url = pg_server_or_reason.create_database()
    yield url
    pg_server_or_reason.drop_database(name)


@pytest.fixture
def pg_url(pg_server_or_reason: PgServer | str) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database for this test; skipped without a server."""
    yield from _fresh_database(pg_server_or_reason)


@pytest.fixture
def second_pg_url(pg_server_or_reason: PgServer | str) -> Iterator[str]:
    """Another fresh PostgreSQL database, beside `pg_url`'s (a fresh schema to compare an upgraded one with)."""
    yield from _fresh_database(pg_server_or_reason)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """What `open_store` takes, once per backend: a new SQLite file's path, or a new PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "state" / "db.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url
