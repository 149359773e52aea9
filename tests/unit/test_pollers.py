"""Poller logic against a real temporary store and small fake clients (no network)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from revdaemon.domain.cursor import Cursor, UnsortedPage
from revdaemon.engine.pollers import (
    NUE_FIELDS,
    NuePoller,
    PollStatus,
    SalesforceClosedWonPoller,
    nue_datetime,
    parse_timestamp,
    soql_datetime,
)
from revdaemon.errors import AuthFailed, ErrorContext, Retryable, StoreError, Throttled
from revdaemon.limits import Priority
from revdaemon.ops.health import Health
from revdaemon.store import Store, open_store
from revdaemon.store.records import CursorUpdate, NewEvent

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
START = NOW - timedelta(hours=1)
OVERLAP = timedelta(seconds=60)
SF_CONTEXT = ErrorContext(system="salesforce", operation="query")


def sf_stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def opportunity(record_id: str, moment: datetime) -> dict[str, Any]:
    return {"attributes": {"type": "Opportunity"}, "Id": record_id, "AccountId": "001A", "StageName": "Closed Won",
            "IsWon": True, "SystemModstamp": sf_stamp(moment), "LastModifiedById": "005A"}


class FakeSalesforce:
    """Answers the poller's SOQL like the org would: rows at or after the floor, ordered by (stamp, Id)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.queries: list[str] = []
        self.error: Exception | None = None
        self.sort = True

    def put(self, record_id: str, moment: datetime) -> None:
        self.rows[record_id] = opportunity(record_id, moment)

    async def query(self, soql: str, *, priority: Priority = Priority.BACKGROUND) -> AsyncIterator[dict[str, Any]]:
        self.queries.append(soql)
        if self.error is not None:
            raise self.error
        match = re.search(r"SystemModstamp >= (\S+)", soql)
        assert match is not None, soql
        floor = parse_timestamp(match.group(1))
        rows = [r for r in self.rows.values() if parse_timestamp(r["SystemModstamp"]).replace(microsecond=0) >= floor]
        if self.sort:
            rows.sort(key=lambda r: (r["SystemModstamp"][:19], r["Id"]))
        for row in rows:
            yield dict(row)


class FakeNue:
    """GraphQL polling as the connector exposes it: `_gte since` by text, then keyset pages of `page_size`."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str | None]] = []
        self.pages: list[tuple[str, str] | None] = []  # the keyset each page was asked after
        self.after_page: Callable[[int], None] | None = None  # called after each page is served

    def put(self, record_id: str, moment: datetime, **fields: Any) -> None:
        self.rows[record_id] = {"id": record_id, "lastModifiedDate": nue_datetime(moment), **fields}

    async def poll(self, type_name: str, fields: Sequence[str], *, since: str | None,
                   page_size: int = 200) -> AsyncIterator[dict[str, Any]]:
        self.calls.append((type_name, since))
        after: tuple[str, str] | None = None
        page_number = 0
        while True:
            self.pages.append(after)
            rows = sorted((r for r in self.rows.values() if _after(r, after, since)),
                          key=lambda r: (r["lastModifiedDate"], r["id"]))
            page = [dict(r) for r in rows[:page_size]]
            for row in page:
                yield row
            page_number += 1
            if self.after_page is not None:
                self.after_page(page_number)
            if len(page) < page_size:
                return
            after = (page[-1]["lastModifiedDate"], page[-1]["id"])


def _after(row: dict[str, Any], after: tuple[str, str] | None, since: str | None) -> bool:
    if after is not None:
        return (row["lastModifiedDate"], row["id"]) > after
    return since is None or row["lastModifiedDate"] >= since


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "db.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """Let debug lines through whatever level an earlier test configured, and restore it after."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**saved)


@pytest.fixture
def salesforce() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def nue() -> FakeNue:
    return FakeNue()


def sf_poller(client: FakeSalesforce, store: Store, **options: Any) -> SalesforceClosedWonPoller:
    options.setdefault("start", START)
    return SalesforceClosedWonPoller(client, store, overlap=OVERLAP, **options)  # type: ignore[arg-type]


def nue_poller(type_name: str, client: FakeNue, store: Store, **options: Any) -> NuePoller:
    options.setdefault("start", START)
    return NuePoller(type_name, client, store, overlap=OVERLAP, **options)  # type: ignore[arg-type]


async def keys(store: Store) -> list[str]:
    return sorted(e.key for e in await store.list_events(limit=1000))


async def stored_cursor(store: Store, name: str) -> Cursor | None:
    found = await store.get_cursor(name)
    return Cursor.decode(found.value) if found else None


