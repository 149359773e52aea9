"""Pollers and the scheduler against the sandbox simulators over real sockets, with a real store."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest

from revdaemon.config import ApiRate, NueSettings, SalesforceAuth, SalesforceSettings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.engine.pollers import NuePoller, PollResult, PollStatus, SalesforceClosedWonPoller, parse_timestamp
from revdaemon.engine.scheduler import Scheduler
from revdaemon.limits import ApiLimiter, DailyBudget, RetryPolicy
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store import Store, open_store

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05, max_total=10)
OVERLAP = timedelta(seconds=60)


async def no_sleep(seconds: float) -> None:
    """Retry-After from the simulators is seconds long; these tests do not wait for it."""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "db.sqlite3")
    yield opened
    await opened.close()


def salesforce(sandbox: Sandbox, http: httpx.AsyncClient) -> SalesforceClient:
    info = sandbox.info()["salesforce"]
    settings = SalesforceSettings(login_url=info["login_url"], auth=SalesforceAuth.JWT, client_id=info["consumer_key"],
                                  client_secret=info["consumer_secret"], username=info["username"],
                                  private_key_file=info["private_key_file"])
    return SalesforceClient(settings, http, limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)),
                            budget=DailyBudget(share=0.5), retry=FAST_RETRY, rng=random.Random(1))


def nue(sandbox: Sandbox, http: httpx.AsyncClient) -> NueClient:
    info = sandbox.info()["nue"]
    return NueClient(NueSettings(base_url=info["url"], api_key=info["api_key"]), http,
                     limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)), retry=FAST_RETRY,
                     rng=random.Random(1), sleep=no_sleep)


async def event_keys(store: Store, prefix: str) -> list[str]:
    return sorted(e.key for e in await store.list_events(limit=1000) if e.key.startswith(prefix))


def later() -> datetime:
    """A poll start comfortably after the simulator's last write, so the signpost does not hold rows back."""
    return datetime.now(UTC) + timedelta(seconds=5)


class TestSalesforceClosedWonPoller:
    async def test_close_won_then_change_again(self, sandbox: Sandbox, http: httpx.AsyncClient,
                                               store: Store) -> None:
        """Closing an opportunity gives one event, a re-poll none, and a later edit a second event."""
        opportunity = next(o for o in sandbox.salesforce.records("Opportunity") if not o["IsClosed"])
        poller = SalesforceClosedWonPoller(salesforce(sandbox, http), store, overlap=OVERLAP)
        prefix = f"sf:Opportunity:{opportunity['Id']}:"

        sandbox.salesforce.close_won(opportunity["Id"])
        first = await poller.run_once(later())
        assert first.status is PollStatus.OK
        keys = await event_keys(store, prefix)
        assert keys == [f"{prefix}{sandbox.salesforce.record('Opportunity', opportunity['Id'])['SystemModstamp']}"]
        [event] = [e for e in await store.list_events(limit=100) if e.key == keys[0]]
        assert event.type == "opportunity.closed_won" and event.payload["data"]["IsWon"] is True

        again = await poller.run_once(later())
        assert again.status is PollStatus.OK and again.read >= 1 and again.stored == 0

        await anyio.sleep(0.01)  # a new millisecond, so the edit gets a new SystemModstamp
        sandbox.salesforce.update("Opportunity", opportunity["Id"], {"NextStep": "Kick-off call"})
        third = await poller.run_once(later())
        assert third.stored == 1
        assert len(await event_keys(store, prefix)) == 2

    async def test_a_late_commit_behind_the_cursor_is_read_once(self, sandbox: Sandbox, http: httpx.AsyncClient,
                                                                store: Store) -> None:
        """A deal won in a transaction that began 5 minutes ago and commits after the poll passed that time is
        read by the next poll (10-minute overlap), once: later re-reads within the overlap store nothing."""
        first, opportunity = [o for o in sandbox.salesforce.records("Opportunity") if not o["IsClosed"]][:2]
        poller = SalesforceClosedWonPoller(salesforce(sandbox, http), store)  # the default overlap
        assert poller.overlap == timedelta(minutes=10)
        sandbox.salesforce.close_won(first["Id"])  # the cursor moves up to now
        await poller.run_once(later())
        cursor = await poller.cursor()
        assert cursor is not None
        record = sandbox.salesforce.commit_late("Opportunity", opportunity["Id"], {"StageName": "Closed Won"},
                                                minutes_ago=5)
        assert parse_timestamp(record["SystemModstamp"]) < cursor.at  # behind what the poll has passed
        assert (await poller.run_once(later())).stored == 1
        for _ in range(3):
            assert (await poller.run_once(later())).stored == 0
        assert await event_keys(store, f"sf:Opportunity:{opportunity['Id']}:") == [
            f"sf:Opportunity:{opportunity['Id']}:{record['SystemModstamp']}"]


