"""Flow 8 (architecture.md), the pure half: compare Nue's subscription state with the Salesforce accounts.

For every Nue customer one row holds three views of its MRR:
- computed: what the domain makes of its live subscriptions (domain.subscriptions, as flow 2 writes it);
- Nue's own: the customer's `todayCMRR`/`todayARR` (nue-api.md, Subscription: "the cross-check");
- Salesforce's: the linked account's MRR, ARR and subscription status fields.

Each row gets one `Drift`, the first that applies, in this order:
1. `nue_disagrees`: the computed MRR (or ARR) differs from Nue's own figure, or the customer cannot be priced.
   Our number is then not to be trusted, so nothing is repaired: a person should look.
2. `unlinked`: the customer has no Salesforce account: neither `externalId`, nor the store's link (flow 6 made or
   found the account of a customer made in Nue), nor `salesAccountId` (the order flow 2 follows).
3. `missing_account`: it names one that Salesforce did not return.
4. `salesforce_differs`: the account's MRR, ARR or status is not what flow 2 would write. Repairable by
   running flow 2 for the customer.
5. `in_sync`.

Amounts match when they differ by at most `tolerance` (ARR: `tolerance` x 12, as ARR is MRR x 12 and the
two sides round at different points). An empty Salesforce amount reads as zero, so an account of a
customer that never had a subscription is in sync. Status is compared only when the caller passes the
Nue -> Salesforce picklist table flow 2 uses (`AccountFields.status_values`). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from revdaemon.domain.money import ZERO, PriceEntry, PricingError, cents, to_decimal
from revdaemon.domain.subscriptions import (
    LIVE_STATUSES,
    LineTerms,
    customer_state,
    order_lines,
    price_entries,
    subscription_mrr,
)

DEFAULT_TOLERANCE = Decimal("0.01")  # one cent of MRR
MONTHS_PER_YEAR = 12
LINK_FIELDS = ("externalId", "salesAccountId")  # nue-api.md, Customer: the Salesforce Account id
STORE_LINK = "store link"  # the account flow 6 linked in the store (flows.common.ACCOUNT_LINK)
SF_ID_SHORT, SF_ID_LONG = 15, 18  # a Salesforce id, and the same id with its case-checksum suffix
NO_CURRENCY = "?"  # totals bucket for customers with no live subscription


class Drift(StrEnum):
    IN_SYNC = "in_sync"
    SALESFORCE_DIFFERS = "salesforce_differs"  # our field is wrong: flow 2 repairs it
    NUE_DISAGREES = "nue_disagrees"  # our MRR is not Nue's: a person should look
    UNLINKED = "unlinked"  # no Salesforce account named
    MISSING_ACCOUNT = "missing_account"  # the named account is not in Salesforce

    @property
    def repairable(self) -> bool:
        return self is Drift.SALESFORCE_DIFFERS


# Report order: what needs a person first, what is fine last.
ORDER = (Drift.NUE_DISAGREES, Drift.SALESFORCE_DIFFERS, Drift.MISSING_ACCOUNT, Drift.UNLINKED, Drift.IN_SYNC)


@dataclass(frozen=True, kw_only=True)
class AccountFields:
    """Where flow 2 writes on the account (SubscriptionStatusMapping), so both read the same fields."""

    name: str = "Name"
    mrr: str = "MRR__c"
    arr: str = "ARR__c"
    status: str = "Subscription_Status__c"
    status_values: Mapping[str, str] | None = None  # Nue status -> picklist value; None: status not compared

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("Id", self.name, self.mrr, self.arr, self.status)))


@dataclass(frozen=True, kw_only=True)
class SubscriptionLine:
    """One subscription's share of the computed MRR (None when it cannot be priced)."""

    id: str
    name: str | None
    status: str | None
    mrr: Decimal | None


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One customer, as Nue, the domain and Salesforce see it."""

    customer_id: str
    customer_name: str | None
    account_id: str | None
    linked_by: str | None  # "externalId" | STORE_LINK | "salesAccountId"
    account_name: str | None
    currency: str | None
    computed_mrr: Decimal | None  # None: could not be priced
    computed_arr: Decimal | None
    nue_cmrr: Decimal | None  # None: Nue reported none
    nue_arr: Decimal | None
    salesforce_mrr: Decimal | None  # None: empty field or no account
    salesforce_arr: Decimal | None
    nue_status: str | None  # the most alive subscription status
    expected_status: str | None  # the picklist value flow 2 would write
    salesforce_status: str | None
    drift: Drift
    reasons: tuple[str, ...] = ()
    subscriptions: tuple[SubscriptionLine, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id, "customer_name": self.customer_name,
            "account_id": self.account_id, "linked_by": self.linked_by, "account_name": self.account_name,
            "currency": self.currency, "drift": self.drift.value, "repairable": self.drift.repairable,
            "computed_mrr": _text(self.computed_mrr), "computed_arr": _text(self.computed_arr),
            "nue_cmrr": _text(self.nue_cmrr), "nue_arr": _text(self.nue_arr),
            "salesforce_mrr": _text(self.salesforce_mrr), "salesforce_arr": _text(self.salesforce_arr),
            "nue_status": self.nue_status, "expected_status": self.expected_status,
            "salesforce_status": self.salesforce_status, "reasons": list(self.reasons),
            "subscriptions": [{"id": s.id, "name": s.name, "status": s.status, "mrr": _text(s.mrr)}
                              for s in self.subscriptions],
        }


@dataclass(frozen=True, kw_only=True)
class Totals:
    """Sums of one currency's rows, each side over the rows where it has a figure."""

    computed_mrr: Decimal = ZERO
    nue_cmrr: Decimal = ZERO
    salesforce_mrr: Decimal = ZERO

    def as_dict(self) -> dict[str, str]:
        return {"computed_mrr": str(self.computed_mrr), "nue_cmrr": str(self.nue_cmrr),
                "salesforce_mrr": str(self.salesforce_mrr)}


