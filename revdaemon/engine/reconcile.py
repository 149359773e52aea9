"""Flow 8 (architecture.md), the I/O half: read both sides, compare (domain.reconciliation), report, repair.

Reads, in this order: every Nue customer (GraphQL pages), their subscriptions and orders (`customerIds`
batches), the catalog (fresh), then the Salesforce accounts they link to, one SOQL `Id IN (...)` per
`salesforce_wire.IDS_PER_IN_LIST` ids or more, at bulk priority, so the job is the first to wait as the daily
budget runs low.

Repair writes nothing itself. For each `salesforce_differs` row (flow 2 finds the account as the row does:
externalId, the store's link, salesAccountId) it stores one inbox event, keyed by customer and day, that flow 2
handles like a
`subscription.updated` notification: it re-reads the customer and writes the account through the normal
executor, with its idempotency, batching, retries and dead letters. A repeated run on the same day adds
no second event.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import structlog

from revdaemon.connectors import nue_wire, salesforce_wire
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.domain.budget import bulk_refusal
from revdaemon.domain.reconciliation import (
    DEFAULT_TOLERANCE,
    AccountFields,
    Comparison,
    Report,
    account_of,
    compare,
    estimated_calls,
)
from revdaemon.flows.common import ACCOUNT_LINK
from revdaemon.flows.record_names import nue_names, salesforce_names
from revdaemon.flows.subscription_status import REPAIR_FLAG, REPAIR_SOURCE, SubscriptionStatusMapping
from revdaemon.limits import DailyBudget, Priority
from revdaemon.store import Store
from revdaemon.store.records import NewEvent

log = structlog.get_logger("revdaemon.reconcile")

NAMES_PER_WRITE = 1000  # names kept per store transaction
REPAIR_EVENT_TYPE = "subscription.updated"  # one of flow 2's event types


class RunRefused(ValueError):
    """A reconciliation asked for now was not started; the message says why, for the operator."""


class ReconciliationJob:
    """Flow 8 as the scheduler's nightly job and as an operator's "run now", one run at a time.

    `request` does not run anything itself: it checks that no run is under way or already asked for, that the
    Salesforce budget has room for the run's estimated calls (domain.budget.bulk_refusal: the accounts of the
    last report, `salesforce_wire.IDS_PER_IN_LIST` or more a query), then has the scheduler run the job at once
    (`trigger`: False while this replica does not lead). The run happens in the scheduler, as the nightly one does."""

    def __init__(self, run: Callable[[], Awaitable[Report]], *, budget: DailyBudget, trigger: Callable[[], bool],
                 report_path: Path | None = None) -> None:
        self._run = run
        self._budget = budget
        self._trigger = trigger
        self._report_path = report_path
        self.running_since: datetime | None = None
        self.requested_at: datetime | None = None

    async def run(self) -> Report | None:
        """The job: one run, unless the budget holds bulk work back (None)."""
        self.requested_at = None
        if not self._budget.allows(Priority.BULK):
            log.warning("reconciliation_deferred", reason="the Salesforce budget holds back bulk work",
                        used=self._budget.used, total=self._budget.total)
            return None
        self.running_since = datetime.now(UTC)
        try:
            return await self._run()
        finally:
            self.running_since = None

    async def request(self) -> str:
        """Start a run now, or raise RunRefused with the reason; returns what the operator is told."""
        if self.running_since is not None:
            raise RunRefused(f"a reconciliation is running since {self.running_since:%H:%M:%S} UTC; its report "
                             "replaces this one when it ends")
        if self.requested_at is not None:
            raise RunRefused(f"a reconciliation was asked for at {self.requested_at:%H:%M:%S} UTC and starts in a "
                             "moment")
        calls = estimated_calls(await _accounts_in(self._report_path), salesforce_wire.IDS_PER_IN_LIST)
        reason = bulk_refusal(self._budget.plan(), calls)
        if reason is not None:
            raise RunRefused(reason)
        if not self._trigger():
            raise RunRefused("this daemon's scheduler runs no jobs now (this replica does not lead, or it runs "
                             "without its schedule): start it on the active replica")
        self.requested_at = datetime.now(UTC)
        log.info("reconciliation_requested", estimated_calls=calls)
        return (f"Reconciliation started (about {calls} Salesforce call(s)); this page shows its report once it "
                "ends.")


async def _accounts_in(path: Path | None) -> int:
    """How many accounts the last report read (0 before the first): the best guess of the next run's."""
    if path is None or not await anyio.Path(path).exists():
        return 0
    try:
        report = json.loads(await anyio.Path(path).read_text(encoding="utf-8"))
        return sum(1 for row in report.get("rows", ()) if row.get("account_id"))
    except (ValueError, AttributeError):
        return 0  # an unreadable report: the next run writes a good one