class TestNuePoller:
    async def test_activated_order_gives_subscription_events(self, sandbox: Sandbox, http: httpx.AsyncClient,
                                                              store: Store) -> None:
        """An activated order's subscriptions are polled as subscription.updated events, once each."""
        scenario = sandbox.nue.scenario
        customer = scenario.create_customer(0)
        scenario.create_and_activate_order(customer["id"])
        poller = NuePoller("Subscription", nue(sandbox, http), store, overlap=OVERLAP)

        first = await poller.run_once(later())
        assert first.status is PollStatus.OK and first.stored >= 1
        events = [e for e in await store.list_events(limit=1000) if e.type == "subscription.updated"]
        ours = [e for e in events if e.payload["data"]["customerId"] == customer["id"]]
        assert ours and all(e.payload["source"] == "poll" and e.source == "nue_poll" for e in ours)
        assert {e.payload["data"]["status"] for e in ours} == {"Active"}

        again = await poller.run_once(later())
        assert again.stored == 0

        scenario.change(ours[0].payload["data"]["name"], "UpdateQuantity", quantity=2)
        changed = await poller.run_once(later())
        assert changed.stored >= 1


    async def test_a_bulk_run_of_equal_times_longer_than_a_page_loses_no_row(self, sandbox: Sandbox,
                                                                              store: Store) -> None:
        """Six customers share one lastModifiedDate, pages hold two, and rows already read are modified between
        pages (each modification moves a row to the end, shifting offsets): every customer is read."""
        scenario = sandbox.nue.scenario
        ids = [scenario.create_customer(i)["id"] for i in range(6)]
        run = "2026-01-01T00:00:00.000Z"
        for customer_id in ids:
            scenario.commit_late("Customer", customer_id, at=run)
        pages = 0
        order = sorted(ids)

        async def churn(response: httpx.Response) -> None:
            nonlocal pages
            if response.request.url.path.endswith("/async/graphql"):
                pages += 1
                if pages <= 2:  # the first row of the page just served is modified again
                    scenario.update_customer(order[2 * (pages - 1)], phone=f"+1-555-99{pages}")

        async with httpx.AsyncClient(event_hooks={"response": [churn]}) as hooked:
            poller = NuePoller("Customer", nue(sandbox, hooked), store, page_size=2,
                               start=datetime(2025, 12, 31, tzinfo=UTC))
            result = await poller.run_once(later())
        assert result.status is PollStatus.OK and pages >= 4
        read = {e.payload["data"]["id"] for e in await store.list_events(limit=100)
                if e.payload["data"]["lastModifiedDate"] == run}
        assert read == set(ids)

    async def test_a_late_commit_behind_the_cursor_is_read_once(self, sandbox: Sandbox, http: httpx.AsyncClient,
                                                                store: Store) -> None:
        """A subscription change committed late (its lastModifiedDate 5 minutes old, behind the cursor) is read by
        the next poll, once."""
        scenario = sandbox.nue.scenario
        scenario.create_and_activate_order(scenario.create_customer(0)["id"])
        poller = NuePoller("Subscription", nue(sandbox, http), store)
        assert poller.overlap == timedelta(minutes=10)
        await poller.run_once(later())
        [subscription, *_] = [s for s in sandbox.nue.store.subscriptions.values()]
        record = scenario.commit_late("Subscription", subscription["id"], minutes_ago=5, quantity=7)
        cursor = await poller.cursor()
        assert cursor is not None and parse_timestamp(record["lastModifiedDate"]) < cursor.at
        assert (await poller.run_once(later())).stored == 1
        assert (await poller.run_once(later())).stored == 0
        keys = await event_keys(store, f"nue:subscription.updated:{subscription['id']}:")
        assert f"nue:subscription.updated:{subscription['id']}:{record['lastModifiedDate']}" in keys


class TestScheduler:
    async def test_interval_job_runs(self) -> None:
        """A short interval job runs at least once within a few seconds of the scheduler starting."""

        class Counter:
            name = "counter"

            def __init__(self) -> None:
                self.runs = 0
                self.ran = anyio.Event()

            async def run_once(self, now: datetime | None = None) -> None:
                self.runs += 1
                self.ran.set()

        counter = Counter()
        scheduler = Scheduler()
        scheduler.add_interval(counter, 0.2, run_now=False)
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            assert scheduler.running and scheduler.job_ids() == ["counter"]
            with anyio.fail_after(5):
                await counter.ran.wait()
            tg.cancel_scope.cancel()
        assert counter.runs >= 1
        assert not scheduler.running

    async def test_poller_job_fills_the_inbox(self, sandbox: Sandbox, http: httpx.AsyncClient,
                                              store: Store) -> None:
        """A scheduled Nue poller stores events without anyone calling it directly."""
        scenario = sandbox.nue.scenario
        scenario.create_and_activate_order(scenario.create_customer(1)["id"])
        poller = NuePoller("Order", nue(sandbox, http), store, overlap=OVERLAP, safety_lag=timedelta(0))
        done = anyio.Event()

        class Signalling:
            name = poller.name

            async def run_once(self, now: datetime | None = None) -> PollResult:
                result = await poller.run_once(now)
                done.set()
                return result

        scheduler = Scheduler()
        scheduler.add_interval(Signalling(), 60)  # runs at start, then not again within the test
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            with anyio.fail_after(5):
                await done.wait()
            tg.cancel_scope.cancel()
        assert poller.last_success_at is not None
        assert [e for e in await store.list_events(limit=100) if e.type == "order.updated"]
