"""This process among the replicas sharing the store: its heartbeat, and whether it leads the scheduled work.

Every replica runs workers and the webhook listener; only the leader runs the scheduler (pollers, the renewal
scan, reconciliation), so two boxes never poll or reconcile twice. Leadership is the store's (`try_lead`: on
PostgreSQL a session-level advisory lock, lost with its connection; on SQLite one box always leads). Each
replica asks again every `interval` seconds, so when the leader dies another takes over within about
`interval` plus the time the database takes to notice the dead connection.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
import structlog
from anyio.abc import TaskStatus

from revdaemon.engine.scheduler import Scheduler
from revdaemon.errors import ConfigError
from revdaemon.store import Store
from revdaemon.store.records import ReplicaBeat, utcnow

log = structlog.get_logger("revdaemon.replicas")

HEARTBEAT_SECONDS = 2.0
STALE_AFTER_BEATS = 5  # a replica silent this many beats is shown as gone


def default_replica_id() -> str:
    """The host name: stable across restarts of one box, distinct between boxes (or set store.replica_id)."""
    return socket.gethostname() or "revdaemon"


@dataclass
class ReplicaRole:
    store: Store
    scheduler: Scheduler | None  # None: this process runs no scheduled work (polling off)
    replica_id: str
    interval: float = HEARTBEAT_SECONDS
    leading: bool = False
    started_at: datetime = field(default_factory=utcnow)
    changes: int = 0  # times leadership was taken or lost (for tests and status)

    async def step(self) -> bool:
        """Ask for leadership, start or pause the scheduler to match, and send the heartbeat."""
        try:
            leading = await self.store.try_lead(self.replica_id)
        except Exception as exc:  # a database hiccup: whatever we held is not to be trusted
            log.warning("leadership_check_failed", error=str(exc))
            leading = False
        if leading != self.leading:
            self.changes += 1
            self.leading = leading
            log.warning("leadership_taken" if leading else "leadership_lost", replica=self.replica_id)
        if self.scheduler is not None:
            if leading:
                self.scheduler.resume()
            else:
                self.scheduler.pause()
        try:
            await self.store.heartbeat(ReplicaBeat(replica_id=self.replica_id, host=socket.gethostname(),
                                                   pid=os.getpid(), started_at=self.started_at, is_leader=leading))
        except Exception as exc:
            log.warning("heartbeat_failed", error=str(exc))
        return leading

    async def check_unique(self) -> None:
        """Refuse to start as a replica id another live box uses: the two would send each other's writes
        (claims and intents are held by id) and a clean stop of one would release the other's claims."""
        stale = timedelta(seconds=self.interval * STALE_AFTER_BEATS)
        host = socket.gethostname()
        for replica in await self.store.list_replicas():
            if replica.id == self.replica_id and replica.host != host and \
                    utcnow() - replica.last_heartbeat <= stale:
                raise ConfigError([("store.replica_id", f"{self.replica_id!r} is in use by a running replica on "
                                   f"{replica.host}: give each box its own")])

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.step()
        task_status.started()
        while True:
            await anyio.sleep(self.interval)
            await self.step()
