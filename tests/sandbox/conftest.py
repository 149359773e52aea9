"""Fixtures shared by the Salesforce simulator's tests: a running org and an API client logged in to it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sf_fixtures import Running, running


@pytest.fixture
def org() -> Iterator[Running]:
    with running() as org:
        yield org


@pytest.fixture
def api(org: Running) -> Iterator[httpx.Client]:
    with org.api() as client:
        yield client
