"""A store that fails where a test says: the process killed (kill -9), or the store's own error, at a chosen call.

Every call of a `Store` method through the wrapper is counted (1, 2, ...), whoever makes it (worker, executor,
listener). A fault armed for call N fires there:

- `CRASH_BEFORE`: the process dies as call N begins, so it never reaches the database. A kill inside a
  transaction is the same thing: SQLite rolls the uncommitted transaction back.
- `CRASH_AFTER`: call N commits, then the process dies before its caller sees the answer.
- `ERROR`: call N fails with the store's own error and changes nothing. That is what a locked or failing
  database raises (`StoreBusy`, `StoreUnavailable`: revdaemon/store/sqlite.py `_translated`), and each method
  is one transaction (store/base.py), rolled back whole.

A crash raises `Crash`, a BaseException: it is a control signal, not an error (structlog's `DropEvent` is one
too), so no `except Exception` handler in revdaemon runs, as none would after a kill. Once a crash has fired,
every later call raises it again, so not even a `finally` block reaches the database. The test then opens a new
store on the same file, as the restarted daemon would. `close` passes through uncounted: the test uses it to
let go of the dead process's connection.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from revdaemon.errors import StoreError, StoreUnavailable
from revdaemon.store import Store


class Crash(BaseException):
    """The process was killed here."""


class FaultKind(StrEnum):
    CRASH_BEFORE = "killed before"
    CRASH_AFTER = "killed after"
    ERROR = "failed"


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    error: type[StoreError] = StoreUnavailable  # for ERROR


Observer = Callable[[str, object], None]  # (method name, its result), after each call that returned


class FaultyStore:
    """Wraps `inner`; pass `store` (typed as the `Store` it stands for) wherever a store is expected."""

    def __init__(self, inner: Store, *, observer: Observer | None = None) -> None:
        self.inner = inner
        self.calls = 0
        self.crashed = False
        self.fired: list[str] = []  # what fired, in words: "call 17 (mark_intent_sent): killed after"
        self._armed: dict[int, Fault] = {}
        self._observer = observer

    @property
    def store(self) -> Store:
        return cast(Store, self)  # every Store method, through __getattr__

    def arm(self, fault: Fault, *, in_calls: int) -> int:
        """Fire `fault` at the `in_calls`-th call from now (1: the next one); returns that call's number."""
        if in_calls < 1:
            raise ValueError("a fault fires at a call still to come: in_calls >= 1")
        at = self.calls + in_calls
        self._armed[at] = fault
        return at

    def disarm(self) -> None:
        self._armed.clear()

    @property
    def armed(self) -> int:
        return len(self._armed)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        @functools.wraps(attribute)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, attribute, args, kwargs)

        return call

    async def _call(self, name: str, method: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if self.crashed:
            raise Crash(f"{name}: the process is dead")
        self.calls += 1
        fault = self._armed.pop(self.calls, None)
        if fault is not None:
            self.fired.append(f"call {self.calls} ({name}): {fault.kind.value}")
            if fault.kind is FaultKind.CRASH_BEFORE:
                self.crashed = True
                raise Crash(f"killed as call {self.calls} ({name}) began")
            if fault.kind is FaultKind.ERROR:
                raise fault.error(f"injected: call {self.calls} ({name}) failed and changed nothing")
        result = await method(*args, **kwargs)
        if fault is not None:  # CRASH_AFTER
            self.crashed = True
            raise Crash(f"killed after call {self.calls} ({name}) committed")
        if self._observer is not None:
            self._observer(name, result)
        return result
