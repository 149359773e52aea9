from __future__ import annotations

from typing import Any

import pytest

from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.customer_records import CustomerRecords
from revdaemon.flows.onboarding import OnboardingFlow, OnboardingMapping, entitlements
from revdaemon.flows.plan import Plan, SfCreate, SfUpdate

CATALOG = (
    {"id": "p-plat", "name": "Platform Subscription", "priceBookEntries": [{"id": "e-plat"}]},
    {"id": "p-seat", "name": "User Seats", "priceBookEntries": [{"id": "e-seat"}]},
    {"id": "p-bndl", "name": "Growth Bundle", "priceBookEntries": [{"id": "e-bndl"}]},
)
ORDER = {"id": "o-1", "orderNumber": "O-00000001", "orderType": "New", "status": "Activated", "customerId": "c1",
         "activatedDate": "2026-03-10T23:30:00Z", "orderProducts": [
             {"id": "l1", "priceBookEntryId": "e-plat", "quantity": 1.0},
             {"id": "l2", "priceBookEntryId": "e-seat", "quantity": 25}]}
CUSTOMER = {"id": "c1", "externalId": "001A"}
ACCOUNT = {"Id": "001A", "OwnerId": "005OWNER", "Customer_Success_Manager__c": "005CSM", "Entitlements__c": None,
           "Last_Nue_Order__c": None}
ENTITLEMENTS = "Platform Subscription x 1\nUser Seats x 25"


def event(order_id: str = "o-1", **data: Any) -> FlowEvent:
    return FlowEvent(key="k", type="order.activated", source="nue_webhook",
                     payload={"data": {"id": order_id, "customerId": "c1", **data}})


def found(*, account: dict[str, Any] | None = None, tasks: list[dict[str, Any]] | None = None,
          orders: list[dict[str, Any]] | None = None) -> Found:
    return Found(nue_orders={"c1": orders or [ORDER]}, nue_customers={"c1": CUSTOMER}, catalog=CATALOG,
                 id_links={("account", "c1"): None},  # read with the customer: revdaemon made no account for it
                 sf_records={("Account", "001A"): {**ACCOUNT, **(account or {})}},
                 sf_children={("Task", "WhatId", "001A"): tasks or []})


def task(subject: str, due: str, owner: str = "005CSM") -> SfCreate:
    fields = {"WhatId": "001A", "Subject": subject, "Status": "Not Started", "Priority": "Normal",
              "OwnerId": owner, "ActivityDate": due}
    step = subject.split(" (")[0]
    return SfCreate(sobject="Task", fields=fields, match={"WhatId": "001A", "Subject": subject},
                    idem_key=f"onboarding:task:o-1:{step}", seen_absent=True)


