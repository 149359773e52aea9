"""No false hand-edit conflicts under concurrency (issue 22, part 4b).

A worker reads an account, another worker's write lands in between, and the first must not take that write
for a person's edit. The bursts below run many amendments across a few accounts through 4 workers, and through
two replicas sharing one PostgreSQL store, with nobody editing Salesforce: no conflict may be opened. The client
side holds each Salesforce answer a little after it arrives (`SlowAnswers`), which widens exactly the windows in
question: between a record read and the read of its last synced values, and between a write being applied and
its audit being recorded.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest

from revdaemon.config import ApiRate, NueSettings, SalesforceAuth, SalesforceSettings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine.executor import Executor
from revdaemon.engine.lookups import Fetcher
from revdaemon.engine.worker import Worker
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.limits import ApiLimiter, DailyBudget, RetryPolicy
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store import Store, open_store
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import FAST_RETRY, webhook
from tests.integration.test_engine_subscription_status import activate_for

pytestmark = pytest.mark.anyio

ACCOUNTS = 3
STEPS = 12  # amendments per account
COPIES = 3  # notifications per amendment (different event ids: none is deduplicated away)


class SlowAnswers(httpx.AsyncBaseTransport):
    """Holds each Salesforce answer for a random few milliseconds after it arrived: the record was read (or
    the write applied) and the worker has not gone on yet, so another worker's work lands in between."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rng: random.Random, *, most: float = 0.03) -> None:
        self._inner = inner
        self._rng = rng
        self._most = most

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if "/oauth2/" not in request.url.path:
            await anyio.sleep(self._rng.uniform(0, self._most))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Box:
    """One daemon's engine: its store, one executor, its workers."""

    store: Store
    workers: list[Worker]


@asynccontextmanager
async def box(sandbox: Sandbox, store: Store, *, workers: int, name: str, seed: int,
              intent_owner: str | None = None) -> AsyncIterator[Box]:
    sf_info, nue_info = sandbox.info()["salesforce"], sandbox.info()["nue"]
    rng = random.Random(seed)
    async with httpx.AsyncClient(transport=SlowAnswers(httpx.AsyncHTTPTransport(), rng)) as slow, \
            httpx.AsyncClient() as http:
        sf = SalesforceClient(
            SalesforceSettings(login_url=sf_info["login_url"], auth=SalesforceAuth.JWT,
                               client_id=sf_info["consumer_key"], username=sf_info["username"],
                               private_key_file=sf_info["private_key_file"]),
            slow, limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)), budget=DailyBudget(share=0.9),
            retry=FAST_RETRY, rng=random.Random(seed))

        async def no_sleep(seconds: float) -> None:
            """Retry-After from the simulator is whole seconds; the tests only need the retry."""

        nue = NueClient(NueSettings(base_url=nue_info["url"], api_key=nue_info["api_key"]), http,
                        limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)), retry=FAST_RETRY,
                        rng=random.Random(seed), sleep=no_sleep)
        executor = Executor(store, sf, nue, mapping_version=1, intent_owner=intent_owner,
                            intent_lease=timedelta(minutes=5))
        fetcher = Fetcher(sf, nue, store)
        flows = [SubscriptionStatusFlow()]
        yield Box(store=store, workers=[
            Worker(store, fetcher, executor, flows, name=f"{name}-worker-{i + 1}", batch_size=2,
                   idle_seconds=0.02, backoff=RetryPolicy(base_delay=0.0, max_delay=0.0), rng=random.Random(i))
            for i in range(workers)])


async def burst(sandbox: Sandbox, store: Store, workers: list[Worker]) -> list[tuple[str, str]]:
    """Amend every account STEPS times while the workers run, notifying each state COPIES times; wait until
    the inbox is drained. Returns (customer id, account id) of each account."""
    rng = random.Random(7)
    accounts = [activate_for(sandbox, i, i) for i in range(ACCOUNTS)]
    seen = 0

    async def notify(subscription: dict) -> None:
        nonlocal seen
        events = []
        for _ in range(COPIES):
            seen += 1
            events.append(webhook("subscription.updated", dict(subscription), f"burst-{seen}"))
        await store.add_events(events)

    async def drained() -> bool:
        depths = await store.queue_depths()
        return depths.get(EventStatus.RECEIVED, 0) + depths.get(EventStatus.CLAIMED, 0) == 0

    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        for _customer, _account, subscriptions in accounts:
            await notify(subscriptions[0])
        for step in range(STEPS):
            for _customer, _account, subscriptions in accounts:
                sandbox.nue.scenario.change(subscriptions[0]["name"], "UpdateQuantity", quantity=step + 2)
                await notify(sandbox.nue.store.subscriptions[subscriptions[0]["id"]])
                await anyio.sleep(rng.uniform(0, 0.03))
        with anyio.fail_after(120):
            while not await drained():
                await anyio.sleep(0.1)
        for worker in workers:
            worker.stop()
    return [(customer, account) for customer, account, _subs in accounts]


def assert_synced(sandbox: Sandbox, accounts: list[tuple[str, str]]) -> None:
    for customer_id, account_id in accounts:
        account = sandbox.salesforce.record("Account", account_id)
        assert Decimal(str(account["MRR__c"])) == Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))


def describe(conflicts: list, keys: Callable[[object], str] = lambda c: f"{c.record_ref}: {c.reason} "
             f"sf={c.salesforce_values} synced={c.synced_values}") -> str:
    return "\n".join(keys(c) for c in conflicts)


class TestNoFalseConflicts:
    async def test_four_workers_on_one_store(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A burst of amendments through 4 workers, nobody editing Salesforce: no conflict is opened."""
        store = await open_store(tmp_path / "engine.sqlite3")
        try:
            async with box(sandbox, store, workers=4, name="box", seed=1) as one:
                accounts = await burst(sandbox, store, one.workers)
            conflicts = await store.list_conflicts()
            assert conflicts == [], describe(conflicts)
            assert (await store.queue_depths()).get(EventStatus.DEAD, 0) == 0
        finally:
            await store.close()
        assert_synced(sandbox, accounts)

    async def test_two_replicas_on_one_postgresql_store(self, sandbox: Sandbox, pg_url: str) -> None:
        """The same burst through two replicas (two workers each) sharing one PostgreSQL store: no conflict."""
        async with AsyncExitStack() as stack:
            stores = [await open_store(pg_url), await open_store(pg_url)]
            for store in stores:
                stack.push_async_callback(store.close)
            boxes = [await stack.enter_async_context(box(sandbox, store, workers=2, name=name, seed=seed,
                                                         intent_owner=name))
                     for store, name, seed in zip(stores, ("box-a", "box-b"), (1, 2), strict=True)]
            accounts = await burst(sandbox, stores[0], [w for b in boxes for w in b.workers])
            conflicts = await stores[0].list_conflicts()
            assert conflicts == [], describe(conflicts)
            assert (await stores[0].queue_depths()).get(EventStatus.DEAD, 0) == 0
        assert_synced(sandbox, accounts)
