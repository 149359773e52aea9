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


@pytest.fixture
def pg_url(pg_server_or_reason: PgServer | str) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database for this test; skipped without a server."""
    if isinstance(pg_server_or_reason, str):
        pytest.skip(pg_server_or_reason)
    name, url = pg_server_or_reason.create_database()
    yield url
    pg_server_or_reason.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """What `open_store` takes, once per backend: a new SQLite file's path, or a new PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "state" / "db.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url