class TestTimestamps:
    def test_parses_both_apis_forms(self) -> None:
        """Salesforce's +0000 form, ISO with Z, and a bare (UTC) value all give the same aware instant."""
        expected = datetime(2013, 5, 7, 22, 7, 19, 250_000, tzinfo=UTC)
        assert parse_timestamp("2013-05-07T22:07:19.250+0000") == expected
        assert parse_timestamp("2013-05-07T22:07:19.250Z") == expected
        assert parse_timestamp("2013-05-07T22:07:19.250") == expected
        assert parse_timestamp("2013-05-08T00:07:19.250+02:00") == expected

    def test_literals(self) -> None:
        """SOQL literals are whole-second Z times; Nue's carry milliseconds so text comparison stays right."""
        moment = datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
        assert soql_datetime(moment) == "2026-01-01T00:00:00Z"
        assert nue_datetime(moment) == "2026-01-01T00:00:00.999Z"
        assert nue_datetime(moment.replace(microsecond=0)) < "2026-01-01T00:00:00.500Z"


class TestSalesforceClosedWonPoller:
    async def test_first_run_reads_from_start_and_stores_events_with_cursor(
            self, salesforce: FakeSalesforce, store: Store) -> None:
        """The first poll asks for won opportunities since `start` and stores one keyed event per row."""
        salesforce.put("006A", NOW - timedelta(minutes=10))
        salesforce.put("006B", NOW - timedelta(minutes=5))
        poller = sf_poller(salesforce, store)
        result = await poller.run_once(NOW)
        assert salesforce.queries == [
            "SELECT Id, AccountId, StageName, IsWon, SystemModstamp, LastModifiedById FROM Opportunity "
            "WHERE IsWon = true AND SystemModstamp >= 2026-01-01T11:00:00Z ORDER BY SystemModstamp, Id"]
        assert (result.status, result.read, result.stored) == (PollStatus.OK, 2, 2)
        [first, second] = await store.list_events(limit=10)
        assert {first.key, second.key} == {"sf:Opportunity:006A:2026-01-01T11:50:00.000+0000",
                                           "sf:Opportunity:006B:2026-01-01T11:55:00.000+0000"}
        assert {first.type, first.source} == {"opportunity.closed_won", "salesforce_poll"}
        assert first.payload["data"]["Id"] in {"006A", "006B"}
        assert await stored_cursor(store, poller.name) == Cursor(at=NOW - timedelta(minutes=5), last_id="006B")
        assert poller.name == "salesforce:Opportunity:closed_won"
        assert poller.last_success_at is not None and poller.last_error is None

    async def test_default_start_is_one_day_back(self, salesforce: FakeSalesforce, store: Store) -> None:
        """Without a configured start, the first poll reads the last day."""
        poller = SalesforceClosedWonPoller(salesforce, store)  # type: ignore[arg-type]
        await poller.run_once(NOW)
        assert "SystemModstamp >= 2025-12-31T12:00:00Z" in salesforce.queries[0]

    async def test_next_floor_is_cursor_minus_overlap(self, salesforce: FakeSalesforce, store: Store) -> None:
        """After a run, the next query starts one overlap before the stored cursor."""
        salesforce.put("006A", NOW - timedelta(minutes=10))
        poller = sf_poller(salesforce, store)
        await poller.run_once(NOW)
        await poller.run_once(NOW + timedelta(minutes=1))
        assert "SystemModstamp >= 2026-01-01T11:49:00Z" in salesforce.queries[1]

    async def test_cursor_does_not_move_when_events_cannot_be_stored(
            self, salesforce: FakeSalesforce, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """If the inbox write fails the cursor stays put, and the next run stores the same rows."""
        salesforce.put("006A", NOW - timedelta(minutes=10))
        poller = sf_poller(salesforce, store)

        async def refuse(events: Sequence[NewEvent], cursor: CursorUpdate | None = None) -> list[bool]:
            raise StoreError("disk full")

        monkeypatch.setattr(store, "add_events", refuse)
        result = await poller.run_once(NOW)
        assert result.status is PollStatus.FAILED and isinstance(result.error, StoreError)
        assert await store.get_cursor(poller.name) is None
        assert await keys(store) == []
        assert poller.last_error == "StoreError: disk full"
        monkeypatch.undo()
        again = await poller.run_once(NOW + timedelta(minutes=1))
        assert (again.status, again.stored) == (PollStatus.OK, 1)
        assert await stored_cursor(store, poller.name) == Cursor(at=NOW - timedelta(minutes=10), last_id="006A")

    async def test_late_commit_inside_overlap_is_read_once(self, salesforce: FakeSalesforce, store: Store) -> None:
        """A row that becomes visible after the cursor passed its (older) stamp is stored by the next poll, once."""
        salesforce.put("006A", NOW - timedelta(seconds=30))
        poller = sf_poller(salesforce, store)
        await poller.run_once(NOW)
        salesforce.put("006LATE", NOW - timedelta(seconds=50))  # stamped before 006A, committed after the poll
        second = await poller.run_once(NOW + timedelta(seconds=30))
        third = await poller.run_once(NOW + timedelta(seconds=60))
        assert (second.stored, third.stored) == (1, 0)
        assert await keys(store) == ["sf:Opportunity:006A:2026-01-01T11:59:30.000+0000",
                                     "sf:Opportunity:006LATE:2026-01-01T11:59:10.000+0000"]

    async def test_a_new_systemmodstamp_is_a_second_event(self, salesforce: FakeSalesforce, store: Store) -> None:
        """The same opportunity changed again gives a second event; the first is not replaced."""
        salesforce.put("006A", NOW - timedelta(minutes=10))
        poller = sf_poller(salesforce, store)
        await poller.run_once(NOW)
        salesforce.put("006A", NOW - timedelta(seconds=5, milliseconds=500))
        result = await poller.run_once(NOW + timedelta(seconds=10))
        assert result.stored == 1
        assert await keys(store) == ["sf:Opportunity:006A:2026-01-01T11:50:00.000+0000",
                                     "sf:Opportunity:006A:2026-01-01T11:59:54.500+0000"]

    async def test_rereading_unchanged_rows_stores_nothing(self, salesforce: FakeSalesforce, store: Store) -> None:
        """Rows read again inside the overlap are no-ops in the inbox, and the cursor stays where it was."""
        salesforce.put("006A", NOW - timedelta(seconds=40))
        salesforce.put("006B", NOW - timedelta(seconds=20))
        poller = sf_poller(salesforce, store)
        await poller.run_once(NOW)
        before = await store.get_cursor(poller.name)
        result = await poller.run_once(NOW + timedelta(seconds=5))
        assert (result.read, result.stored) == (2, 0)
        assert await store.get_cursor(poller.name) == before
        assert len(await keys(store)) == 2

    @pytest.mark.usefixtures("debug_logs")
    async def test_throttled_is_not_a_failure(self, salesforce: FakeSalesforce, store: Store) -> None:
        """A held-back budget leaves health clean, logs only at debug, and the next interval reads normally."""
        salesforce.put("006A", NOW - timedelta(minutes=1))
        salesforce.error = Throttled("budget holds back background work", SF_CONTEXT, retry_after=300)
        poller = sf_poller(salesforce, store)
        with capture_logs() as logs:
            result = await poller.run_once(NOW)
        assert result.status is PollStatus.THROTTLED
        assert poller.last_error is None
        assert [entry["log_level"] for entry in logs] == ["debug"]
        salesforce.error = None
        assert (await poller.run_once(NOW)).stored == 1

    async def test_unsorted_page_fails_without_moving_the_cursor(
            self, salesforce: FakeSalesforce, store: Store) -> None:
        """A page that goes backwards is a recorded failure, and nothing of that page is stored."""
        salesforce.sort = False
        salesforce.put("006B", NOW - timedelta(minutes=5))
        salesforce.put("006A", NOW - timedelta(minutes=10))
        poller = sf_poller(salesforce, store)
        result = await poller.run_once(NOW)
        assert result.status is PollStatus.FAILED and isinstance(result.error, UnsortedPage)
        assert poller.last_error is not None and poller.last_error.startswith("UnsortedPage")
        assert await store.get_cursor(poller.name) is None
        assert await keys(store) == []

    async def test_order_is_checked_across_batches(self, salesforce: FakeSalesforce, store: Store) -> None:
        """With one row per batch, a row older than the last committed one still fails the run there."""
        salesforce.sort = False
        salesforce.put("006B", NOW - timedelta(minutes=5))
        salesforce.put("006A", NOW - timedelta(minutes=10))
        poller = sf_poller(salesforce, store, batch_size=1)
        result = await poller.run_once(NOW)
        assert isinstance(result.error, UnsortedPage) and result.stored == 1
        assert await stored_cursor(store, poller.name) == Cursor(at=NOW - timedelta(minutes=5), last_id="006B")

    async def test_each_batch_commits_events_with_its_cursor(
            self, salesforce: FakeSalesforce, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """Five rows in batches of two make three inbox writes, each carrying the cursor of its last row."""
        for i in range(5):
            salesforce.put(f"006{i}", NOW - timedelta(minutes=10 - i))
        calls: list[tuple[int, str | None]] = []
        real = store.add_events

        async def spy(events: Sequence[NewEvent], cursor: CursorUpdate | None = None) -> list[bool]:
            calls.append((len(events), cursor.value if cursor else None))
            return await real(events, cursor=cursor)

        monkeypatch.setattr(store, "add_events", spy)
        await sf_poller(salesforce, store, batch_size=2).run_once(NOW)
        assert [(n, Cursor.decode(v).last_id if v else None) for n, v in calls] == [
            (2, "0061"), (2, "0063"), (1, "0064")]

    async def test_signpost_caps_the_cursor(self, salesforce: FakeSalesforce, store: Store) -> None:
        """A row stamped after poll start minus the safety lag leaves the cursor at the signpost."""
        salesforce.put("006A", NOW - timedelta(seconds=1))
        poller = sf_poller(salesforce, store)
        await poller.run_once(NOW)
        assert await stored_cursor(store, poller.name) == Cursor(at=NOW - timedelta(seconds=2), last_id="")

    async def test_rows_in_one_second_may_come_in_id_order(self, salesforce: FakeSalesforce, store: Store) -> None:
        """SOQL orders by the whole second, so 006A at .900 before 006B at .100 is not "unsorted"."""
        salesforce.put("006A", NOW - timedelta(minutes=1) + timedelta(milliseconds=900))
        salesforce.put("006B", NOW - timedelta(minutes=1) + timedelta(milliseconds=100))
        result = await sf_poller(salesforce, store).run_once(NOW)
        assert (result.status, result.stored) == (PollStatus.OK, 2)

    async def test_ids_in_one_second_sort_without_case(self, salesforce: FakeSalesforce, store: Store) -> None:
        """SOQL's ORDER BY ignores case (ORDER BY reference: "sorting is case insensitive"): 0065g0aB before
        0065g0AC in one second is in order, as a brownfield first poll of hundreds of deals returns them."""
        salesforce.sort = False
        salesforce.put("0065g0aB", NOW - timedelta(minutes=1))
        salesforce.put("0065g0AC", NOW - timedelta(minutes=1))
        result = await sf_poller(salesforce, store).run_once(NOW)
        assert (result.status, result.stored) == (PollStatus.OK, 2)

    @pytest.mark.usefixtures("debug_logs")
    async def test_auth_failed_stops_the_poller(self, salesforce: FakeSalesforce, store: Store) -> None:
        """Refused credentials stop the poller: one error log, and later runs do not call the API."""
        salesforce.error = AuthFailed("invalid_grant", SF_CONTEXT)
        poller = sf_poller(salesforce, store)
        with capture_logs() as logs:
            first = await poller.run_once(NOW)
            second = await poller.run_once(NOW + timedelta(minutes=1))
        assert first.status is second.status is PollStatus.STOPPED
        assert len(salesforce.queries) == 1
        assert [(e["event"], e["log_level"]) for e in logs] == [("poller_stopped", "error")]
        assert poller.stopped and poller.last_error == "AuthFailed: invalid_grant"

    async def test_a_stopped_poller_makes_the_daemon_not_ready(self, salesforce: FakeSalesforce, store: Store) -> None:
        """While a login is refused /healthz is not ready (whatever the store says), and says which poller stopped;
        a poller that merely failed leaves it ready."""
        health = Health()
        salesforce.error = Retryable("timeout", SF_CONTEXT)
        poller = sf_poller(salesforce, store, health=health)
        await poller.run_once(NOW)
        assert health.ready(store_ok=True) and health.report(store_ok=True)["pollers_stopped"] == []
        salesforce.error = AuthFailed("invalid_grant", SF_CONTEXT)
        await poller.run_once(NOW + timedelta(minutes=1))
        report = health.report(store_ok=True, details=True)
        assert not health.ready(store_ok=True) and report["ready"] is False
        assert report["pollers_stopped"] == [poller.name] and report["pollers"][poller.name]["stopped"] is True

    @pytest.mark.usefixtures("debug_logs")
    async def test_logs_only_on_failure_and_recovery(self, salesforce: FakeSalesforce, store: Store) -> None:
        """Success is silent; the first failure warns, a repeat is debug, recovery is logged once."""
        salesforce.put("006A", NOW - timedelta(minutes=1))
        health = Health()
        poller = sf_poller(salesforce, store, health=health)
        with capture_logs() as logs:
            await poller.run_once(NOW)
            salesforce.error = Retryable("503", SF_CONTEXT)
            await poller.run_once(NOW)
            await poller.run_once(NOW)
            salesforce.error = None
            await poller.run_once(NOW)
            await poller.run_once(NOW)
        assert [(e["event"], e["log_level"]) for e in logs] == [
            ("poll_failed", "warning"), ("poll_failed", "debug"), ("poll_recovered", "info")]
        assert health.poller(poller.name).last_error == "Retryable: 503"  # the last error stays for status


class TestNuePoller:
    @pytest.mark.parametrize("type_name", sorted(NUE_FIELDS))
    async def test_event_shape_per_type(self, type_name: str, nue: FakeNue, store: Store) -> None:
        """Each Nue type gives `<type>.updated` events keyed by id and lastModifiedDate, cursor `nue:<Type>`."""
        nue.put("r1", NOW - timedelta(minutes=3), status="Active")
        poller = nue_poller(type_name, nue, store)
        await poller.run_once(NOW)
        [event] = await store.list_events(limit=10)
        event_type = f"{type_name.lower()}.updated"
        assert (event.source, event.type) == ("nue_poll", event_type)
        assert event.key == f"nue:{event_type}:r1:2026-01-01T11:57:00.000Z"
        assert event.payload == {"type": event_type, "source": "poll", "data": nue.rows["r1"]}
        assert poller.name == f"nue:{type_name}"
        assert nue.calls == [(type_name, "2026-01-01T11:00:00.000Z")]
        assert await stored_cursor(store, poller.name) == Cursor(at=NOW - timedelta(minutes=3), last_id="r1")

    async def test_unknown_type_is_refused(self, nue: FakeNue, store: Store) -> None:
        """A type with no field selection is a programming error, caught at construction."""
        with pytest.raises(ValueError, match="Widget"):
            NuePoller("Widget", nue, store)  # type: ignore[arg-type]

    async def test_pages_by_keyset_with_ties_on_the_boundary(self, nue: FakeNue, store: Store) -> None:
        """One read from the floor; each next page is asked after the last (time, id), ties included once."""
        tie = NOW - timedelta(minutes=5)
        nue.put("a", NOW - timedelta(minutes=9))
        nue.put("b", tie)
        nue.put("c", tie)
        nue.put("d", NOW - timedelta(minutes=4))
        nue.put("e", NOW - timedelta(minutes=3))
        result = await nue_poller("Order", nue, store, page_size=2).run_once(NOW)
        assert (result.status, result.read, result.stored) == (PollStatus.OK, 5, 5)
        assert [since for _, since in nue.calls] == ["2026-01-01T11:00:00.000Z"]
        assert nue.pages == [None, ("2026-01-01T11:55:00.000Z", "b"), ("2026-01-01T11:56:00.000Z", "d")]

    async def test_a_page_boundary_inside_a_run_of_equal_times_skips_nothing(self, nue: FakeNue,
                                                                           store: Store) -> None:
        """A bulk run longer than a page, rows of it moving and arriving between pages: every row is read."""
        run = NOW - timedelta(minutes=5)
        for i in range(7):
            nue.put(f"r{i}", run)

        def churn(page_number: int) -> None:
            if page_number == 1:
                nue.put("r0", NOW - timedelta(seconds=30))  # read already, modified again: moves to the end
                nue.put("r1", NOW - timedelta(seconds=20))  # same
                nue.put("r9", run)  # committed late into the run, after the boundary
            if page_number == 2:
                nue.put("r3", NOW - timedelta(seconds=10))  # an offset would now step over r6

        nue.after_page = churn
        await nue_poller("Invoice", nue, store, page_size=3).run_once(NOW)
        stored = {e.payload["data"]["id"] for e in await store.list_events(limit=50)}
        assert stored == {f"r{i}" for i in (*range(7), 9)}

    async def test_a_row_moving_mid_read_does_not_hide_another(self, nue: FakeNue, store: Store) -> None:
        """A row updated between pages (which shifts offsets) costs no other row its event."""
        for i, name in enumerate("abcdef"):
            nue.put(name, NOW - timedelta(minutes=10 - i))

        def touch_a(page_number: int) -> None:
            if page_number == 1:
                nue.put("a", NOW - timedelta(seconds=30))

        nue.after_page = touch_a
        poller = nue_poller("Subscription", nue, store, page_size=2)
        await poller.run_once(NOW)
        stored = {e.payload["data"]["id"] for e in await store.list_events(limit=50)}
        assert stored == set("abcdef")
