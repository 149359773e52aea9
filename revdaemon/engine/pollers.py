"""Pollers: read what changed since a stored cursor and put it in the inbox, cursor and events together.

Theory of operation (style.md §8, §10; Home Assistant's DataUpdateCoordinator, Meltano's bookmarks):

- One `Poller` per source stream; its name is also the name of its cursor in the store. A subclass writes
  only `fetch_since(floor)` (records ordered by (time, id)), `key_of(record)` and `event_of(record)`.
- `run_once(now)` reads from `query_floor(cursor, overlap, start)` and commits each batch of records as
  inbox events with the cursor `advance`d over exactly that batch, in ONE `Store.add_events` call. The
  cursor therefore never covers an event that was not stored; a crash loses at most a re-read.
- The overlap re-reads recent rows so that a row committed late with an older timestamp is still seen
  (salesforce-api.md §4.1). Re-reads cost nothing: an event is keyed by (id, modified time), so the inbox
  skips a row it already holds, while a second real change of the same row gets a new key.
- The cursor never passes the signpost (poll start minus a safety lag), so rows changed while a poll runs
  are read again next time rather than skipped. A stream that goes backwards raises `UnsortedPage`
  before anything of that batch is stored.
- Outcomes become state in `Health` (last success, last error). Logs only on failure and on recovery.
  `Throttled` (a budget or a 429 the client gave up on) is not a failure: try next interval. `AuthFailed`,
  or `AuthExpired` surviving the client's one refresh, stops the poller until the daemon restarts.
"""

from __future__ import annotations

import contextlib
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import structlog

from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.domain.cursor import Cursor, advance, query_floor
from revdaemon.errors import AuthExpired, AuthFailed, SyncError, Throttled
from revdaemon.flows import sources
from revdaemon.limits import Priority
from revdaemon.ops.alerts import Alerter, AlertKind
from revdaemon.ops.health import Health
from revdaemon.ops.metrics import Metrics
from revdaemon.store import Store
from revdaemon.store.records import CursorUpdate, NewEvent, utcnow

log = structlog.get_logger("revdaemon.pollers")

T = TypeVar("T")
Record = Mapping[str, Any]
Key = tuple[datetime, str]

DEFAULT_LOOKBACK = timedelta(days=1)  # where a stream with no cursor starts, unless `start` is given
DEFAULT_OVERLAP = timedelta(minutes=10)  # config.ScheduleSettings.poll_overlap_seconds, nue_poll_overlap_seconds
SAFETY_LAG = timedelta(seconds=2)  # signpost = poll start minus this: clocks and commits lag a little
BATCH_SIZE = 200  # records per add_events transaction


# --- timestamps -------------------------------------------------------------------------------------


