from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from revdaemon.domain.reconciliation import (
    AccountFields,
    Drift,
    RepairEvent,
    RepairOutcome,
    RepairState,
    Report,
    compare,
    drift_summary,
    estimated_calls,
    repair_outcome,
)

CATALOG = [
    {"id": "p1", "priceBookEntries": [{"id": "e1", "listPrice": 500, "billingPeriod": "Month",
                                       "currencyIsoCode": "USD"}]},
    {"id": "p2", "priceBookEntries": [{"id": "e2", "listPrice": 1200, "billingPeriod": "Year",
                                       "currencyIsoCode": "EUR"}]},
]
STATUS_VALUES = {"Active": "Active", "Canceled": "Canceled"}
ACCOUNT = "0015g0030000001AAA"


def customer(cid: str = "c1", *, cmrr: Any = "1000.00", arr: Any = "12000.00", link: str | None = ACCOUNT,
             link_field: str = "externalId") -> dict[str, Any]:
    row: dict[str, Any] = {"id": cid, "name": f"Customer {cid}", "todayCMRR": cmrr, "todayARR": arr,
                           "externalId": None, "salesAccountId": None}
    if link:
        row[link_field] = link
    return row


def sub(cid: str = "c1", *, entry: str = "e1", quantity: int = 2, status: str = "Active") -> dict[str, Any]:
    return {"id": f"s-{cid}-{entry}", "name": f"SUB-{cid}", "customerId": cid, "priceBookEntryId": entry,
            "quantity": quantity, "status": status, "orderProductId": None, "subscriptionEndDate": "2027-01-01"}


def account(aid: str = ACCOUNT, *, mrr: Any = 1000, arr: Any = 12000, status: Any = "Active") -> dict[str, Any]:
    return {"Id": aid, "Name": "Acme", "MRR__c": mrr, "ARR__c": arr, "Subscription_Status__c": status}


def run(customers: list[dict[str, Any]], subs: list[dict[str, Any]], accounts: list[dict[str, Any]],
        tolerance: Decimal = Decimal("0.01"), status_values: dict[str, str] | None = STATUS_VALUES) -> Report:
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for s in subs:
        by_customer.setdefault(s["customerId"], []).append(s)
    return compare(customers, by_customer, {}, CATALOG, {a["Id"]: a for a in accounts}, tolerance,
                   fields=AccountFields(status_values=status_values))


