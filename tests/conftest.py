from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """revdaemon runs on anyio's asyncio backend only."""
    return "asyncio"
