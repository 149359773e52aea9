"""The replica role: heartbeats, and one leader of the scheduled work among the processes sharing a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from revdaemon import service
from revdaemon.engine.replicas import ReplicaRole
from revdaemon.engine.scheduler import Scheduler
from revdaemon.store import open_store

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
