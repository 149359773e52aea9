"""The garbage collector and a long-running process (issue 30).

A full collection walks every object the process holds. Most of them are there from the start and for good: the
modules, the config, the clients (about 90 MB of a daemon's 150). Frozen once the daemon is built, they are left
out of every later collection, so a full collection costs what the work in hand holds, not the whole process
(a 30,000-event drain spent 5.3 s in 55 full collections without it). The same step CPython's docs give for a
server before it forks workers (`gc.freeze`)."""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> int:
    """Collect what start-up left behind, then move everything still alive to the permanent generation (which
    no collection walks); returns how many objects are frozen. Once per process: a frozen object that later
    becomes cyclic garbage is never collected, so a process that builds daemons again and again (the tests) must
    not freeze each one's leftovers."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
    return gc.get_freeze_count()
