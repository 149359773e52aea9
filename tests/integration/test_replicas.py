"""Replicas, active-passive: one leader runs the workers and the scheduler under a leadership epoch; a standby
serves webhooks and waits; a leader that lost its epoch stops at once and sends nothing."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import asyncpg
import httpx
import pytest
from anyio.abc import TaskStatus
from structlog.testing import capture_logs

from revdaemon import service
from revdaemon.config import SalesforceAuth, SalesforceSettings
from revdaemon.connectors.pubsub import PubSubClient
from revdaemon.connectors.salesforce import SalesforceAuthenticator
from revdaemon.engine.change_stream import ChangeStream
from revdaemon.engine.executor import Executor, PendingWrite
from revdaemon.engine.fencing import Term
from revdaemon.engine.replicas import ReplicaRole
from revdaemon.engine.scheduler import Scheduler
from revdaemon.engine.worker import Worker
from revdaemon.errors import ConfigError, Fenced, Settling
from revdaemon.flows.plan import SfCreate, SfUpdate
from revdaemon.flows.sources import SALESFORCE_CDC
from revdaemon.flows.subscription_status import SubscriptionStatusFlow
from revdaemon.ops.health import Health, StreamState
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store import Store, open_store
from revdaemon.store.records import NewEvent, NewIntent, ReplicaBeat, utcnow
from revdaemon.store.states import EventStatus, IntentStatus
from tests.integration.engine_fixtures import engine, webhook
from tests.integration.test_engine_subscription_status import activate_for

pytestmark = pytest.mark.anyio


def event(key: str) -> NewEvent:
    return NewEvent(source="nue_webhook", key=key, type="order.activated", payload={"id": key})


def idle_worker(store: Store, name: str) -> Worker:
    """A worker whose flows take nothing: it claims events and finishes them without a call (who works shows)."""
    executor = Executor(store, cast(Any, None), cast(Any, None), mapping_version=None)
    return Worker(store, cast(Any, None), executor, [], name=name, idle_seconds=0.05)


def record_writes(sandbox: Sandbox) -> list[Any]:
    """Salesforce writes of records (a login is no write)."""
    return [r for r in sandbox.salesforce.log.writes() if "/oauth2/" not in r.path]


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        answer = condition()
        if await answer if inspect.isawaitable(answer) else answer:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"not so after {seconds} s")


async def end_leader_session(url: str, replica_id: str) -> None:
    """What the server does to a leader that died or went silent: its lock session ends, the lock with it."""
    admin = await asyncpg.connect(url)
    try:
        ended = await admin.fetchval("SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                                     "WHERE application_name = $1", f"revdaemon leader {replica_id}")
    finally:
        await admin.close()
    assert ended == 1


class TestOneBox:
    async def test_the_only_replica_leads_and_runs_the_workers_and_the_scheduler(self, tmp_path: Path) -> None:
        store = await open_store(tmp_path / "db.sqlite3")
        scheduler = Scheduler()
        scheduler.start(paused=True)
        try:
            role = ReplicaRole(store, scheduler, replica_id="box-a", workers=[idle_worker(store, "worker-1")])
            async with anyio.create_task_group() as tg:
                await tg.start(role.run)
                await wait_until(lambda: role.workers[0].running)
                assert role.term is not None and role.term.epoch == 1 and not scheduler.paused
                [row] = await service.replicas(store)
                assert row["id"] == "box-a" and row["leader"] and row["alive"]
                tg.cancel_scope.cancel()
        finally:
            scheduler.shutdown()
            await store.close()

    async def test_a_new_term_under_the_same_epoch_takes_its_workers_claims_back_at_once(self, tmp_path: Path) -> None:
        """A term of this process ended while the store kept its epoch (cancelled mid-batch): its workers' claims
        have minutes of lease left, and the next term's workers finish them at once."""
        store = await open_store(tmp_path / "db.sqlite3")
        try:
            taken = await store.try_lead("box-a")
            assert taken is not None
            await store.add_events([event("e1"), event("e2")])
            held = await store.claim_events(worker="worker-1", limit=5, lease=timedelta(minutes=5), epoch=taken.epoch)
            assert len(held) == 2
            worker = idle_worker(store, "worker-1")
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run, Term(taken))
                await wait_until(lambda: worker.stats.processed == 2, seconds=5)
                tg.cancel_scope.cancel()
        finally:
            await store.close()

    async def test_a_replica_id_another_live_box_uses_is_refused(self, tmp_path: Path) -> None:
        """Two boxes under one id would look like one: the second is refused at start, by key."""
        store = await open_store(tmp_path / "db.sqlite3")
        try:
            await store.heartbeat(ReplicaBeat(replica_id="box-a", host="another-host", pid=1,
                                              started_at=utcnow(), is_leader=True))
            with pytest.raises(ConfigError, match=r"store\.replica_id"):
                await ReplicaRole(store, None, replica_id="box-a").check_unique()
            await ReplicaRole(store, None, replica_id="box-b").check_unique()  # another id is fine
        finally:
            await store.close()


