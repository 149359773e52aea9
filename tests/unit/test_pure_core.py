"""The sans-I/O line (style.md §1): the pure core imports nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "revdaemon"
PURE = ["domain", "mapping", "flows"]
PURE_FILES = ["connectors/salesforce_wire.py", "connectors/nue_wire.py", "connectors/wire_json.py"]
FORBIDDEN = ("httpx", "aiosqlite", "sqlite3", "anyio", "asyncio", "structlog", "revdaemon.engine",
             "revdaemon.store", "revdaemon.connectors.salesforce", "revdaemon.connectors.nue",
             "revdaemon.listener", "socket", "requests")


def pure_files() -> list[Path]:
    files = [f for package in PURE if (ROOT / package).is_dir() for f in (ROOT / package).rglob("*.py")]
    return files + [ROOT / f for f in PURE_FILES]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_there_is_a_pure_core() -> None:
    """The scan below has files to look at."""
    assert len(pure_files()) >= 6


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_io_imports(path: Path) -> None:
    """A pure module imports no network, database, event-loop or logging library."""
    bad = {name for name in imported(path) for forbidden in FORBIDDEN
           if name == forbidden or name.startswith(forbidden + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"