def parse_timestamp(text: str) -> datetime:
    """An aware UTC datetime from Salesforce (`2013-05-07T22:07:19.000+0000`) or ISO-8601 with `Z`.

    A value without an offset is taken as UTC (both APIs speak UTC)."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def soql_datetime(moment: datetime) -> str:
    """A SOQL datetime literal, unquoted, to the second (SOQL compares at whole seconds, §4.1)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def nue_datetime(moment: datetime) -> str:
    """Nue's own form, with milliseconds: `_gte` may compare as text, so `...:00Z` would sort after `...:00.5Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- the base poller --------------------------------------------------------------------------------


class PollStatus(enum.StrEnum):
    OK = "ok"
    THROTTLED = "throttled"  # not a failure: the next interval tries again
    FAILED = "failed"
    STOPPED = "stopped"  # credentials refused: nothing runs until a restart


@dataclass(frozen=True, kw_only=True)
class PollResult:
    status: PollStatus
    read: int = 0  # records received, re-reads included
    stored: int = 0  # events new to the inbox
    cursor: Cursor | None = None  # the cursor as stored after the run
    error: BaseException | None = None


class _Progress:
    __slots__ = ("cursor", "last_key", "read", "stored")

    def __init__(self, cursor: Cursor | None) -> None:
        self.cursor = cursor
        self.last_key: Key | None = None
        self.read = 0
        self.stored = 0


class Poller(ABC):
    """One incremental stream into the inbox. Subclasses write `fetch_since`, `key_of` and `event_of`."""

    source: ClassVar[str]

    def __init__(
        self,
        name: str,
        store: Store,
        *,
        health: Health | None = None,
        overlap: timedelta = DEFAULT_OVERLAP,
        start: datetime | None = None,
        safety_lag: timedelta = SAFETY_LAG,
        batch_size: int = BATCH_SIZE,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
        alerter: Alerter | None = None,
        priority: Priority = Priority.POLL,
    ) -> None:
        self.priority = priority  # Priority.BULK for a backfill: it waits before polls do
        self.metrics = metrics
        self.alerter = alerter
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.name = name
        self.store = store
        self.health = health if health is not None else Health()
        self.overlap = overlap
        self.start = start
        self.safety_lag = safety_lag
        self.batch_size = batch_size
        self._clock = clock
        self.stopped = False
        self._failing = False
        self._last_error_type: type[BaseException] | None = None

    # --- what a subclass writes ---------------------------------------------------------------------

    @abstractmethod
    def fetch_since(self, floor: datetime) -> AsyncIterator[Record]:
        """Records modified at or after `floor`, ordered by `key_of` ascending."""

    @abstractmethod
    def key_of(self, record: Record) -> Key:
        """The (modified time, id) the stream is ordered by."""

    @abstractmethod
    def event_of(self, record: Record) -> NewEvent:
        """The inbox event for one record, keyed by (id, modified time)."""

    # --- state --------------------------------------------------------------------------------------

    @property
    def last_success_at(self) -> datetime | None:
        return self.health.poller(self.name).last_success_at

    @property
    def last_error(self) -> str | None:
        return self.health.poller(self.name).last_error

    async def cursor(self) -> Cursor | None:
        stored = await self.store.get_cursor(self.name)
        return Cursor.decode(stored.value) if stored is not None else None

    # --- running ------------------------------------------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> PollResult:
        """Read everything since the cursor into the inbox; never raises except on cancellation."""
        if self.stopped:
            return PollResult(status=PollStatus.STOPPED)
        now = now if now is not None else self._clock()
        progress = _Progress(None)
        try:
            await self._poll(now, progress)
        except Throttled as exc:
            log.debug("poll_throttled", poller=self.name, error=str(exc), retry_after=exc.retry_after)
            return self._result(PollStatus.THROTTLED, progress, exc)
        except (AuthFailed, AuthExpired) as exc:
            self._stop(exc)
            return self._result(PollStatus.STOPPED, progress, exc)
        except Exception as exc:  # any other failure is "try again next interval" (HA's UpdateFailed)
            self._failed(exc)
            return self._result(PollStatus.FAILED, progress, exc)
        self._succeeded()
        return self._result(PollStatus.OK, progress)

    async def _poll(self, now: datetime, progress: _Progress) -> None:
        progress.cursor = await self.cursor()
        floor = query_floor(progress.cursor, overlap=self.overlap, start=self.start or now - DEFAULT_LOOKBACK)
        signpost = now - self.safety_lag
        batch: list[Record] = []
        # closing: a failure mid-stream must still close the client's generator (and its connection)
        async with _closing(self.fetch_since(floor)) as records:
            async for record in records:
                progress.read += 1
                batch.append(record)
                if len(batch) >= self.batch_size:
                    await self._commit(batch, signpost, progress)
                    batch = []
        if batch:
            await self._commit(batch, signpost, progress)

    async def _commit(self, batch: Sequence[Record], signpost: datetime, progress: _Progress) -> None:
        keys = [self.key_of(record) for record in batch]
        # the previous batch's last key goes first so that order is also checked across batches
        checked = [progress.last_key, *keys] if progress.last_key is not None else keys
        cursor = advance(progress.cursor, checked, signpost=signpost)
        events = [self.event_of(record) for record in batch]
        update = CursorUpdate(name=self.name, value=cursor.encode()) if cursor and cursor != progress.cursor else None
        flags = await self.store.add_events(events, cursor=update)
        if self.metrics is not None:
            for event, new in zip(events, flags, strict=True):
                if new:
                    self.metrics.event_received(event.source, event.type)
        progress.cursor, progress.last_key = cursor, keys[-1]
        progress.stored += sum(flags)

    def _result(self, status: PollStatus, progress: _Progress, error: BaseException | None = None) -> PollResult:
        return PollResult(status=status, read=progress.read, stored=progress.stored, cursor=progress.cursor,
                          error=error)

    # --- outcomes (HA: state, and a log line only when it changes) -----------------------------------

    def _succeeded(self) -> None:
        self.health.poll_succeeded(self.name)
        if self._failing:
            log.info("poll_recovered", poller=self.name)
        self._failing, self._last_error_type = False, None

    def _failed(self, exc: Exception) -> None:
        self.health.poll_failed(self.name, _describe(exc))
        # the first failure (or a different kind of failure) is a warning; repeats stay at debug
        repeated = self._failing and type(exc) is self._last_error_type
        if repeated:
            log.debug("poll_failed", poller=self.name, error=_describe(exc))
        else:
            log.warning("poll_failed", poller=self.name, error=_describe(exc),
                        exc_info=not isinstance(exc, SyncError))
            if self.alerter is not None:
                self.alerter.alert(AlertKind.POLLER_FAILING, self.name, _describe(exc))
        self._failing, self._last_error_type = True, type(exc)

    def _stop(self, exc: SyncError) -> None:
        self.stopped = True
        self.health.poll_stopped(self.name, _describe(exc))  # and /healthz is not ready until a restart
        log.error("poller_stopped", poller=self.name, error=_describe(exc),
                  reason="credentials refused; fix them and restart the daemon")
        if self.alerter is not None:
            self.alerter.alert(AlertKind.POLLER_FAILING, f"{self.name}:stopped", _describe(exc),
                               fix="credentials refused; fix them and restart")


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncGenerator[AsyncIterator[T], None]:
    """contextlib.aclosing for anything typed as an AsyncIterator (the clients' generators are)."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- Salesforce ---------------------------------------------------------------------------------------


class SalesforceClosedWonPoller(Poller):
    """Opportunities that are won, read by SystemModstamp (salesforce-api.md §4.1).

    The event fires for every change of a won opportunity; "became Closed Won" is decided by the flow
    against local state (one order per opportunity ever), not here."""

    source = sources.SALESFORCE_POLL
    CURSOR = "salesforce:Opportunity:closed_won"
    EVENT_TYPE = "opportunity.closed_won"
    FIELDS = ("Id", "AccountId", "StageName", "IsWon", "SystemModstamp", "LastModifiedById")

    def __init__(self, client: SalesforceClient, store: Store, **options: Any) -> None:
        super().__init__(self.CURSOR, store, **options)
        self.client = client

    def soql(self, floor: datetime) -> str:
        return (f"SELECT {', '.join(self.FIELDS)} FROM Opportunity "
                f"WHERE IsWon = true AND SystemModstamp >= {soql_datetime(floor)} ORDER BY SystemModstamp, Id")

    async def fetch_since(self, floor: datetime) -> AsyncIterator[Record]:
        # a query locator is a server-side snapshot, so plain nextRecordsUrl paging cannot skip rows
        async with _closing(self.client.query(self.soql(floor), priority=self.priority)) as rows:
            async for row in rows:
                yield row

    def key_of(self, record: Record) -> Key:
        # whole seconds: SOQL compares and may order SystemModstamp ignoring milliseconds (§4.1), so two
        # rows in one second can come in Id order; the cursor needs no finer grain than the query's floor.
        # The Id as ORDER BY sorts it: "sorting is case insensitive" (SOQL ORDER BY reference), so a burst of
        # rows in one second (a brownfield first poll) is not taken for a page that went backwards.
        return parse_timestamp(record["SystemModstamp"]).replace(microsecond=0), str(record["Id"]).upper()

    def event_of(self, record: Record) -> NewEvent:
        return NewEvent(source=self.source, key=f"sf:Opportunity:{record['Id']}:{record['SystemModstamp']}",
                        type=self.EVENT_TYPE, payload={"data": dict(record)})


# --- Nue ----------------------------------------------------------------------------------------------

# Small selections: the worker re-reads the resource before planning, the event only has to name it.
NUE_FIELDS: dict[str, tuple[str, ...]] = {
    "Customer": ("id", "lastModifiedDate", "name", "salesAccountId"),
    "Order": ("id", "lastModifiedDate", "customerId", "status"),
    "Subscription": ("id", "lastModifiedDate", "name", "customerId", "status"),
    "Invoice": ("id", "lastModifiedDate", "customerId", "status", "paymentStatus"),
    "Quote": ("id", "lastModifiedDate", "customerId", "status", "opportunityId"),
}
NUE_PAGE_SIZE = 200


class NuePoller(Poller):
    """One Nue object type read over GraphQL by lastModifiedDate; a fallback for missed webhooks.

    Paging rule: `lastModifiedDate >= floor`, then each page the keyset after the last (lastModifiedDate, id)
    read (NueClient.poll). The overlap below the cursor re-reads rows committed late with an older time."""

    source = sources.NUE_POLL

    def __init__(self, type_name: str, client: NueClient, store: Store, *, page_size: int = NUE_PAGE_SIZE,
                 **options: Any) -> None:
        if type_name not in NUE_FIELDS:
            raise ValueError(f"no Nue poller for {type_name!r}; known: {', '.join(NUE_FIELDS)}")
        super().__init__(f"nue:{type_name}", store, **options)
        self.type_name = type_name
        self.event_type = f"{type_name.lower()}.updated"
        self.fields = NUE_FIELDS[type_name]
        self.client = client
        self.page_size = page_size

    async def fetch_since(self, floor: datetime) -> AsyncIterator[Record]:
        # NueClient.poll pages by keyset on (lastModifiedDate, id), never by offset, so a page boundary
        # inside a run of equal timestamps skips nothing (see its docstring).
        pages = self.client.poll(self.type_name, self.fields, since=nue_datetime(floor), page_size=self.page_size)
        async with _closing(pages) as records:
            async for record in records:
                yield record

    def key_of(self, record: Record) -> Key:
        return parse_timestamp(record["lastModifiedDate"]), str(record["id"])

    def event_of(self, record: Record) -> NewEvent:
        return NewEvent(source=self.source, key=f"nue:{self.event_type}:{record['id']}:{record['lastModifiedDate']}",
                        type=self.event_type, payload={"type": self.event_type, "data": dict(record),
                                                       "source": "poll"})


__all__ = [
    "NUE_FIELDS",
    "NuePoller",
    "PollResult",
    "PollStatus",
    "Poller",
    "SalesforceClosedWonPoller",
    "nue_datetime",
    "parse_timestamp",
    "soql_datetime",
]