class TestTwoReplicas:
    async def test_one_leads_and_the_other_takes_over_when_it_dies(self, pg_url: str) -> None:
        """Two processes on one PostgreSQL database: one leads; when the leader's connection dies, the other leads
        at its next step, with the next epoch."""
        first, second = await open_store(pg_url), await open_store(pg_url)
        try:
            a = ReplicaRole(first, None, replica_id="box-a")
            b = ReplicaRole(second, None, replica_id="box-b")
            taken = await a.step()
            assert taken is not None and await b.step() is None
            rows = {r["id"]: r for r in await service.replicas(second)}
            assert rows["box-a"]["leader"] and not rows["box-b"]["leader"]

            await first.close()  # the leader's process dies: its connections, and the advisory lock, go
            after = await b.step()
            assert after is not None and after.epoch == taken.epoch + 1 and after.replica_id == "box-b"
            assert {r["id"]: r["leader"] for r in await service.replicas(second)}["box-b"]
            assert await second.leadership() == after
        finally:
            await first.close()
            await second.close()

    async def test_only_the_leader_works_and_the_survivor_takes_its_claims_at_once(self, pg_url: str) -> None:
        """The standby's workers never run. The leader dies holding claims with minutes of lease left: the survivor
        leads within a step and finishes them at once (claims of an older epoch are its to take)."""
        first, second = await open_store(pg_url), await open_store(pg_url)
        a = ReplicaRole(first, None, replica_id="box-a", workers=[idle_worker(first, "box-a/worker-1")], interval=0.2)
        b = ReplicaRole(second, None, replica_id="box-b", workers=[idle_worker(second, "box-b/worker-1")],
                        interval=0.2)
        box_a = anyio.CancelScope()

        async def run_a(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            with box_a:
                await a.run(task_status=task_status)

        try:
            async with anyio.create_task_group() as tg:
                await tg.start(run_a)
                await tg.start(b.run)
                assert a.leading and not b.leading
                await first.add_events([event(f"e{i}") for i in range(5)])

                async def done(count: int) -> bool:
                    return (await second.queue_depths())[EventStatus.DONE] == count

                await wait_until(lambda: done(5))
                assert (a.workers[0].stats.processed, b.workers[0].stats.processed) == (5, 0)

                assert a.term is not None
                stale = a.term.epoch
                box_a.cancel()  # box a dies (its tasks stop where they are) ...
                await second.add_events([event(f"late{i}") for i in range(3)])
                held = await first.claim_events(worker="box-a/worker-1", limit=10, lease=timedelta(minutes=5),
                                                epoch=stale)  # ... holding claims made just before
                assert len(held) == 3
                await end_leader_session(pg_url, "box-a")
                await wait_until(lambda: done(8))
                assert b.term is not None and b.term.epoch == stale + 1
                assert b.workers[0].stats.processed == 3
                tg.cancel_scope.cancel()
        finally:
            await first.close()
            await second.close()

    async def test_only_the_leader_subscribes_and_the_survivor_resumes_from_the_shared_replay_id(
            self, pg_url: str, sandbox: Sandbox) -> None:
        """Change Data Capture on two boxes: only the leader subscribes. It dies; changes made meanwhile reach the
        survivor, which resumes from the replay id the leader stored in the shared database (not from LATEST)."""
        info = sandbox.info()["salesforce"]
        settings = SalesforceSettings(login_url=info["login_url"], auth=SalesforceAuth.JWT,
                                      client_id=info["consumer_key"], username=info["username"],
                                      private_key_file=info["private_key_file"])
        first, second = await open_store(pg_url), await open_store(pg_url)
        topic = "/data/OpportunityChangeEvent"
        deals = [o.id for o in sandbox.salesforce.seed_data.opportunities[:3]]

        async def no_poll(entity: str) -> None:
            raise AssertionError(f"a replay id stored by the other box was refused: {entity} polled")

        async with httpx.AsyncClient() as http:
            clients = [PubSubClient(info["pubsub_url"], SalesforceAuthenticator(settings, http), tls=False)
                       for _ in range(2)]
            health_a, health_b = Health(), Health()
            a = ReplicaRole(first, None, replica_id="box-a", interval=0.2, streams=[
                ChangeStream(clients[0], first, topic, health=health_a, catch_up=no_poll)])
            b = ReplicaRole(second, None, replica_id="box-b", interval=0.2, streams=[
                ChangeStream(clients[1], second, topic, health=health_b, catch_up=no_poll)])
            box_a = anyio.CancelScope()

            async def run_a(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                with box_a:
                    await a.run(task_status=task_status)

            def hints(health: Health) -> int:
                return health.stream(topic).hints

            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(run_a)
                    await tg.start(b.run)
                    await wait_until(lambda: sandbox.salesforce.cdc.streams.count == 1)
                    sandbox.salesforce.close_won(deals[0])
                    await wait_until(lambda: hints(health_a) == 1)
                    assert health_b.stream(topic).state is StreamState.STANDBY and hints(health_b) == 0
                    box_a.cancel()  # box a dies ...
                    await end_leader_session(pg_url, "box-a")
                    for deal in deals[1:]:  # ... and deals are won before the survivor subscribes
                        sandbox.salesforce.close_won(deal)
                    await wait_until(lambda: hints(health_b) == 2)
                    tg.cancel_scope.cancel()
            finally:
                for client in clients:
                    await client.close()
                await first.close()
                await second.close()
        subscribes = [r for r in sandbox.salesforce.pubsub_log.entries() if r.method == "Subscribe"]
        assert len(subscribes) == 2  # one per term: the standby never subscribed
        keys = sorted(e.payload["data"]["Id"] for e in await _events(pg_url) if e.source == SALESFORCE_CDC)
        assert keys == sorted(deals)  # each deal's hint stored once, by whichever box led

    async def test_a_fenced_leader_stops_at_once_and_stands_by(self, pg_url: str) -> None:
        """The leader has not yet noticed it lost the lock (its next step is far off) when another replica takes
        leadership: its worker's next store step is fenced, the term ends at once, the workers stop, and it logs
        that it lost leadership; the new leader does the work."""
        first, second = await open_store(pg_url), await open_store(pg_url)
        scheduler = Scheduler()
        scheduler.start(paused=True)
        a = ReplicaRole(first, scheduler, replica_id="box-a", workers=[idle_worker(first, "box-a/worker-1")],
                        interval=60)
        b = ReplicaRole(second, None, replica_id="box-b", workers=[idle_worker(second, "box-b/worker-1")],
                        interval=0.2)
        try:
            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    await tg.start(a.run)
                    assert a.leading and not scheduler.paused
                    await end_leader_session(pg_url, "box-a")
                    await tg.start(b.run)
                    await wait_until(lambda: b.leading)
                    await second.add_events([event("after")])
                    await wait_until(lambda: not a.leading)
                    assert scheduler.paused and not a.workers[0].running
                    await wait_until(lambda: b.workers[0].stats.processed == 1)
                    assert a.workers[0].stats.processed == 0
                    tg.cancel_scope.cancel()
            [lost] = [entry for entry in logs if entry["event"] == "leadership_lost"]
            assert lost["replica"] == "box-a" and "fenced" in lost["reason"] and lost["requests_sent"] == 0
            assert any(entry["event"] == "worker_fenced" for entry in logs)
        finally:
            scheduler.shutdown()
            await first.close()
            await second.close()


class Stalling:
    """A Salesforce client that stalls before each write call, as a process paused (or a slow retry loop) between
    the executor's fenced step and the request; `during` runs while it stalls."""

    def __init__(self, inner: Any, during: Callable[[], Awaitable[None]], seconds: float = 1.3) -> None:
        self._inner = inner
        self._during = during
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def update_many(self, *args: Any, **kwargs: Any) -> Any:
        await self._during()
        await anyio.sleep(self._seconds)
        return await self._inner.update_many(*args, **kwargs)


class TestFencedWriter:
    async def test_a_worker_of_an_old_epoch_claims_settles_and_sends_nothing(self, sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
        """Its events were claimed under epoch 1; a second process takes the store (epoch 2) before it plans: the
        batch is fenced at its first write step; nothing is sent, recorded or finished, and its next claim is
        fenced too."""
        _customer, account_id, subscriptions = activate_for(sandbox, 1, 1)
        async with engine(sandbox, tmp_path) as e:
            taken = await e.store.try_lead("box-a")
            assert taken is not None
            worker = Worker(e.store, e.worker._fetcher, e.executor, [SubscriptionStatusFlow()], term=Term(taken))
            await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "evt-fenced")])
            events = await e.store.claim_events(worker=worker.name, limit=5, lease=timedelta(minutes=5),
                                                epoch=taken.epoch)
            other = await open_store(tmp_path / "engine.sqlite3")
            try:
                assert await other.try_lead("box-b") is not None
                sandbox.salesforce.log.clear()
                with pytest.raises(Fenced):
                    await worker.process(events)
                with pytest.raises(Fenced):
                    await worker.run_once()
                assert record_writes(sandbox) == []
                [stored] = await other.list_events()
                assert stored.status is EventStatus.CLAIMED and stored.claimed_by == worker.name
                assert await other.list_intents(mentioning=account_id) == []
            finally:
                await other.close()

    async def test_a_request_leaving_late_checks_the_epoch_again_and_is_not_sent(self, sandbox: Sandbox,
                                                                               tmp_path: Path) -> None:
        """The write was fenced and marked sent; the process then stalls (a pause, a slow retry) while another takes
        leadership: right before the request leaves, the hook sees the time passed, checks again, and refuses."""
        account_id = sandbox.nue.scenario.create_customer(0)["externalId"]
        write = SfUpdate(sobject="Account", record_id=account_id, fields={"Description": "stale"}, idem_key="late:1")
        async with engine(sandbox, tmp_path) as e:
            taken = await e.store.try_lead("box-a")
            assert taken is not None
            other = await open_store(tmp_path / "engine.sqlite3")

            async def take_over() -> None:
                assert await other.try_lead("box-b") is not None

            try:
                executor = Executor(e.store, cast(Any, Stalling(e.salesforce, take_over)), e.nue, mapping_version=1)
                term = Term(taken)
                sandbox.salesforce.log.clear()
                with pytest.raises(Fenced):
                    await executor.execute([PendingWrite(write=write, event_id=None)], term=term)
                assert record_writes(sandbox) == []
                assert (term.requests_sent, term.requests_refused) == (0, 1)
                stored = await other.get_intent(write.idem_key)
                assert stored is not None and stored.status is IntentStatus.SENT  # marked: the next leader checks
            finally:
                await other.close()
        assert sandbox.salesforce.record("Account", account_id).get("Description") != "stale"

    async def test_a_request_leaving_at_once_is_not_checked_again(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Right after the fenced step a write goes without another read of the epoch, and the term counts it."""
        account_id = sandbox.nue.scenario.create_customer(0)["externalId"]
        write = SfUpdate(sobject="Account", record_id=account_id, fields={"Description": "fresh"}, idem_key="now:1")
        async with engine(sandbox, tmp_path) as e:
            taken = await e.store.try_lead("box-a")
            assert taken is not None
            term = Term(taken)
            await e.salesforce.limits()  # logged in already: the send makes one request
            [outcome] = (await e.executor.execute([PendingWrite(write=write, event_id=None)], term=term)).values()
            assert outcome.ok and term.requests_sent == 1 and term.requests_refused == 0
        assert sandbox.salesforce.record("Account", account_id)["Description"] == "fresh"


class TestTakeover:
    async def test_a_former_leaders_writes_are_looked_up_after_the_settle_time_from_the_takeover(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Epoch 1 marked a create sent (it reached Salesforce) and recorded another it never sent, then died. The
        new leader sends the never-sent one at once; the sent one waits the settle time counted from the takeover
        (not from the old send), then is found by its lookup and not made again."""
        account_id = sandbox.nue.scenario.create_customer(0)["externalId"]

        def task(subject: str) -> SfCreate:
            return SfCreate(sobject="Task", fields={"WhatId": account_id, "Subject": subject},
                            match={"WhatId": account_id, "Subject": subject}, idem_key=f"t:{subject}",
                            seen_absent=True)

        sent, unsent = task("Sent by the old leader"), task("Recorded by the old leader")
        async with engine(sandbox, tmp_path) as e:
            old = await e.store.try_lead("box-a")
            assert old is not None
            for write in (sent, unsent):
                await e.store.record_intent(NewIntent(key=write.idem_key, system="salesforce", operation="SfCreate",
                                                      target="Task:x", request={}, event_id=None), epoch=old.epoch)
            await e.store.begin_send([sent.idem_key], epoch=old.epoch)
            sandbox.salesforce.create("Task", dict(sent.fields))  # it reached Salesforce; the answer never came back
            await anyio.sleep(1.0)
            survivor = await open_store(tmp_path / "engine.sqlite3")
            try:
                new = await survivor.try_lead("box-b")
                assert new is not None and new.epoch == old.epoch + 1
                executor = Executor(survivor, e.salesforce, e.nue, mapping_version=1, settle=timedelta(seconds=1.5))
                term = Term(new)
                first = await executor.execute([PendingWrite(write=sent, event_id=None),
                                                PendingWrite(write=unsent, event_id=None)], term=term)
                waiting = first[sent.idem_key].error
                assert isinstance(waiting, Settling) and waiting.retry_after > 1.2
                assert first[unsent.idem_key].ok and first[unsent.idem_key].result["created"]  # type: ignore[index]
                await anyio.sleep(waiting.retry_after)
                [found] = (await executor.execute([PendingWrite(write=sent, event_id=None)], term=term)).values()
                assert found.ok and found.result is not None and found.result["created"] is False
            finally:
                await survivor.close()
        subjects = sorted(t["Subject"] for t in sandbox.salesforce.records("Task") if t.get("WhatId") == account_id)
        assert subjects == ["Recorded by the old leader", "Sent by the old leader"]


async def _events(url: str) -> list[Any]:
    store = await open_store(url)
    try:
        return await store.list_events(limit=100)
    finally:
        await store.close()