class TestCompare:
    @pytest.mark.parametrize(("name", "customers", "subs", "accounts", "drift"), [
        ("in sync", [customer()], [sub()], [account()], Drift.IN_SYNC),
        ("salesforce MRR stale", [customer()], [sub()], [account(mrr=900)], Drift.SALESFORCE_DIFFERS),
        ("salesforce ARR stale", [customer()], [sub()], [account(arr=10800)], Drift.SALESFORCE_DIFFERS),
        ("salesforce status stale", [customer()], [sub()], [account(status="Churned")], Drift.SALESFORCE_DIFFERS),
        ("salesforce MRR empty", [customer()], [sub()], [account(mrr=None, arr=None)], Drift.SALESFORCE_DIFFERS),
        ("salesforce MRR not a number", [customer()], [sub()], [account(mrr="n/a")], Drift.SALESFORCE_DIFFERS),
        ("nue cmrr differs from computed", [customer(cmrr="1100.00")], [sub()], [account()], Drift.NUE_DISAGREES),
        ("nue arr differs from computed", [customer(arr="13200.00")], [sub()], [account()], Drift.NUE_DISAGREES),
        ("unpriceable subscription", [customer()], [sub(entry="gone")], [account()], Drift.NUE_DISAGREES),
        ("nue disagreement outranks salesforce", [customer(cmrr="1")], [sub()], [account(mrr=5)],
         Drift.NUE_DISAGREES),
        ("unlinked", [customer(link=None)], [sub()], [], Drift.UNLINKED),
        ("linked by salesAccountId", [customer(link_field="salesAccountId")], [sub()], [account()], Drift.IN_SYNC),
        ("account missing", [customer()], [sub()], [], Drift.MISSING_ACCOUNT),
        ("15-character link finds the 18-character account", [customer(link=ACCOUNT[:15])], [sub()], [account()],
         Drift.IN_SYNC),
        ("no subscriptions and empty fields", [customer(cmrr="0", arr="0")], [], [account(mrr=None, arr=None,
                                                                                          status=None)],
         Drift.IN_SYNC),
        ("canceled leaves stale salesforce MRR", [customer(cmrr="0", arr="0")], [sub(status="Canceled")],
         [account(status="Canceled")], Drift.SALESFORCE_DIFFERS),
    ], ids=lambda v: v if isinstance(v, str) else "")
    def test_drift_kind(self, name: str, customers: list[dict[str, Any]], subs: list[dict[str, Any]],
                        accounts: list[dict[str, Any]], drift: Drift) -> None:
        """Each situation gets the one drift kind the module docstring gives it."""
        [row] = run(customers, subs, accounts).rows
        assert row.drift is drift, row.reasons

    def test_row_carries_every_view(self) -> None:
        """A row shows the computed, Nue and Salesforce figures, both statuses and the subscriptions."""
        [row] = run([customer()], [sub()], [account(mrr=900)]).rows
        assert (row.computed_mrr, row.computed_arr) == (Decimal("1000.00"), Decimal("12000.00"))
        assert (row.nue_cmrr, row.nue_arr) == (Decimal("1000.00"), Decimal("12000.00"))
        assert (row.salesforce_mrr, row.salesforce_arr) == (Decimal(900), Decimal(12000))
        assert (row.nue_status, row.expected_status, row.salesforce_status) == ("Active", "Active", "Active")
        assert (row.account_id, row.linked_by, row.account_name, row.currency) == (ACCOUNT, "externalId", "Acme",
                                                                                   "USD")
        assert [(s.name, s.mrr) for s in row.subscriptions] == [("SUB-c1", Decimal("1000.00"))]
        assert row.drift.repairable
        assert any("MRR__c is 900" in reason for reason in row.reasons)

    @pytest.mark.parametrize(("sf_mrr", "tolerance", "drift"), [
        ("1000.01", Decimal("0.01"), Drift.IN_SYNC),
        ("1000.02", Decimal("0.01"), Drift.SALESFORCE_DIFFERS),
        ("999.50", Decimal("0.50"), Drift.IN_SYNC),
        ("1000.01", Decimal(0), Drift.SALESFORCE_DIFFERS),
    ])
    def test_tolerance(self, sf_mrr: str, tolerance: Decimal, drift: Drift) -> None:
        """Amounts within the tolerance match; one cent more does not."""
        [row] = run([customer()], [sub()], [account(mrr=sf_mrr)], tolerance=tolerance).rows
        assert row.drift is drift

    def test_arr_tolerance_scales_by_twelve(self) -> None:
        """ARR may differ by twelve times the MRR tolerance, as ARR is MRR x 12 rounded elsewhere."""
        [row] = run([customer(arr="12000.12")], [sub()], [account(arr="11999.88")]).rows
        assert row.drift is Drift.IN_SYNC

    def test_status_ignored_without_a_picklist_table(self) -> None:
        """Without flow 2's status table the status is shown but not compared."""
        [row] = run([customer()], [sub()], [account(status="Whatever")], status_values=None).rows
        assert row.drift is Drift.IN_SYNC and row.salesforce_status == "Whatever"

    def test_an_account_flow_6_linked_in_the_store_is_compared_and_repairable(self) -> None:
        """A customer made in Nue names no account; the store's link does (flow 6): the row follows it, as flow 2
        does, before salesAccountId."""
        by_customer = {"c1": [sub()]}
        linked_only = compare([customer(link=None)], by_customer, {}, CATALOG, {ACCOUNT: account(mrr=1)},
                              links={"c1": ACCOUNT})
        [row] = linked_only.rows
        assert (row.linked_by, row.account_id, row.drift) == ("store link", ACCOUNT, Drift.SALESFORCE_DIFFERS)
        both = compare([customer(link="001SALESACCOUNT00", link_field="salesAccountId")], by_customer, {}, CATALOG,
                       {ACCOUNT: account()}, links={"c1": ACCOUNT})
        assert (both.rows[0].linked_by, both.rows[0].drift) == ("store link", Drift.IN_SYNC)

    def test_negative_tolerance_is_refused(self) -> None:
        """A negative tolerance is a caller's mistake."""
        with pytest.raises(ValueError, match="tolerance"):
            run([customer()], [sub()], [account()], tolerance=Decimal("-1"))


