"""Building the engine's parts against the sandbox, for integration tests."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from revdaemon.config import ApiRate, NueSettings, SalesforceAuth, SalesforceSettings, Settings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
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
from revdaemon.store.records import NewEvent

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
                 create_timeout_seconds: float = 90.0) -> AsyncIterator[Engine]:
    """`settle`: how long a write of unknown outcome waits before its lookup (none by default: most tests
    leave an intent `sent` by hand to stand for a crash long ago)."""
    sf_info, nue_info = sandbox.info()["salesforce"], sandbox.info()["nue"]
    store = await open_store(tmp_path / "engine.sqlite3")
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
