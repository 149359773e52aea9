"""Flow 6 for a customer made in Nue (issue 26, items 1 and 2), against both simulators over real sockets: the
account is made or linked, never duplicated; the contacts follow; the onboarding Tasks name the primary contact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from revdaemon.flows.base import Flow
from revdaemon.flows.onboarding import OnboardingFlow
from revdaemon.sandbox.nue import customers
from revdaemon.sandbox.runner import Sandbox
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import Engine, engine, webhook

pytestmark = pytest.mark.anyio

FLOWS: list[Flow] = [OnboardingFlow()]
STEPS = 3


def nue_customer(sandbox: Sandbox, name: str = "Zephyr Analytics", website: str | None = "https://www.zephyr.io",
                 ) -> dict[str, Any]:
    """A self-service sign-up: a customer made in Nue, with no Salesforce account."""
    made, _ = customers.create_customers(sandbox.nue.store, [{"name": name, "recordType": "Business",
                                                              "website": website, "phone": "+1 415 555 0100"}])
    return made[0]


def nue_contacts(sandbox: Sandbox, customer_id: str) -> list[dict[str, Any]]:
    return customers.create_contacts(sandbox.nue.store, customer_id, [
        {"firstName": "Ada", "lastName": "Byron", "email": "ada@zephyr.io", "phone": "+1 415 555 0101"},
        {"firstName": "Bill", "lastName": "Payne", "email": "billing@zephyr.io"}])


def activate(sandbox: Sandbox, customer_id: str, bill_to: str | None = None) -> dict[str, Any]:
    extra = {"billToContact": {"id": bill_to}} if bill_to else {}
    order: dict[str, Any] = sandbox.nue.scenario.create_and_activate_order(customer_id, opportunity=0,
                                                                           **extra)["order"]
    return order


async def deliver(e: Engine, sandbox: Sandbox, *, prefix: str = "") -> None:
    """Store Nue's order.activated notifications and work until nothing is due (retries included)."""
    await e.store.add_events([webhook(ev["type"], ev["data"], f"{prefix}{ev['id']}")
                              for ev in sandbox.nue.webhooks.published() if ev["type"] == "order.activated"])
    with anyio.fail_after(20):
        while True:
            depths = await e.store.queue_depths()
            if depths[EventStatus.RECEIVED] == 0 and depths[EventStatus.CLAIMED] == 0:
                return
            if not await e.worker.run_once():
                await anyio.sleep(0.05)


def accounts_of(sandbox: Sandbox, customer_id: str, name: str = "Zephyr Analytics") -> list[dict[str, Any]]:
    return [a for a in sandbox.salesforce.records("Account")
            if a.get("Nue_Customer_Id__c") == customer_id or str(a.get("Name")).casefold() == name.casefold()]


def contacts_by_email(sandbox: Sandbox) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in sandbox.salesforce.records("Contact"):
        out.setdefault(str(c.get("Email")), []).append(c)
    return out