class TestReport:
    def report(self) -> Report:
        customers = [customer("a", link="001A00000000001AAA"), customer("b", link="001A00000000002AAA"),
                     customer("c", link=None), customer("d", cmrr="100.00", arr="1200.00", link="001A00000000004AAA")]
        subs = [sub("a"), sub("b"), sub("c"), sub("d", entry="e2", quantity=1)]
        accounts = [account("001A00000000001AAA"), account("001A00000000002AAA", mrr="950.00"),
                    account("001A00000000004AAA", mrr=100, arr=1200)]
        return run(customers, subs, accounts)

    def test_counts_every_kind(self) -> None:
        """Counts hold every drift kind, zeros included."""
        assert self.report().counts == {Drift.IN_SYNC: 2, Drift.SALESFORCE_DIFFERS: 1, Drift.NUE_DISAGREES: 0,
                                        Drift.UNLINKED: 1, Drift.MISSING_ACCOUNT: 0}

    def test_totals_per_currency(self) -> None:
        """Totals sum each side per currency, over the rows where that side has a figure."""
        totals = self.report().totals
        assert set(totals) == {"EUR", "USD"}
        usd = totals["USD"]
        assert (usd.computed_mrr, usd.nue_cmrr, usd.salesforce_mrr) == (Decimal("3000.00"), Decimal("3000.00"),
                                                                       Decimal("1950.00"))
        assert totals["EUR"].computed_mrr == Decimal("100.00") == totals["EUR"].salesforce_mrr

    def test_rows_put_drift_first(self) -> None:
        """Rows needing attention come before rows in sync."""
        assert [r.customer_id for r in self.report().rows] == ["b", "c", "a", "d"]
        assert [r.customer_id for r in self.report().repairable] == ["b"]

    def test_as_dict_is_json(self) -> None:
        """The dict form survives JSON and keeps amounts exact as strings."""
        data = json.loads(json.dumps(self.report().as_dict()))
        assert data["counts"]["salesforce_differs"] == 1
        assert data["totals"]["USD"]["salesforce_mrr"] == "1950.00"
        row = next(r for r in data["rows"] if r["customer_id"] == "b")
        assert (row["drift"], row["salesforce_mrr"], row["computed_mrr"], row["repairable"]) == (
            "salesforce_differs", "950.00", "1000.00", True)

    def test_text_table(self) -> None:
        """The text form has a header, a line per row, the reasons of drifted rows, counts and totals."""
        text = self.report().as_text_table()
        lines = text.splitlines()
        assert lines[0].split()[:3] == ["drift", "customer", "account"]
        assert any(line.startswith("salesforce_differs") and "950.00" in line for line in lines)
        assert "  b: Salesforce MRR__c is 950.00 but should be 1000.00" in lines
        assert "counts: in_sync=2, salesforce_differs=1, nue_disagrees=0, unlinked=1, missing_account=0" in lines
        assert "totals USD: computed=3000.00 nue=3000.00 salesforce=1950.00" in lines

    def test_text_table_only_drift(self) -> None:
        """Asked for drift only, rows in sync are left out."""
        text = self.report().as_text_table(only_drift=True)
        assert "Customer a" not in text and "Customer b" in text


MADE = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
LATER, EARLIER = MADE + timedelta(hours=1), MADE - timedelta(hours=1)