@dataclass(frozen=True, kw_only=True)
class Report:
    rows: tuple[Comparison, ...]
    tolerance: Decimal = DEFAULT_TOLERANCE
    generated_at: str | None = None
    repairs: tuple[str, ...] = ()  # customer ids with a repair event in the inbox for the day (engine fills in)

    @property
    def counts(self) -> dict[Drift, int]:
        """Rows per drift kind, every kind present."""
        counts = dict.fromkeys(Drift, 0)
        for row in self.rows:
            counts[row.drift] += 1
        return counts

    @property
    def drifted(self) -> tuple[Comparison, ...]:
        return tuple(row for row in self.rows if row.drift is not Drift.IN_SYNC)

    @property
    def repairable(self) -> tuple[Comparison, ...]:
        return tuple(row for row in self.rows if row.drift.repairable)

    @property
    def totals(self) -> dict[str, Totals]:
        """Per currency (rows without a live subscription under "?"): MRR on each side."""
        sums: dict[str, list[Decimal]] = {}
        for row in self.rows:
            bucket = sums.setdefault(row.currency or NO_CURRENCY, [ZERO, ZERO, ZERO])
            for index, value in enumerate((row.computed_mrr, row.nue_cmrr, row.salesforce_mrr)):
                if value is not None:
                    bucket[index] += value
        return {currency: Totals(computed_mrr=c, nue_cmrr=n, salesforce_mrr=s)
                for currency, (c, n, s) in sorted(sums.items())}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (amounts as decimal strings)."""
        return {
            "generated_at": self.generated_at,
            "tolerance": str(self.tolerance),
            "counts": {kind.value: count for kind, count in self.counts.items()},
            "totals": {currency: totals.as_dict() for currency, totals in self.totals.items()},
            "repairs": list(self.repairs),
            "rows": [row.as_dict() for row in self.rows],
        }

    def as_text_table(self, *, only_drift: bool = False) -> str:
        """Plain text: a line per row (or per drifted row), then counts and totals."""
        rows = self.drifted if only_drift else self.rows
        header = ("drift", "customer", "account", "computed", "nue cmrr", "sf mrr", "sf arr", "status nue/sf")
        lines = [header] + [(
            row.drift.value, row.customer_name or row.customer_id, row.account_id or "-",
            _cell(row.computed_mrr), _cell(row.nue_cmrr), _cell(row.salesforce_mrr), _cell(row.salesforce_arr),
            f"{row.expected_status or row.nue_status or '-'}/{row.salesforce_status or '-'}",
        ) for row in rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
               for line in lines]
        for row in rows:
            if row.reasons and row.drift is not Drift.IN_SYNC:
                out.append(f"  {row.customer_id}: {'; '.join(row.reasons)}")
        out.append("counts: " + ", ".join(f"{kind.value}={count}" for kind, count in self.counts.items()))
        for currency, totals in self.totals.items():
            out.append(f"totals {currency}: computed={totals.computed_mrr} nue={totals.nue_cmrr} "
                       f"salesforce={totals.salesforce_mrr}")
        if self.repairs:
            out.append(f"repairs queued: {len(self.repairs)}")
        return "\n".join(out)


def compare(
    customers: Iterable[Mapping[str, Any]],
    subscriptions_by_customer: Mapping[str, Sequence[Mapping[str, Any]]],
    orders_by_customer: Mapping[str, Sequence[Mapping[str, Any]]],
    catalog: Iterable[Mapping[str, Any]],
    accounts_by_id: Mapping[str, Mapping[str, Any]],
    tolerance: Decimal = DEFAULT_TOLERANCE,
    *,
    fields: AccountFields | None = None,
    generated_at: str | None = None,
    links: Mapping[str, str] | None = None,
) -> Report:
    """One row per customer (Nue's records as read, the catalog's products, Salesforce accounts by Id; `links`:
    the store's account of a customer, by customer id)."""
    if tolerance < 0:
        raise ValueError("tolerance cannot be negative")
    fields = fields or AccountFields()
    entries = price_entries(catalog)
    accounts = {_id_key(str(account_id)): account for account_id, account in accounts_by_id.items()}
    rows = []
    for customer in customers:
        customer_id = str(customer["id"])
        rows.append(_compare_one(customer, subscriptions_by_customer.get(customer_id, ()),
                                 orders_by_customer.get(customer_id, ()), entries, accounts, tolerance, fields,
                                 (links or {}).get(customer_id)))
    rows.sort(key=lambda row: (ORDER.index(row.drift), row.customer_id))
    return Report(rows=tuple(rows), tolerance=tolerance, generated_at=generated_at)


def account_of(customer: Mapping[str, Any], link: str | None) -> tuple[str | None, str | None]:
    """How the customer names its account, and which: in the order flow 2 follows (flows.common.account_id_of)."""
    for name, value in (("externalId", customer.get("externalId")), (STORE_LINK, link),
                        ("salesAccountId", customer.get("salesAccountId"))):
        if value:
            return name, str(value)
    return None, None


def _compare_one(customer: Mapping[str, Any], subscriptions: Sequence[Mapping[str, Any]],
                 orders: Sequence[Mapping[str, Any]], entries: Mapping[str, PriceEntry],
                 accounts: Mapping[str, Mapping[str, Any]], tolerance: Decimal, fields: AccountFields,
                 link: str | None = None) -> Comparison:
    reasons: list[str] = []
    lines = order_lines(orders)
    computed_mrr: Decimal | None = None
    currency = status = None
    try:
        state = customer_state(subscriptions, entries, lines)
    except PricingError as exc:
        reasons.append(f"cannot price: {exc}")
    else:
        computed_mrr, currency, status = state.mrr, state.currency, state.status
    computed_arr = computed_mrr * MONTHS_PER_YEAR if computed_mrr is not None else None

    nue_cmrr = _amount(customer.get("todayCMRR"), "Nue todayCMRR", reasons)
    nue_arr = _amount(customer.get("todayARR"), "Nue todayARR", reasons)
    nue_disagrees = computed_mrr is None
    if computed_mrr is not None and nue_cmrr is not None and not _close(computed_mrr, nue_cmrr, tolerance):
        reasons.append(f"computed MRR {computed_mrr} but Nue's todayCMRR is {nue_cmrr}")
        nue_disagrees = True
    if computed_arr is not None and nue_arr is not None and \
            not _close(computed_arr, nue_arr, tolerance * MONTHS_PER_YEAR):
        reasons.append(f"computed ARR {computed_arr} but Nue's todayARR is {nue_arr}")
        nue_disagrees = True

    linked_by, account_id = account_of(customer, link)
    account = accounts.get(_id_key(account_id)) if account_id else None
    expected_status = status
    if fields.status_values is not None:
        expected_status = fields.status_values.get(status) if status else None
    sf_mrr = sf_arr = None
    sf_status = None
    salesforce_differs = False
    if account is not None:
        sf_mrr = _amount(account.get(fields.mrr), f"Salesforce {fields.mrr}", reasons)
        sf_arr = _amount(account.get(fields.arr), f"Salesforce {fields.arr}", reasons)
        sf_status = _str_or_none(account.get(fields.status))
        for label, ours, theirs, allowed in ((fields.mrr, computed_mrr, sf_mrr, tolerance),
                                             (fields.arr, computed_arr, sf_arr, tolerance * MONTHS_PER_YEAR)):
            if ours is None:
                continue
            if account.get(label) is not None and theirs is None:
                salesforce_differs = True  # not a number: _amount gave the reason
            elif not _close(ours, theirs if theirs is not None else ZERO, allowed):
                reasons.append(f"Salesforce {label} is {theirs} but should be {ours}")
                salesforce_differs = True
        if fields.status_values is not None and expected_status != sf_status:
            reasons.append(f"Salesforce {fields.status} is {sf_status} but should be {expected_status}")
            salesforce_differs = True

    if nue_disagrees:
        drift = Drift.NUE_DISAGREES
    elif account_id is None:
        drift = Drift.UNLINKED
    elif account is None:
        drift = Drift.MISSING_ACCOUNT
        reasons.append(f"Salesforce has no account {account_id}")
    elif salesforce_differs:
        drift = Drift.SALESFORCE_DIFFERS
    else:
        drift = Drift.IN_SYNC
    return Comparison(
        customer_id=str(customer["id"]), customer_name=_str_or_none(customer.get("name")),
        account_id=account_id, linked_by=linked_by,
        account_name=_str_or_none(account.get(fields.name)) if account is not None else None,
        currency=currency, computed_mrr=computed_mrr, computed_arr=computed_arr, nue_cmrr=nue_cmrr,
        nue_arr=nue_arr, salesforce_mrr=sf_mrr, salesforce_arr=sf_arr, nue_status=status,
        expected_status=expected_status, salesforce_status=sf_status, drift=drift, reasons=tuple(reasons),
        subscriptions=tuple(_line(s, entries, lines) for s in subscriptions),
    )


def _line(subscription: Mapping[str, Any], entries: Mapping[str, PriceEntry],
          lines: Mapping[str, LineTerms]) -> SubscriptionLine:
    status = _str_or_none(subscription.get("status"))
    mrr: Decimal | None = ZERO
    if status in LIVE_STATUSES:
        try:
            mrr = subscription_mrr(subscription, entries, lines)
        except PricingError:
            mrr = None
    return SubscriptionLine(id=str(subscription.get("id")), name=_str_or_none(subscription.get("name")),
                            status=status, mrr=mrr)


def _amount(value: Any, what: str, reasons: list[str]) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return to_decimal(value, what)
    except PricingError as exc:
        reasons.append(str(exc))
        return None


def _close(a: Decimal, b: Decimal, tolerance: Decimal) -> bool:
    return abs(a - b) <= tolerance


def _id_key(record_id: str) -> str:
    return record_id[:SF_ID_SHORT] if len(record_id) == SF_ID_LONG else record_id


def _str_or_none(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _cell(value: Decimal | None) -> str:
    return "-" if value is None else str(value)


# --- after the report: repairs, the drift left, the cost of a run ----------------------------------


class RepairState(StrEnum):
    """Where a row's repair event (flow 2, queued by the report or an operator) stands."""

    WAITING = "waiting"  # in the inbox, or being worked
    REPAIRED = "repaired"  # finished, and it wrote the account after the report was made
    UNWRITTEN = "unwritten"  # finished after the report but wrote nothing: only a new run can tell
    FAILED = "failed"  # dead-lettered
    CONFLICT = "conflict"  # held in the conflict log


# Inbox statuses (store/states.py's EventStatus values; the domain does not import the store).
_WAITING_STATUSES = frozenset({"received", "claimed"})


@dataclass(frozen=True, kw_only=True)
class RepairEvent:
    """A repair event as the store has it: its status, when the account was last written for it, and the dead
    letter or conflict that holds it."""

    event_id: int
    status: str  # inbox status
    finished_at: datetime | None = None  # when it was done (its last update), None while not
    written_at: datetime | None = None  # the last write to Salesforce the API accepted for it
    error: str | None = None
    dead_letter_id: int | None = None
    conflict_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class RepairOutcome:
    state: RepairState
    event_id: int
    at: datetime | None = None  # REPAIRED: the account's write; UNWRITTEN: the finish
    error: str | None = None
    dead_letter_id: int | None = None
    conflict_id: int | None = None

    @property
    def counts_as_drift(self) -> bool:
        """Only a repair that wrote the account after the report takes the row out of the drift."""
        return self.state is not RepairState.REPAIRED

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "event_id": self.event_id, "at": self.at.isoformat() if self.at else None,
                "error": self.error, "dead_letter_id": self.dead_letter_id, "conflict_id": self.conflict_id}


def repair_outcome(event: RepairEvent | None, generated_at: datetime | None) -> RepairOutcome | None:
    """What a row's newest repair event says about it after a report made at `generated_at`. None: no repair
    event, or one that finished before the report (the report is the newer word on the account)."""
    if event is None:
        return None
    if event.status in _WAITING_STATUSES:
        return RepairOutcome(state=RepairState.WAITING, event_id=event.event_id, error=event.error)
    if event.status == "dead":
        return RepairOutcome(state=RepairState.FAILED, event_id=event.event_id, error=event.error,
                             dead_letter_id=event.dead_letter_id)
    if event.status == "conflict":
        return RepairOutcome(state=RepairState.CONFLICT, event_id=event.event_id, conflict_id=event.conflict_id)
    if event.written_at is not None and (generated_at is None or event.written_at > generated_at):
        return RepairOutcome(state=RepairState.REPAIRED, event_id=event.event_id, at=event.written_at)
    if event.finished_at is not None and (generated_at is None or event.finished_at > generated_at):
        return RepairOutcome(state=RepairState.UNWRITTEN, event_id=event.event_id, at=event.finished_at)
    return None


@dataclass(frozen=True, kw_only=True)
class DriftSummary:
    """What a report still says is wrong: customers drifted (repaired ones not counted) and, per currency,
    Salesforce's MRR minus Nue's over them."""

    generated_at: str | None
    drifted: int
    repaired: int
    difference: dict[str, Decimal]  # currency (NO_CURRENCY: no live subscription) -> Salesforce - Nue, in cents

    def as_dict(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at, "drifted": self.drifted, "repaired": self.repaired,
                "difference": {currency: str(amount) for currency, amount in self.difference.items()}}


def drift_summary(report: Mapping[str, Any], outcomes: Mapping[str, RepairOutcome]) -> DriftSummary:
    """The drift left in a report as written (`Report.as_dict`), given each customer's repair outcome. A row's
    difference is its Salesforce MRR minus Nue's (the computed one where Nue gave none); an empty side counts
    as zero, as in the report's totals, so an unlinked customer's whole MRR is missing from Salesforce."""
    drifted = repaired = 0
    difference: dict[str, Decimal] = {}
    for row in report.get("rows", ()):
        if row.get("drift", Drift.IN_SYNC.value) == Drift.IN_SYNC.value:
            continue
        outcome = outcomes.get(str(row.get("customer_id")))
        if outcome is not None and not outcome.counts_as_drift:
            repaired += 1
            continue
        drifted += 1
        nue = row.get("nue_cmrr") if row.get("nue_cmrr") is not None else row.get("computed_mrr")
        currency = row.get("currency") or NO_CURRENCY
        difference[currency] = difference.get(currency, ZERO) + _or_zero(row.get("salesforce_mrr")) - _or_zero(nue)
    return DriftSummary(generated_at=report.get("generated_at"), drifted=drifted, repaired=repaired,
                        difference={currency: cents(amount) for currency, amount in sorted(difference.items())})


def estimated_calls(accounts: int, per_query: int) -> int:
    """Salesforce calls a run costs: one `Id IN (...)` query per `per_query` linked accounts (one at least; the
    accounts of the last report are the best guess before Nue is read)."""
    return max(1, -(-accounts // per_query))


def _or_zero(value: Any) -> Decimal:
    if value is None or value == "":
        return ZERO
    try:
        return to_decimal(value)
    except PricingError:
        return ZERO  # the row's reasons already say the figure is not a number