class TestNewCustomer:
    async def test_a_customer_made_in_nue_gets_its_account_contacts_and_tasks(self, sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
        """One account with the mapped fields and the key, the contacts on it by their keys, Tasks naming the
        bill-to contact, the id link kept; a replay writes nothing."""
        customer = nue_customer(sandbox)
        ada, bill = nue_contacts(sandbox, customer["id"])
        order = activate(sandbox, customer["id"], bill_to=bill["id"])
        sandbox.nue.log.clear()
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, sandbox)
            (account,) = accounts_of(sandbox, customer["id"])
            assert (account["Name"], account["Website"], account["Phone"], account["Nue_Customer_Id__c"]) == (
                "Zephyr Analytics", "https://www.zephyr.io", "+1 415 555 0100", customer["id"])
            assert account["Last_Nue_Order__c"] == order["orderNumber"]
            by_email = contacts_by_email(sandbox)
            assert [(c["FirstName"], c["LastName"], c["Phone"], c["AccountId"], c["Nue_Contact_Id__c"])
                    for c in by_email["ada@zephyr.io"]] == [
                ("Ada", "Byron", "+1 415 555 0101", account["Id"], ada["id"])]
            (billing,) = by_email["billing@zephyr.io"]
            tasks = [t for t in sandbox.salesforce.records("Task") if t["WhatId"] == account["Id"]]
            assert len(tasks) == STEPS and {t["WhoId"] for t in tasks} == {billing["Id"]}
            link = await e.store.find_link("account", nue_id=customer["id"])
            assert link is not None and link.salesforce_id == account["Id"]

            sandbox.salesforce.log.clear()
            await deliver(e, sandbox, prefix="replay-")
        assert sandbox.salesforce.log.writes() == []
        # Nothing is written back to Nue (externalId is read-only [doc]; no other way is documented): reads only.
        assert [r for r in sandbox.nue.log.writes() if r.path != "/async/graphql"] == []

    async def test_without_contacts_the_tasks_name_no_one(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A customer with no contacts in Nue gets its account and Tasks without WhoId."""
        customer = nue_customer(sandbox)
        activate(sandbox, customer["id"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, sandbox)
        (account,) = accounts_of(sandbox, customer["id"])
        tasks = [t for t in sandbox.salesforce.records("Task") if t["WhatId"] == account["Id"]]
        assert len(tasks) == STEPS and not any(t.get("WhoId") for t in tasks)


class TestBrownfield:
    async def test_an_account_and_contact_made_by_people_are_linked_not_duplicated(self, sandbox: Sandbox,
                                                                                  tmp_path: Path) -> None:
        """An account of the same name and domain and a contact of the same email, made by hand without any key:
        the keys are set on them, their own values kept, and nothing new is made."""
        customer = nue_customer(sandbox)
        ada, bill = nue_contacts(sandbox, customer["id"])
        account_id = sandbox.salesforce.create("Account", {"Name": "Zephyr Analytics",
                                                           "Website": "zephyr.io", "Phone": "+1 000"})
        other = sandbox.salesforce.create("Account", {"Name": "Zephyr Analytics Ltd", "Website": "zephyr.io"})
        by_hand = sandbox.salesforce.create("Contact", {"LastName": "Byron", "Email": "ADA@zephyr.io",
                                                        "AccountId": account_id})
        activate(sandbox, customer["id"], bill_to=bill["id"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, sandbox)
        (account,) = accounts_of(sandbox, customer["id"])
        assert account["Id"] == account_id and account["Phone"] == "+1 000" and account["Website"] == "zephyr.io"
        assert sandbox.salesforce.record("Account", other).get("Nue_Customer_Id__c") is None
        by_email = {k.lower(): v for k, v in contacts_by_email(sandbox).items()}
        (linked,) = by_email["ada@zephyr.io"]
        assert linked["Id"] == by_hand and linked["Nue_Contact_Id__c"] == ada["id"] and linked["FirstName"] == "Ada"
        assert len(by_email["billing@zephyr.io"]) == 1

    async def test_an_account_keyed_by_nue_s_sync_is_used(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """An account that already holds the customer's id in Nue_Customer_Id__c (another name, no website) is
        the customer's account: nothing is made, and the link is kept."""
        customer = nue_customer(sandbox)
        account_id = sandbox.salesforce.create("Account", {"Name": "Zephyr (old name)",
                                                           "Nue_Customer_Id__c": customer["id"]})
        activate(sandbox, customer["id"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, sandbox)
            link = await e.store.find_link("account", nue_id=customer["id"])
        assert [a["Id"] for a in accounts_of(sandbox, customer["id"])] == [account_id]
        assert link is not None and link.salesforce_id == account_id
        assert len([t for t in sandbox.salesforce.records("Task") if t["WhatId"] == account_id]) == STEPS

    @pytest.mark.parametrize("second_website", ["https://zephyr.io/contact", None])
    async def test_two_accounts_of_the_name_open_a_conflict_and_write_nothing(
            self, sandbox: Sandbox, tmp_path: Path, second_website: str | None) -> None:
        """Two accounts named like the customer (both of its domain, or one the domain does not confirm): a person
        decides; no account, contact or Task is written."""
        customer = nue_customer(sandbox)
        nue_contacts(sandbox, customer["id"])
        sandbox.salesforce.create("Account", {"Name": "Zephyr Analytics", "Website": "www.zephyr.io"})
        sandbox.salesforce.create("Account", {"Name": "ZEPHYR ANALYTICS", "Website": second_website})
        activate(sandbox, customer["id"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            sandbox.salesforce.log.clear()
            await deliver(e, sandbox)
            depths = await e.store.queue_depths()
            conflicts = await e.store.list_conflicts()
        assert depths[EventStatus.CONFLICT] == 1
        assert [c.record_ref for c in conflicts] == [f"nue:Customer:{customer['id']}"]
        assert [r for r in sandbox.salesforce.log.writes() if "/oauth2/" not in r.path] == []
        assert len(accounts_of(sandbox, customer["id"])) == 2
        assert not any(a.get("Nue_Customer_Id__c") for a in sandbox.salesforce.records("Account"))


class TestLostAnswers:
    @pytest.mark.parametrize("fault", ["applied_drop_next", "applied_503_next", "applied_504_next"])
    async def test_an_upsert_whose_answer_was_lost_makes_one_account_and_one_contact_each(
            self, sandbox: Sandbox, tmp_path: Path, fault: str) -> None:
        """The account's upsert, then the contacts', are applied and their answers lost: each is sent again by its
        external id and lands on the record it made. Exactly one account and one contact per Nue contact."""
        customer = nue_customer(sandbox)
        ada, bill = nue_contacts(sandbox, customer["id"])
        activate(sandbox, customer["id"], bill_to=bill["id"])
        sandbox.salesforce.set_faults(**{fault: 2}, applied_paths=["PATCH /composite/sobjects/*"])
        async with engine(sandbox, tmp_path, flows=FLOWS) as e:
            await deliver(e, sandbox)
        assert sandbox.salesforce.faults_fired()[fault.removesuffix("_next")] == 2
        (account,) = accounts_of(sandbox, customer["id"])
        by_email = contacts_by_email(sandbox)
        assert [c["Nue_Contact_Id__c"] for c in by_email["ada@zephyr.io"]] == [ada["id"]]
        assert [c["Nue_Contact_Id__c"] for c in by_email["billing@zephyr.io"]] == [bill["id"]]
        tasks = [t for t in sandbox.salesforce.records("Task") if t["WhatId"] == account["Id"]]
        assert len(tasks) == STEPS and {t["WhoId"] for t in tasks} == {by_email["billing@zephyr.io"][0]["Id"]}


class TestTheNewAccountGetsItsState:
    async def test_the_order_activation_alone_brings_the_new_account_its_status_and_mrr(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Only Nue's order.activated is delivered: flow 6 makes the account, and flow 2, working on the same
        claim, waits for it instead of skipping the customer (Nue's sync never sets externalId here), then writes
        Nue's state there, by the store's link."""
        from dataclasses import replace
        from decimal import Decimal

        from revdaemon.flows.subscription_status import SubscriptionStatusFlow

        customer = nue_customer(sandbox)
        activate(sandbox, customer["id"])
        status = SubscriptionStatusFlow(replace(SubscriptionStatusFlow().mapping, wait_for_onboarding=True))
        async with engine(sandbox, tmp_path, flows=[OnboardingFlow(), status]) as e:
            await deliver(e, sandbox)
        [account] = accounts_of(sandbox, customer["id"])
        assert sandbox.nue.store.customers[customer["id"]].get("externalId") in (None, "")
        account = sandbox.salesforce.record("Account", account["Id"])
        assert account["Subscription_Status__c"] == "Active"
        nue_mrr = sandbox.nue.store.customers[customer["id"]]["todayCMRR"]
        assert Decimal(str(account["MRR__c"])) == Decimal(str(nue_mrr))

    async def test_a_wait_that_nothing_ends_finishes_as_a_skip_not_a_retry(self, sandbox: Sandbox,
                                                                            tmp_path: Path) -> None:
        """Flow 2 waits, but flow 6 makes no account (here it may not create one): the wait ends with the claim's
        steps as a skip; the event is done, neither retried nor dead."""
        from dataclasses import replace

        from revdaemon.flows.customer_records import CustomerRecords
        from revdaemon.flows.onboarding import OnboardingMapping
        from revdaemon.flows.subscription_status import SubscriptionStatusFlow

        customer = nue_customer(sandbox)
        activate(sandbox, customer["id"])
        status = SubscriptionStatusFlow(replace(SubscriptionStatusFlow().mapping, wait_for_onboarding=True))
        no_creates = OnboardingFlow(OnboardingMapping(records=CustomerRecords(create_accounts=False)))
        async with engine(sandbox, tmp_path, flows=[no_creates, status]) as e:
            await deliver(e, sandbox)
            depths = await e.store.queue_depths()
        assert depths[EventStatus.DONE] >= 1 and depths[EventStatus.DEAD] == 0
        assert depths[EventStatus.RECEIVED] == depths[EventStatus.CLAIMED] == 0
        assert accounts_of(sandbox, customer["id"]) == []

    async def test_without_onboarding_making_accounts_the_customer_is_skipped_as_before(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """No flow makes the account: flow 2 does not wait (nothing would come), the event is done, nothing written."""
        from revdaemon.flows.subscription_status import SubscriptionStatusFlow

        customer = nue_customer(sandbox)
        activate(sandbox, customer["id"])
        async with engine(sandbox, tmp_path, flows=[SubscriptionStatusFlow()]) as e:
            await deliver(e, sandbox)
            assert (await e.store.queue_depths())[EventStatus.DONE] >= 1
        assert accounts_of(sandbox, customer["id"]) == []


class TestTheNightlyReconciliation:
    async def test_an_account_flow_6_made_is_reconciled_and_repaired(self, sandbox: Sandbox, tmp_path: Path) -> None:
        """Nue names no account for the customer made in Nue; the reconciliation finds it by the store's link,
        reports a hand edit of its MRR as drift, and its repair puts Nue's MRR back."""
        from dataclasses import replace
        from decimal import Decimal

        from revdaemon.domain.reconciliation import Drift
        from revdaemon.engine.reconcile import reconcile
        from revdaemon.flows.subscription_status import SubscriptionStatusFlow

        customer = nue_customer(sandbox)
        activate(sandbox, customer["id"])
        status = SubscriptionStatusFlow(replace(SubscriptionStatusFlow().mapping, wait_for_onboarding=True))
        async with engine(sandbox, tmp_path, flows=[OnboardingFlow(), status]) as e:
            await deliver(e, sandbox)
            [account] = accounts_of(sandbox, customer["id"])
            sandbox.salesforce.update("Account", account["Id"], {"MRR__c": 1})  # a person's edit
            report = await reconcile(e.nue, e.salesforce, store=e.store, repair=True)
            [row] = [r for r in report.rows if r.customer_id == customer["id"]]
            assert (row.linked_by, row.drift) == ("store link", Drift.SALESFORCE_DIFFERS)
            assert customer["id"] in report.repairs
            with anyio.fail_after(20):
                while await e.worker.run_once():
                    pass
        nue_mrr = sandbox.nue.store.customers[customer["id"]]["todayCMRR"]
        mrr = sandbox.salesforce.record("Account", account["Id"])["MRR__c"]
        assert Decimal(str(mrr)) == Decimal(str(nue_mrr))


class TestADealWonOnTheNewAccount:
    async def test_flow_1_orders_it_for_the_customer_flow_6_linked_never_a_second_customer(
            self, sandbox: Sandbox, tmp_path: Path) -> None:
        """A rep wins a deal on the account flow 6 made for a customer made in Nue (Nue names no account for it):
        the order goes to that customer; no second Nue customer is made."""
        from datetime import UTC, datetime

        from revdaemon.flows.closed_won_to_order import ClosedWonToOrderFlow
        from tests.integration.test_engine_closed_won import closed_won_event

        customer = nue_customer(sandbox)
        activate(sandbox, customer["id"])
        async with engine(sandbox, tmp_path, flows=[OnboardingFlow(), ClosedWonToOrderFlow()]) as e:
            await deliver(e, sandbox)
            [account] = accounts_of(sandbox, customer["id"])
            deal = sandbox.salesforce.seed_data.opportunities[4].id
            sandbox.salesforce.update("Opportunity", deal, {"AccountId": account["Id"]})
            customers_before = len(sandbox.nue.store.customers)
            won = sandbox.salesforce.close_won(deal, close_date=datetime.now(UTC).date())  # after the cut-off
            await e.store.add_events([closed_won_event(won)])
            with anyio.fail_after(20):
                while await e.worker.run_once():
                    pass
        assert len(sandbox.nue.store.customers) == customers_before
        ordered = [o for o in sandbox.nue.store.orders.values() if deal in str(o.get("description") or "")]
        assert [o["customerId"] for o in ordered] == [customer["id"]]