class TestPlan:
    def test_account_and_the_configured_tasks(self) -> None:
        """Activation writes entitlements and order number, and one Task per step for the CSM."""
        plan = OnboardingFlow().plan(event(), found())
        assert plan == Plan(writes=(
            SfUpdate(sobject="Account", record_id="001A",
                     fields={"Entitlements__c": ENTITLEMENTS, "Last_Nue_Order__c": "O-00000001"},
                     idem_key=plan.writes[0].idem_key),
            task("Kick-off call (O-00000001)", "2026-03-12"),
            task("Send welcome pack (O-00000001)", "2026-03-11"),
            task("Configure tenant (O-00000001)", "2026-03-17"),
        ))

    @pytest.mark.parametrize("csm", [None, ""])
    def test_tasks_fall_back_to_the_account_owner(self, csm: str | None) -> None:
        """Without a customer success manager the Tasks go to the account owner."""
        plan = OnboardingFlow().plan(event(), found(account={"Customer_Success_Manager__c": csm}))
        owners = {w.fields["OwnerId"] for w in plan.writes if isinstance(w, SfCreate)}
        assert owners == {"005OWNER"}

    def test_replay_with_everything_there_plans_nothing(self) -> None:
        """The account shows the order and every Task exists: nothing to write."""
        done = found(account={"Entitlements__c": ENTITLEMENTS, "Last_Nue_Order__c": "O-00000001"},
                     tasks=[{"Id": f"00T{i}", "WhatId": "001A", "Subject": f"{s} (O-00000001)"}
                            for i, s in enumerate(("Kick-off call", "Send welcome pack", "Configure tenant"))])
        plan = OnboardingFlow().plan(event(), done)
        assert plan.writes == () and plan.skip_reason

    def test_only_differing_fields_and_missing_tasks(self) -> None:
        """A half-done onboarding writes only what is missing."""
        partial = found(account={"Entitlements__c": ENTITLEMENTS},
                        tasks=[{"Id": "00T1", "WhatId": "001A", "Subject": "Kick-off call (O-00000001)"}])
        plan = OnboardingFlow().plan(event(), partial)
        update, *tasks = plan.writes
        assert isinstance(update, SfUpdate) and update.fields == {"Last_Nue_Order__c": "O-00000001"}
        assert [t.fields["Subject"] for t in tasks if isinstance(t, SfCreate)] == [
            "Send welcome pack (O-00000001)", "Configure tenant (O-00000001)"]

    def test_a_task_renamed_in_another_case_still_counts(self) -> None:
        """SOQL (and the executor's lookup) compare text without case; so does the flow, or the executor would
        skip its lookup for a Task that is there."""
        renamed = found(account={"Entitlements__c": ENTITLEMENTS},
                        tasks=[{"Id": "00T1", "WhatId": "001A", "Subject": "KICK-OFF CALL (o-00000001)"}])
        creates = [w for w in OnboardingFlow().plan(event(), renamed).writes if isinstance(w, SfCreate)]
        assert [t.fields["Subject"] for t in creates] == [
            "Send welcome pack (O-00000001)", "Configure tenant (O-00000001)"]

    def test_tasks_from_config(self) -> None:
        """Subjects and offsets come from the mapping."""
        flow = OnboardingFlow(OnboardingMapping(tasks=(("Security review", 14),)))
        [_, only] = flow.plan(event(), found()).writes
        assert isinstance(only, SfCreate)
        assert only.fields["Subject"] == "Security review (O-00000001)" and only.fields["ActivityDate"] == "2026-03-24"

    def test_change_orders_get_no_onboarding(self) -> None:
        """An activated change order is skipped, and no Salesforce read is asked for it."""
        change = {**ORDER, "id": "o-2", "orderType": "Change", "assetChanges": [{"changeType": "Renew"}]}
        flow = OnboardingFlow()
        assert flow.needs(event("o-2"), Found(nue_orders={"c1": [change]}, nue_customers={"c1": CUSTOMER})
                          ).sf_records == frozenset()
        plan = flow.plan(event("o-2"), found(orders=[ORDER, change]))
        assert plan.writes == () and "change order" in (plan.skip_reason or "")

    def test_draft_orders_are_skipped(self) -> None:
        """A draft order starts no onboarding, whatever the notification claims."""
        plan = OnboardingFlow().plan(event(status="Activated"), found(orders=[{**ORDER, "status": "Draft"}]))
        assert plan.writes == () and "Draft" in (plan.skip_reason or "")

    def test_a_second_order_adds_to_the_entitlements(self) -> None:
        """Entitlements sum every activated order, and the last order is the latest one."""
        second = {**ORDER, "id": "o-3", "orderNumber": "O-00000003", "activatedDate": "2026-04-01T00:00:00Z",
                  "orderProducts": [{"id": "l3", "priceBookEntryId": "e-seat", "quantity": 5}]}
        plan = OnboardingFlow().plan(event("o-1"), found(orders=[second, ORDER]))
        update = plan.writes[0]
        assert isinstance(update, SfUpdate)
        assert update.fields == {"Entitlements__c": "Platform Subscription x 1\nUser Seats x 30",
                                 "Last_Nue_Order__c": "O-00000003"}
        assert update.idem_key.startswith("onboarding:account:001A:o-3:")

    def test_unlinked_customer_is_skipped_without_create_accounts(self) -> None:
        """With flows.onboarding.create_accounts off, a customer not linked to an account plans nothing."""
        flow = OnboardingFlow(OnboardingMapping(records=CustomerRecords(create_accounts=False)))
        plan = flow.plan(event(), Found(nue_orders={"c1": [ORDER]}, id_links={("account", "c1"): None},
                                        nue_customers={"c1": {"id": "c1", "externalId": None}}))
        assert plan.writes == () and "not linked" in (plan.skip_reason or "")


class TestEntitlements:
    def test_bundle_options_are_listed(self) -> None:
        """A bundle line and its add-ons each give a line; the line's own product name wins."""
        order = {"orderProducts": [{"priceBookEntryId": "e-bndl", "quantity": 1, "addOns": [
            {"priceBookEntryId": "e-plat", "quantity": 1}, {"productName": "Seats (bundle)", "quantity": 10}]}]}
        assert entitlements([order], CATALOG) == "Growth Bundle x 1\nPlatform Subscription x 1\nSeats (bundle) x 10"
