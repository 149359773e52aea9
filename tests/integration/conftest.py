from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from revdaemon.sandbox.runner import Sandbox, create_sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """Both simulators on ephemeral loopback ports, served from background threads."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=3).start_threads()
    try:
        yield box
    finally:
        box.close()
