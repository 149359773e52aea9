"""This process among the replicas sharing the store: its heartbeat, and whether it is the active one.

Active-passive. Every replica serves webhooks into the shared inbox; only the leader runs the workers (and with
them the executor), the change event subscriptions and the scheduler (pollers, the renewal scan, reconciliation,
the sweeps), so one process sends, one subscribes and one polls. A standby heartbeats and asks for leadership
every `interval` seconds.

Leadership is the store's (`try_lead`): on PostgreSQL a session-level advisory lock, lost with its session (the
process died, or was silent for store/postgres.py's LEADER_SILENCE_SECONDS); on SQLite the one box's daemon. Each
taking starts a `Term` with a new epoch: the workers run under it, and every step they take towards a write is
fenced by it. The term ends, and the workers are cancelled at once (completing, retrying and giving back
nothing), when a step says the leadership is no longer this replica's, or a store step is fenced: whichever
this replica learns first. Then it is a standby again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
import structlog
from anyio.abc import TaskStatus

from revdaemon.engine.change_stream import ChangeStream
from revdaemon.engine.fencing import Term
from revdaemon.engine.scheduler import Scheduler
from revdaemon.engine.worker import Worker
from revdaemon.errors import ConfigError, Fenced
from revdaemon.store import Store
from revdaemon.store.records import Leadership, ReplicaBeat, utcnow

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
    workers: Sequence[Worker] = ()
    streams: Sequence[ChangeStream] = ()  # change event subscriptions: the leader's, like the pollers
    interval: float = HEARTBEAT_SECONDS
    leads: bool = True  # False (a dry run): never takes leadership, which would fence the running daemon
    term: Term | None = None  # while this replica leads (kept through a clean stop, for giving claims back)
    started_at: datetime = field(default_factory=utcnow)
    changes: int = 0  # times leadership was taken or lost (for tests and status)
    _stopping: bool = False

    @property
    def leading(self) -> bool:
        return self.term is not None

    async def step(self) -> Leadership | None:
        """Ask for leadership (or check it is still held) and send the heartbeat."""
        leadership = None
        try:
            if self.leads:
                leadership = await self.store.try_lead(self.replica_id)
        except Exception as exc:  # a database hiccup: whatever we held is not to be trusted
            log.warning("leadership_check_failed", error=str(exc))
        try:
            await self.store.heartbeat(ReplicaBeat(replica_id=self.replica_id, host=socket.gethostname(),
                                                   pid=os.getpid(), started_at=self.started_at,
                                                   is_leader=leadership is not None))
        except Exception as exc:
            log.warning("heartbeat_failed", error=str(exc))
        return leadership

    async def check_unique(self) -> None:
        """Refuse to start as a replica id another live box uses: its claims would look like ours (they carry the
        id), and a clean stop of one would give back the other's."""
        stale = timedelta(seconds=self.interval * STALE_AFTER_BEATS)
        host = socket.gethostname()
        for replica in await self.store.list_replicas():
            if replica.id == self.replica_id and replica.host != host and \
                    utcnow() - replica.last_heartbeat <= stale:
                raise ConfigError([("store.replica_id", f"{self.replica_id!r} is in use by a running replica on "
                                   f"{replica.host}: give each box its own")])

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Standby until leadership is taken, then the leader's work until it is lost; again and again."""
        leadership = await self.step()
        task_status.started()
        while True:
            if leadership is not None and not self._stopping:
                await self._lead(Term(leadership))
            await anyio.sleep(self.interval)
            leadership = await self.step()

    def retire(self) -> None:
        """A clean stop: no new term starts. A term running goes on (its workers finish the batch in hand) until
        the daemon is cancelled; the store's close gives up the leadership."""
        self._stopping = True

    async def _lead(self, term: Term) -> None:
        self.term = term
        self.changes += 1
        log.warning("leadership_taken", replica=self.replica_id, epoch=term.epoch, since=term.since.isoformat())
        if self.scheduler is not None:
            self.scheduler.resume()
        reason: str  # why the term ended (a daemon's stop cancels it instead: nothing below runs)
        try:
            async with anyio.create_task_group() as tg:
                for worker in self.workers:
                    tg.start_soon(worker.run, term)
                for stream in self.streams:
                    tg.start_soon(stream.run)
                reason = await self._while_leading(term)
                tg.cancel_scope.cancel()  # at once: nothing in hand is completed, retried or given back
        except* Fenced as fenced:
            reason = f"a store step was fenced: {fenced.exceptions[0]}"
        self.term = None
        self.changes += 1
        if self.scheduler is not None:
            self.scheduler.pause()
        # What this term sent: every request of a send passed the fence first (engine/fencing.py), and the last
        # one left `last_request_seconds_ago`: for a process paused and resumed, before the pause.
        log.warning("leadership_lost", replica=self.replica_id, epoch=term.epoch, reason=reason,
                    requests_sent=term.requests_sent, requests_refused=term.requests_refused,
                    last_request_seconds_ago=term.seconds_since_last_request())

    async def _while_leading(self, term: Term) -> str:
        """Step every `interval` while the store still names this term; why it ended, once it does."""
        while True:
            await anyio.sleep(self.interval)
            leadership = await self.step()  # through a clean stop too: the workers finish under a held lock
            if leadership is None:
                return "the leadership lock was lost (its session ended, or another replica holds it)"
            if leadership.epoch != term.epoch:
                return f"leadership was taken again as epoch {leadership.epoch}"
