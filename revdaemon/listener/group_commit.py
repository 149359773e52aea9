"""Group commit: concurrent webhook requests share one durable transaction, each still waits for it.

Theory of operation: `submit` puts the event on a bounded stream and waits on its own completion flag.
The committer task takes the first waiting event, drains whatever else is already queued (up to
`max_batch`), stores them in one `add_events` transaction (one fsync for all), then wakes every waiter
with its own result. Under no load a batch is one event and adds no delay; under load the commit cost
is shared, which is what lets durable ingest go faster than one fsync per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from revdaemon.store import Store
from revdaemon.store.records import NewEvent

MAX_BATCH = 512


@dataclass(eq=False)
class _Pending:
    event: NewEvent
    done: anyio.Event = field(default_factory=anyio.Event)
    inserted: bool = False
    error: BaseException | None = None


class GroupCommitter:
    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH,
                 on_commit: Callable[[], None] | None = None) -> None:
        self._store = store
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](max_batch * 4)
        self.commits = 0
        self.events = 0

    async def submit(self, event: NewEvent) -> bool:
        """Store `event` durably; True if it was new, False if its key was already in the inbox."""
        pending = _Pending(event)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.inserted

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            # Shielded: a shutdown must not leave waiters without an answer for a commit that happened.
            with anyio.CancelScope(shield=True):
                flags = await self._store.add_events([p.event for p in batch])
        except Exception as exc:
            if len(batch) > 1:
                # One event that cannot be stored must not fail its neighbours: store them one by one.
                for pending in batch:
                    await self._commit([pending])
            else:
                batch[0].error = exc
                batch[0].done.set()
            return
        self.commits += 1
        self.events += len(batch)
        if self._on_commit is not None and any(flags):
            self._on_commit()
        for pending, inserted in zip(batch, flags, strict=True):
            pending.inserted = inserted
            pending.done.set()
