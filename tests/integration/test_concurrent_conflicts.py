"""No false hand-edit conflicts under concurrency (issue 22, part 4b).

A worker reads an account, another worker's write lands in between, and the first must not take that write
for a person's edit. The burst below runs many amendments across a few accounts through 4 workers, with nobody
editing Salesforce: no conflict may be opened. (Replicas no longer write side by side: only the leader runs
workers, engine/replicas.py.) The client
side holds each Salesforce answer a little after it arrives (`SlowAnswers`), which widens exactly the windows in
question: between a record read and the read of its last synced values, and between a write being applied and
its audit being recorded.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

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
from revdaemon.store.records import ConflictRecord
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import FAST_RETRY, Engine, engine, webhook
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
async def box(sandbox: Sandbox, store: Store, *, workers: int, name: str, seed: int) -> AsyncIterator[Box]:
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
        executor = Executor(store, sf, nue, mapping_version=1)
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
        for _ in range(1200):  # two minutes at most
            if await drained():
                break
            await anyio.sleep(0.1)
        for worker in workers:
            worker.stop()
    return [(customer, account) for customer, account, _subs in accounts]


def assert_synced(sandbox: Sandbox, accounts: list[tuple[str, str]]) -> None:
    for customer_id, account_id in accounts:
        account = sandbox.salesforce.record("Account", account_id)
        assert Decimal(str(account["MRR__c"])) == Decimal(str(sandbox.nue.store.customers[customer_id]["todayCMRR"]))


def describe(conflicts: Sequence[ConflictRecord]) -> str:
    return "\n".join(f"{c.record_ref}: {c.reason} salesforce={c.salesforce_values} synced={c.synced_values}"
                     for c in conflicts)


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


Hook = Callable[[], Awaitable[None]]


class Hooked:
    """A Salesforce client that runs another worker's work at one chosen moment: right after the Account is
    read (`after_read`), or right after a write is applied and before its outcome is recorded (`after_write`)."""

    def __init__(self, inner: SalesforceClient, *, after_read: Hook | None = None,
                 after_write: Hook | None = None) -> None:
        self._inner = inner
        self.after_read = after_read
        self.after_write = after_write

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def query(self, soql: str, **kwargs: object) -> AsyncIterator[Mapping[str, object]]:
        async def rows() -> AsyncIterator[Mapping[str, object]]:
            found = [row async for row in self._inner.query(soql, **kwargs)]
            if self.after_read is not None and "FROM Account" in soql:
                hook, self.after_read = self.after_read, None
                await hook()
            for row in found:
                yield row
        return rows()

    async def update_many(self, sobject: str, records: Sequence[Mapping[str, object]]) -> object:
        results = await self._inner.update_many(sobject, records)
        if self.after_write is not None:
            hook, self.after_write = self.after_write, None
            await hook()
        return results


def _worker(e: object, salesforce: object, name: str, *, executor: Executor | None = None) -> Worker:
    store, nue = e.store, e.nue  # type: ignore[attr-defined]
    return Worker(store, Fetcher(salesforce, nue, store), executor or e.executor,  # type: ignore[attr-defined, arg-type]
                  [SubscriptionStatusFlow()], name=name, backoff=RetryPolicy(base_delay=0.0, max_delay=0.0))


async def synced_then_changed(e: Engine, sandbox: Sandbox, sub: dict[str, Any], key: str) -> None:
    """The subscription synced once, then its quantity changed in Nue: its event (`key`) waits in the inbox."""
    await e.store.add_events([webhook("subscription.updated", dict(sub), "first")])
    await e.worker.run_once()
    sandbox.nue.scenario.change(sub["name"], "UpdateQuantity", quantity=3)
    await e.store.add_events([webhook("subscription.updated", dict(sub), key)])


class TestInterleavings:
    """The two windows, each forced open once: deterministic versions of the bursts above."""

    async def test_a_write_landing_after_the_record_was_read(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Worker A reads the account; worker B writes a newer state and records it before A goes on: A's stale
        read is not a hand edit (it plans from values read consistently; its older write is skipped as stale)."""
        customer_id, account_id, subscriptions = activate_for(sandbox, 0, 0)
        sub = subscriptions[0]
        async with engine(sandbox, tmp_path) as e:
            await synced_then_changed(e, sandbox, sub, "a")

            async def b_writes_a_newer_state() -> None:
                sandbox.nue.scenario.change(sub["name"], "UpdateQuantity", quantity=5)
                await e.store.add_events([webhook("subscription.updated", dict(sub), "b")])
                assert await _worker(e, e.salesforce, "worker-b").run_once() == 1

            await _worker(e, Hooked(e.salesforce, after_read=b_writes_a_newer_state), "worker-a").run_once()
            assert await e.store.list_conflicts() == []
            assert (await e.store.queue_depths())[EventStatus.DONE] == 3
        assert_synced(sandbox, [(customer_id, account_id)])

    async def test_a_write_applied_and_not_yet_recorded(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Worker B's write is applied in Salesforce and not yet recorded when worker A reads the account: A sees
        B's value, not its last synced one, and still opens no conflict (B's intent was recorded before it sent)."""
        customer_id, account_id, subscriptions = activate_for(sandbox, 1, 1)
        sub = subscriptions[0]
        async with engine(sandbox, tmp_path) as e:
            await synced_then_changed(e, sandbox, sub, "b")
            outcome: dict[str, int] = {}

            async def a_reads_meanwhile() -> None:
                sandbox.nue.scenario.change(sub["name"], "UpdateQuantity", quantity=5)
                await e.store.add_events([webhook("subscription.updated", dict(sub), "a")])
                outcome["a"] = await _worker(e, e.salesforce, "worker-a").run_once()

            hooked = Hooked(e.salesforce, after_write=a_reads_meanwhile)
            b_box = Executor(e.store, hooked, e.nue, mapping_version=1)  # type: ignore[arg-type]
            await _worker(e, e.salesforce, "worker-b", executor=b_box).run_once()
            assert outcome == {"a": 1}
            assert await e.store.list_conflicts() == []
            while await e.worker.run_once():  # anything retried (Busy) drains
                pass
            assert await e.store.list_conflicts() == []
        assert_synced(sandbox, [(customer_id, account_id)])
