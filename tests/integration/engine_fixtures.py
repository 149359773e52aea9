"""Building the engine's parts against the sandbox, for integration tests."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from revdaemon.config import ApiRate, NueSettings, SalesforceAuth, SalesforceSettings, Settings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine import executor as executor_module
from revdaemon.engine import lookups as lookups_module
from revdaemon.engine import worker as worker_module
from revdaemon.engine.executor import Executor
from revdaemon.engine.fencing import REQUEST_HOOKS
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.schema import SchemaGuard
from revdaemon.engine.sync_status import SyncStatus
from revdaemon.engine.worker import Worker
from revdaemon.flows.base import Flow
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.limits import ApiLimiter, DailyBudget, RetryPolicy
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store import Store, open_store
from revdaemon.store.records import Clock, NewEvent, utcnow


class FakeClock:
    """The one clock of the store and of a worker's pass (fake_engine_time); it moves only when a test says."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def reset(self) -> None:
        self.now = datetime.now(UTC)  # the simulators' today: flow 1's go-live cut-off is the store's first day

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fake_engine_time(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock that every module of a worker's pass reads (the worker's retry times, the executor's settle
    delays, the fetcher's window for revdaemon's recent writes); give it to the store too (`engine(clock=...)`).
    Leases, settle delays and windows of minutes then pass in an instant. The simulators keep real time."""
    fake = FakeClock()
    for module in (worker_module, executor_module, lookups_module):
        monkeypatch.setattr(module, "utcnow", fake)
    return fake


FAST_RETRY = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05, max_total=10)


@dataclass
class Engine:
    store: Store
    salesforce: SalesforceClient
    nue: NueClient
    executor: Executor
    worker: Worker
    schema: SchemaGuard | None = None


@asynccontextmanager
async def engine(sandbox: Sandbox, tmp_path: Path, *, flows: list[Flow] | None = None,
                 dry_run: bool = False, schema_guard: bool = False,
                 sync_status: SyncStatus | None = None, settle: timedelta = timedelta(0),
                 create_timeout_seconds: float = 90.0, clock: Clock = utcnow,
                 wrap_store: Callable[[Store], Store] | None = None) -> AsyncIterator[Engine]:
    """`settle`: how long a write of unknown outcome waits before its lookup (none by default: most tests
    leave an intent `sent` by hand to stand for a crash long ago). `clock`: the store's; `wrap_store`: what
    every part is given instead of the store itself (tests/faulty_store.py). The store is the file
    `tmp_path/engine.sqlite3`, so a second engine on the same `tmp_path` reopens it, as a restart would."""
    sf_info, nue_info = sandbox.info()["salesforce"], sandbox.info()["nue"]
    opened = await open_store(tmp_path / "engine.sqlite3", clock=clock)
    store = wrap_store(opened) if wrap_store is not None else opened
    async with httpx.AsyncClient(event_hooks=REQUEST_HOOKS) as http:  # as the daemon's: the fence's last check
        sf = SalesforceClient(
            SalesforceSettings(login_url=sf_info["login_url"], auth=SalesforceAuth.JWT,
                               client_id=sf_info["consumer_key"], username=sf_info["username"],
                               private_key_file=sf_info["private_key_file"],
                               create_timeout_seconds=create_timeout_seconds),
            http, limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)), budget=DailyBudget(share=0.9),
            retry=FAST_RETRY, rng=random.Random(1))

        async def no_sleep(seconds: float) -> None:
            """Retry-After from the simulator is whole seconds; the tests only need the retry."""

        nue = NueClient(NueSettings(base_url=nue_info["url"], api_key=nue_info["api_key"],
                                    create_timeout_seconds=create_timeout_seconds), http,
                        limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)), retry=FAST_RETRY,
                        rng=random.Random(1), sleep=no_sleep)
        executor = Executor(store, sf, nue, mapping_version=1, dry_run=dry_run, sync_status=sync_status,
                            settle=settle)
        chosen = flows or [SubscriptionStatusFlow()]
        guard = SchemaGuard(sf, chosen) if schema_guard else None
        worker = Worker(store, Fetcher(sf, nue, store), executor, chosen,
                        backoff=RetryPolicy(base_delay=0.0, max_delay=0.0), schema=guard,
                        own_user=lambda: sf.integration_user_id)
        try:
            yield Engine(store=store, salesforce=sf, nue=nue, executor=executor, worker=worker, schema=guard)
        finally:
            await store.close()


def webhook(event_type: str, data: dict[str, Any], event_id: str | None = None) -> NewEvent:
    """An inbox event as the listener stores a Nue webhook."""
    document = {"id": event_id, "type": event_type, "createdDate": data.get("lastModifiedDate"), "data": data}
    key = f"nue:{event_id}" if event_id else f"nue:{event_type}:{data['id']}:{data.get('lastModifiedDate')}"
    payload = json.loads(json.dumps(document, default=str))  # the simulator's records hold Decimals
    return NewEvent(source="nue_webhook", key=key, type=event_type, payload=payload)


def daemon_settings(box: Sandbox, tmp_path: Path, **environ: str) -> Settings:
    """The shipped config.yaml pointed at this sandbox, with its state under `tmp_path` (for run_daemon)."""
    from revdaemon.config import load_settings
    from revdaemon.demo import demo_settings

    root = Path(__file__).resolve().parents[2]
    settings = load_settings(root / "config.yaml", environ={"REVDAEMON_STATE_DIR": str(tmp_path / "state"),
                                                            **environ})
    return demo_settings(settings, box)


def as_bound(settings: Settings, daemon: Any) -> Settings:
    """The settings with the ports the running daemon bound (asked for 0: any free one), as `status` reads them."""
    update: dict[str, Any] = {"listener": settings.listener.model_copy(update={"port": daemon.listener_port})}
    if daemon.metrics_port is not None:
        update["metrics"] = settings.metrics.model_copy(update={"port": daemon.metrics_port})
    return settings.model_copy(update=update)
