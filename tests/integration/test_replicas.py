"""The replica role: heartbeats, and one leader of the scheduled work among the processes sharing a store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from revdaemon import service
from revdaemon.engine.executor import Executor, PendingWrite
from revdaemon.engine.replicas import ReplicaRole
from revdaemon.engine.scheduler import Scheduler
from revdaemon.errors import Busy, ConfigError, HeldElsewhere
from revdaemon.flows.plan import SfCreate, SfUpdate
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store import open_store
from revdaemon.store.records import NewIntent, ReplicaBeat, utcnow
from tests.integration.engine_fixtures import engine

pytestmark = pytest.mark.anyio


class TestOneBox:
    async def test_the_only_replica_leads_and_its_scheduler_runs(self, tmp_path: Path) -> None:
        store = await open_store(tmp_path / "db.sqlite3")
        scheduler = Scheduler()
        scheduler.start(paused=True)
        try:
            role = ReplicaRole(store, scheduler, replica_id="box-a")
            assert await role.step() is True
            assert not scheduler.paused
            [row] = await service.replicas(store)
            assert row["id"] == "box-a" and row["leader"] and row["alive"]
        finally:
            scheduler.shutdown()
            await store.close()


    async def test_a_replica_id_another_live_box_uses_is_refused(self, tmp_path: Path) -> None:
        """Two boxes under one id would send each other's writes: the second is refused at start, by key."""
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
        """Two processes on one PostgreSQL database: one scheduler runs; when the leader's connection dies,
        the other leads at its next step."""
        first, second = await open_store(pg_url), await open_store(pg_url)
        schedulers = Scheduler(), Scheduler()
        for scheduler in schedulers:
            scheduler.start(paused=True)
        try:
            a = ReplicaRole(first, schedulers[0], replica_id="box-a")
            b = ReplicaRole(second, schedulers[1], replica_id="box-b")
            assert await a.step() is True and await b.step() is False
            assert not schedulers[0].paused and schedulers[1].paused
            rows = {r["id"]: r for r in await service.replicas(second)}
            assert rows["box-a"]["leader"] and not rows["box-b"]["leader"]

            await first.close()  # the leader's process dies: its connections, and the advisory lock, go
            assert await b.step() is True
            assert not schedulers[1].paused and b.changes == 1
            assert {r["id"]: r["leader"] for r in await service.replicas(second)}["box-b"]
        finally:
            for scheduler in schedulers:
                scheduler.shutdown()
            await second.close()


class TestSharedIntents:
    async def test_a_write_another_replica_holds_is_not_sent_until_its_lease_runs_out(
            self, sandbox: Sandbox, tmp_path: Path, pg_url: str) -> None:
        """Two replicas planned the same write: the one not holding the intent sends nothing (Busy, retried
        later); once the holder's lease has run out (it died mid-send), the write is sent by the survivor."""
        account_id = sandbox.nue.scenario.create_customer(0)["externalId"]
        write = SfUpdate(sobject="Account", record_id=account_id, fields={"Description": "from box b"},
                         idem_key="shared:1")
        async with engine(sandbox, tmp_path) as e:
            store = await open_store(pg_url)
            try:
                box_b = Executor(store, e.salesforce, e.nue, mapping_version=None, intent_owner="box-b",
                                 intent_lease=timedelta(seconds=5))
                await store.record_intent(NewIntent(key=write.idem_key, system="salesforce", operation="SfUpdate",
                                                    target=f"Account:{account_id}", request={}, event_id=None))
                assert await store.claim_intent(write.idem_key, owner="box-a", lease=timedelta(seconds=0.5))
                sandbox.salesforce.log.clear()
                [outcome] = (await box_b.execute([PendingWrite(write=write, event_id=None)])).values()
                assert not outcome.ok and isinstance(outcome.error, Busy)
                assert sandbox.salesforce.log.writes() == []

                await anyio.sleep(0.6)  # box a's lease runs out: it died
                [outcome] = (await box_b.execute([PendingWrite(write=write, event_id=None)])).values()
                assert outcome.ok
            finally:
                await store.close()
        assert sandbox.salesforce.record("Account", account_id)["Description"] == "from box b"

    async def test_a_hold_lost_before_the_call_is_not_sent(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Each call first renews this replica's hold on its writes: one another replica took over (this
        replica's batch outlasted its lease) is dropped from the call, Busy, not sent a second time."""
        account_id = sandbox.nue.scenario.create_customer(0)["externalId"]
        write = SfCreate(sobject="Task", fields={"WhatId": account_id, "Subject": "Held"},
                         match={"WhatId": account_id, "Subject": "Held"}, idem_key="shared:2", seen_absent=True)
        async with engine(sandbox, tmp_path) as e:
            box_b = Executor(e.store, e.salesforce, e.nue, mapping_version=None, intent_owner="box-b",
                             intent_lease=timedelta(seconds=0.2))
            await e.store.record_intent(NewIntent(key=write.idem_key, system="salesforce", operation="SfCreate",
                                                  target="Task:x", request={}, event_id=None))
            assert await e.store.claim_intent(write.idem_key, owner="box-b", lease=timedelta(seconds=0.2))
            await anyio.sleep(0.3)  # box b's lease ran out mid-batch; box a took the write over
            assert await e.store.claim_intent(write.idem_key, owner="box-a", lease=timedelta(minutes=5))
            outcomes: dict[str, Any] = {}
            kept = await box_b._hold([PendingWrite(write=write, event_id=None)], outcomes)
            assert kept == [] and isinstance(outcomes[write.idem_key].error, HeldElsewhere)
        assert [t for t in sandbox.salesforce.records("Task") if t["Subject"] == "Held"] == []