async def reconcile(
    nue: NueClient,
    salesforce: SalesforceClient,
    *,
    store: Store | None = None,
    repair: bool = False,
    report_path: Path | None = None,
    mapping: SubscriptionStatusMapping | None = None,
    tolerance: Decimal = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> Report:
    """Compare every Nue customer with its Salesforce account; with `repair`, queue flow 2 for each
    account that shows the wrong figures. Returns the report (also written as JSON to `report_path`)."""
    if repair and store is None:
        raise ValueError("repair needs a store to queue the repair events in")
    now = now or datetime.now(UTC)
    mapping = mapping or SubscriptionStatusMapping()
    fields = AccountFields(mrr=mapping.mrr_field, arr=mapping.arr_field, status=mapping.status_field,
                           status_values=mapping.status_values)

    customers = await _customers(nue)
    ids = [str(c["id"]) for c in customers]
    subscriptions = _by_customer(await nue.list_subscriptions(ids)) if ids else {}
    orders = _by_customer(await nue.list_orders(ids)) if ids else {}
    catalog = await nue.products(refresh=True)
    links = await _store_links(store, customers)
    account_ids = sorted({account for c in customers
                          if (account := account_of(c, links.get(str(c["id"])))[1]) is not None})
    accounts = await _accounts(salesforce, mapping.account_object, account_ids, fields.selected)
    if store is not None:
        await _keep_names(store, customers, subscriptions, orders, mapping.account_object, accounts)

    report = compare(customers, subscriptions, orders, catalog, accounts, tolerance, fields=fields,
                     generated_at=now.isoformat(), links=links)
    if repair and store is not None:
        report = replace(report, repairs=await _queue_repairs(store, report.repairable, now.date()))
    if report_path is not None:
        await write_report(report, report_path)
    counts = {kind.value: count for kind, count in report.counts.items()}
    log.info("reconciliation_finished", customers=len(report.rows), repairs=len(report.repairs), **counts)
    return report


async def write_report(report: Report, path: Path) -> None:
    """The report as JSON, replaced whole (written beside it, then renamed)."""
    text = json.dumps(report.as_dict(), indent=2, sort_keys=False) + "\n"
    target = anyio.Path(path)
    await target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    await partial.write_text(text, encoding="utf-8")
    await partial.replace(target)


async def _customers(nue: NueClient) -> list[dict[str, Any]]:
    # Offset pages ordered by lastModifiedDate: a customer changed during the read can come twice.
    seen: dict[str, dict[str, Any]] = {}
    async for customer in nue.poll("Customer", nue_wire.CUSTOMER_FIELDS, since=None):
        seen[str(customer["id"])] = customer
    return list(seen.values())


def _by_customer(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[str(row.get("customerId"))].append(row)
    return dict(grouped)


async def _accounts(salesforce: SalesforceClient, sobject: str, ids: Sequence[str],
                    selected: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for soql, _asked in salesforce_wire.where_in_batches(f"SELECT {', '.join(selected)} FROM {sobject}", [("Id", ids)]):
        async for row in salesforce.query(soql, priority=Priority.BULK):
            found[str(row["Id"])] = row
    return found


def repair_event(customer_id: str, day: date) -> NewEvent:
    """The inbox event that makes flow 2 rewrite one customer's account (`repair`: over a hand edit too,
    since an operator asked for it)."""
    return NewEvent(source=REPAIR_SOURCE, key=repair_key(customer_id, day), type=REPAIR_EVENT_TYPE,
                    payload={"data": {"id": customer_id, "customerId": customer_id}, REPAIR_FLAG: True})


def repair_key(customer_id: str, day: date) -> str:
    """The repair event's key: one a customer a day, however often it is asked for."""
    return f"reconcile:{customer_id}:{day.isoformat()}"


def repair_targets(rows: Sequence[Comparison]) -> tuple[str, ...]:
    """The customers whose accounts a repair rewrites: every row with an account (flow 2 finds it the same way)."""
    return tuple(row.customer_id for row in rows if row.account_id is not None)


async def _store_links(store: Store | None, customers: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The store's account of each customer Nue names none for (flow 6 made or found it): customer id -> account."""
    links: dict[str, str] = {}
    if store is None:
        return links
    for customer in customers:
        if not customer.get("externalId"):
            link = await store.find_link(ACCOUNT_LINK, nue_id=str(customer["id"]))
            if link is not None:
                links[str(customer["id"])] = link.salesforce_id
    return links


async def _keep_names(store: Store, customers: Sequence[Mapping[str, Any]],
                      subscriptions: Mapping[str, Sequence[Mapping[str, Any]]],
                      orders: Mapping[str, Sequence[Mapping[str, Any]]], account_object: str,
                      accounts: Mapping[str, Mapping[str, Any]]) -> None:
    """The names and numbers of everything this run read, so the pages name every customer and account after
    the first nightly run (the workers name only what they touch). In slices: one short transaction each."""
    names = [*nue_names("Customer", customers),
             *nue_names("Subscription", (s for rows in subscriptions.values() for s in rows)),
             *nue_names("Order", (o for rows in orders.values() for o in rows)),
             *salesforce_names(account_object, accounts.values())]
    for start in range(0, len(names), NAMES_PER_WRITE):
        await store.remember_names(names[start:start + NAMES_PER_WRITE])


async def _queue_repairs(store: Store, rows: Sequence[Comparison], day: date) -> tuple[str, ...]:
    queued = repair_targets(rows)
    if not queued:
        return ()
    added = await store.add_events([repair_event(customer_id, day) for customer_id in queued])
    log.info("reconciliation_repairs_queued", queued=len(queued), new=sum(added))
    return tuple(queued)
