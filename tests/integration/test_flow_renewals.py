"""Flow 3 end to end: the daily scan and the workers make one renewal opportunity per term, with its product."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from revdaemon.engine.renewal_scan import scan_renewals
from revdaemon.flows.renewals import RenewalFlow
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import engine, webhook

pytestmark = pytest.mark.anyio

FLOWS = [RenewalFlow()]


def customer_with_order(sandbox: Sandbox, account: int = 0, opportunity: int = 0) -> tuple[dict[str, Any], str]:
    """A linked customer with an activated order (platform and seats subscriptions): (customer, account id)."""
    scenario = sandbox.nue.scenario
    customer = scenario.create_customer(account)
    scenario.create_and_activate_order(customer["id"], opportunity=opportunity)
    return customer, customer["externalId"]


def subscriptions_of(sandbox: Sandbox, customer_id: str) -> list[dict[str, Any]]:
    return [s for s in sandbox.nue.store.subscriptions.values() if s["customerId"] == customer_id]


def renewals(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [o for o in sandbox.salesforce.records("Opportunity") if o.get("Nue_Renewal_Key__c")]


def lines_of(sandbox: Sandbox, opportunity_id: str) -> list[dict[str, Any]]:
    return [r for r in sandbox.salesforce.records("OpportunityLineItem") if r["OpportunityId"] == opportunity_id]


def data_writes(sandbox: Sandbox) -> list[Any]:
    """Salesforce requests that change records (a second daemon's login is not one)."""
    return [r for r in sandbox.salesforce.log.writes() if r.path.startswith("/services/data")]


def near_the_end(subscriptions: list[dict[str, Any]], days: int = 30) -> date:
    """A scan day `days` before the first of these subscriptions ends."""
    return min(date.fromisoformat(str(s["subscriptionEndDate"])[:10]) for s in subscriptions) - timedelta(days=days)


class TestRenewals:
    async def test_one_opportunity_per_term_with_its_product(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Each subscription ending within the window gets one renewal opportunity, priced, owned and with its line."""
        customer, account_id = customer_with_order(sandbox)
        subs = subscriptions_of(sandbox, customer["id"])
        assert len(subs) == 2
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            assert await scan_renewals(e.nue, e.store, window_days=90, today=near_the_end(subs)) == 2
            while await e.worker.run_once():
                pass
            assert (await e.store.queue_depths())[EventStatus.DONE] == 2
        account = sandbox.salesforce.record("Account", account_id)
        made = {o["Nue_Subscription__c"]: o for o in renewals(sandbox)}
        assert set(made) == {s["name"] for s in subs}
        for sub in subs:
            opportunity = made[sub["name"]]
            end = str(sub["subscriptionEndDate"])[:10]
            assert opportunity["Nue_Renewal_Key__c"] == f"{sub['id']}:{end}"
            assert opportunity["CloseDate"] == end and opportunity["StageName"] == "Prospecting"
            assert opportunity["AccountId"] == account_id and opportunity["OwnerId"] == account["OwnerId"]
            assert opportunity["Name"] == f"{account['Name']} - Renewal {sub['name']}"
            assert opportunity["Expansion_Signal__c"] is False
            [line] = lines_of(sandbox, opportunity["Id"])
            assert line["PricebookEntryId"] == sub["priceBookEntryId"] and line["Quantity"] == float(sub["quantity"])
            assert line["Nue_Line_Key__c"] == f"renewal:{sub['id']}:{end}:{sub['priceBookEntryId']}"
        # a year of the customer's MRR, as Nue itself reports it, across its renewals
        yearly = Decimal(str(sandbox.nue.store.customers[customer["id"]]["todayCMRR"])) * 12
        assert sum(Decimal(str(o["Amount"])) for o in made.values()) == yearly

    async def test_scanning_and_working_twice_creates_nothing(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A second scan stores no event; a replayed event and a second daemon's run write nothing."""
        customer, _ = customer_with_order(sandbox, 1, 1)
        today = near_the_end(subscriptions_of(sandbox, customer["id"]))
        async with engine(sandbox, tmp_path / "one", flows=FLOWS) as e:
            first = await scan_renewals(e.nue, e.store, window_days=90, today=today)
            assert first >= 1
            while await e.worker.run_once():
                pass
            sandbox.salesforce.log.clear()
            assert await scan_renewals(e.nue, e.store, window_days=90, today=today) == 0
            assert await e.worker.run_once() == 0
        made = renewals(sandbox)
        async with engine(sandbox, tmp_path / "two", flows=FLOWS) as other:  # another daemon, its own store
            assert await scan_renewals(other.nue, other.store, window_days=90, today=today) == first
            while await other.worker.run_once():
                pass
        assert data_writes(sandbox) == []
        assert renewals(sandbox) == made
        assert all(len(lines_of(sandbox, o["Id"])) == 1 for o in made)

    async def test_outside_the_window_or_not_active_is_not_scanned(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Terms ending after the window, or subscriptions no longer Active, get no event."""
        customer, _ = customer_with_order(sandbox, 2, 2)
        subs = subscriptions_of(sandbox, customer["id"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            assert await scan_renewals(e.nue, e.store, window_days=90, today=near_the_end(subs, days=120)) == 0
            sandbox.nue.scenario.change(subs[0]["name"], "Cancel",
                                        cancellationDate=sandbox.nue.store.clock.today().isoformat())
            assert await scan_renewals(e.nue, e.store, window_days=90, today=near_the_end(subs)) == 0

    async def test_seats_grown_since_the_order_raise_the_expansion_signal(self, sandbox: Sandbox,
                                                                          tmp_path: Path) -> None:
        """A subscription amended to more seats renews with the signal set and the new quantity priced in."""
        customer, _ = customer_with_order(sandbox, 3, 0)
        seats = next(s for s in subscriptions_of(sandbox, customer["id"]) if s["quantity"] == 25)
        sandbox.nue.scenario.change(seats["name"], "UpdateQuantity", quantity=5)
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await scan_renewals(e.nue, e.store, window_days=90, today=near_the_end([seats]))
            while await e.worker.run_once():
                pass
        [opportunity] = [o for o in renewals(sandbox) if o["Nue_Subscription__c"] == seats["name"]]
        assert opportunity["Expansion_Signal__c"] is True
        [line] = lines_of(sandbox, opportunity["Id"])
        assert line["Quantity"] == 30.0

    async def test_a_term_renewed_before_the_worker_runs_is_skipped(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """When the subscription is renewed between the scan and the work, no opportunity is made for the old term."""
        customer, _ = customer_with_order(sandbox, 4, 2)
        [seats] = subscriptions_of(sandbox, customer["id"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            assert await scan_renewals(e.nue, e.store, window_days=90, today=near_the_end([seats])) == 1
            sandbox.nue.scenario.change(seats["name"], "Renew", renewalTerm=12)
            await e.worker.run_once()
            assert (await e.store.queue_depths())[EventStatus.DONE] == 1
        assert renewals(sandbox) == []

    async def test_a_renewal_due_a_webhook_stored_is_ignored(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A renewal.due of the webhook source (stored before the listener refused the type) makes no opportunity,
        though its term is Active and priced: only the scan decides which terms are due."""
        customer, _ = customer_with_order(sandbox, 5, 0)
        subs = subscriptions_of(sandbox, customer["id"])
        forged = [webhook("renewal.due", {"id": s["id"], "customerId": customer["id"],
                                          "subscriptionEndDate": str(s["subscriptionEndDate"])[:10]}, f"forged-{n}")
                  for n, s in enumerate(subs)]
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await e.store.add_events(forged)
            with capture_logs() as logs:
                assert await e.worker.run_once() == len(subs)
            assert (await e.store.queue_depths())[EventStatus.DONE] == len(subs)
        assert renewals(sandbox) == [] and data_writes(sandbox) == []
        ignored = [entry for entry in logs if entry["event"] == "event_ignored"]
        assert len(ignored) == len(subs) and all(entry["source"] == "nue_webhook" for entry in ignored)
        assert all(entry["log_level"] == "warning" for entry in ignored)