class TestRepairOutcome:
    @pytest.mark.parametrize(("event", "state"), [
        (RepairEvent(event_id=1, status="received"), RepairState.WAITING),
        (RepairEvent(event_id=1, status="claimed"), RepairState.WAITING),
        (RepairEvent(event_id=1, status="dead", dead_letter_id=7), RepairState.FAILED),
        (RepairEvent(event_id=1, status="conflict", conflict_id=3), RepairState.CONFLICT),
        (RepairEvent(event_id=1, status="done", finished_at=LATER, written_at=LATER), RepairState.REPAIRED),
        (RepairEvent(event_id=1, status="done", finished_at=LATER), RepairState.UNWRITTEN),
    ], ids=["waiting", "in progress", "dead letter", "conflict", "written after", "finished unwritten"])
    def test_state_of_the_event(self, event: RepairEvent, state: RepairState) -> None:
        """Each inbox status (and, once done, whether the account was written) gives one repair state."""
        outcome = repair_outcome(event, MADE)
        assert outcome is not None and outcome.state is state
        assert outcome.counts_as_drift is (state is not RepairState.REPAIRED)

    def test_failed_carries_the_dead_letter(self) -> None:
        """A dead-lettered repair names its letter, so the page can link to it."""
        outcome = repair_outcome(RepairEvent(event_id=4, status="dead", dead_letter_id=9, error="boom"), MADE)
        assert outcome == RepairOutcome(state=RepairState.FAILED, event_id=4, dead_letter_id=9, error="boom")

    def test_repaired_says_when_the_account_was_written(self) -> None:
        """A repair is dated by its write to Salesforce, not by when the event was stored."""
        outcome = repair_outcome(RepairEvent(event_id=1, status="done", finished_at=LATER + timedelta(seconds=1),
                                             written_at=LATER), MADE)
        assert outcome is not None and outcome.at == LATER

    def test_a_repair_finished_before_the_report_says_nothing(self) -> None:
        """The report read the account after that repair: its row stands as the report has it."""
        event = RepairEvent(event_id=1, status="done", finished_at=EARLIER, written_at=EARLIER)
        assert repair_outcome(event, MADE) is None
        assert repair_outcome(None, MADE) is None


def report_rows(*rows: tuple[str, str, str | None, str | None, str | None]) -> dict[str, Any]:
    """A written report of rows (customer, drift, currency, nue cmrr, salesforce mrr)."""
    return {"generated_at": MADE.isoformat(), "rows": [
        {"customer_id": c, "drift": d, "currency": cur, "nue_cmrr": n, "computed_mrr": n, "salesforce_mrr": sf}
        for c, d, cur, n, sf in rows]}


class TestDriftSummary:
    def test_counts_drift_and_sums_the_difference_per_currency(self) -> None:
        """Drifted rows are counted and their Salesforce-minus-Nue MRR summed per currency; in-sync ones not."""
        report = report_rows(("a", "salesforce_differs", "USD", "100.00", "90.00"),
                             ("b", "salesforce_differs", "USD", "50.00", "55.50"),
                             ("c", "missing_account", "EUR", "20.00", None),
                             ("d", "in_sync", "USD", "10.00", "10.00"))
        summary = drift_summary(report, {})
        assert (summary.drifted, summary.repaired) == (3, 0)
        assert summary.difference == {"EUR": Decimal("-20.00"), "USD": Decimal("-4.50")}
        assert summary.generated_at == MADE.isoformat()

    def test_repaired_rows_are_left_out(self) -> None:
        """A row repaired after the report is counted as repaired, and its difference is not summed."""
        report = report_rows(("a", "salesforce_differs", "USD", "100.00", "90.00"),
                             ("b", "salesforce_differs", "USD", "50.00", "55.50"))
        outcomes = {"a": RepairOutcome(state=RepairState.REPAIRED, event_id=1, at=LATER),
                    "b": RepairOutcome(state=RepairState.FAILED, event_id=2, dead_letter_id=5)}
        summary = drift_summary(report, outcomes)
        assert (summary.drifted, summary.repaired) == (1, 1)
        assert summary.difference == {"USD": Decimal("5.50")}

    def test_no_currency_and_computed_when_nue_gave_none(self) -> None:
        """A row with no live subscription sums under "?"; with no Nue figure the computed one is used."""
        report = {"rows": [{"customer_id": "a", "drift": "salesforce_differs", "currency": None,
                            "nue_cmrr": None, "computed_mrr": "0", "salesforce_mrr": "30"}]}
        assert str(drift_summary(report, {}).difference["?"]) == "30.00"  # in cents, as money is shown

    def test_as_dict_is_json_ready(self) -> None:
        """Amounts become decimal strings."""
        report = report_rows(("a", "unlinked", "USD", "12.00", None))
        assert json.loads(json.dumps(drift_summary(report, {}).as_dict()))["difference"] == {"USD": "-12.00"}


class TestEstimatedCalls:
    @pytest.mark.parametrize(("accounts", "calls"), [(0, 1), (1, 1), (200, 1), (201, 2), (1000, 5)])
    def test_one_query_per_batch(self, accounts: int, calls: int) -> None:
        """One query per batch of linked accounts, and at least one."""
        assert estimated_calls(accounts, 200) == calls
