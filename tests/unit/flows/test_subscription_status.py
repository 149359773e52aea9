from __future__ import annotations

import dataclasses
from decimal import Decimal

from revdaemon.domain.synced import SyncedRecord
from revdaemon.flows.base import FlowEvent, Found, Needs
from revdaemon.flows.plan import Plan, SfUpdate
from revdaemon.flows.sources import FROM_NUE
from revdaemon.flows.subscription_status import REPAIR_FLAG, REPAIR_SOURCE, SubscriptionStatusFlow

CATALOG = ({"id": "p1", "priceBookEntries": [{"id": "e1", "listPrice": 500, "billingPeriod": "Month"}]},)
CUSTOMER = {"id": "c1", "externalId": "001A", "name": "Acme"}
SUBS = [{"name": "S1", "customerId": "c1", "priceBookEntryId": "e1", "quantity": 2, "status": "Active",
         "subscriptionEndDate": "2027-01-31", "lastModifiedDate": "2026-02-01T00:00:00Z"}]
FIELDS = frozenset({("Account", "Subscription_Status__c"), ("Account", "MRR__c"), ("Account", "ARR__c"),
                    ("Account", "Next_Renewal_Date__c")})


def event(**data: object) -> FlowEvent:
    return FlowEvent(key="k", type="subscription.updated", source="nue_webhook",
                     payload={"data": {"id": "s1", "customerId": "c1", **data}})


def found(account: dict[str, object] | None) -> Found:
    return Found(nue_customers={"c1": CUSTOMER}, nue_subscriptions={"c1": SUBS}, nue_orders={"c1": []},
                 sf_records={("Account", "001A"): account}, catalog=CATALOG)


class TestNeeds:
    def test_first_the_customer_then_its_account(self) -> None:
        """The account can only be asked for once the customer (and its externalId) is known."""
        flow = SubscriptionStatusFlow()
        first = flow.needs(event(), Found())
        assert first == Needs(nue_customers=frozenset({"c1"}), nue_subscriptions_of=frozenset({"c1"}),
                              nue_orders_of=frozenset({"c1"}), catalog=True, id_links=frozenset({("account", "c1")}))
        second = flow.needs(event(), Found(nue_customers={"c1": CUSTOMER}))
        assert second.sf_records == {("Account", "001A")} and second.sf_fields == FIELDS


class TestPlan:
    def test_changed_fields_only(self) -> None:
        """Only the fields that differ are written, keyed by account and state version."""
        plan = SubscriptionStatusFlow().plan(event(), found({"Id": "001A", "Subscription_Status__c": "Active",
                                                              "MRR__c": 0, "ARR__c": None,
                                                              "Next_Renewal_Date__c": "2027-01-31"}))
        assert plan == Plan(
            writes=(SfUpdate(sobject="Account", record_id="001A",
                             fields={"MRR__c": Decimal("1000.00"), "ARR__c": Decimal("12000.00")},
                             idem_key=plan.writes[0].idem_key),),
            version="2026-02-01T00:00:00.000000Z", entity="nue:customer:c1")
        assert plan.writes[0].idem_key.startswith("subscription_status:account:001A:2026-02-01T00:00:00.000000Z:")

    def test_a_hand_edit_gets_a_new_key(self) -> None:
        """The same Nue state over different wrong account values is a different write (a repair is sent)."""
        flow = SubscriptionStatusFlow()
        first = flow.plan(event(), found({"Id": "001A", "MRR__c": 0})).writes[0].idem_key
        again = flow.plan(event(), found({"Id": "001A", "MRR__c": 0})).writes[0].idem_key
        edited = flow.plan(event(), found({"Id": "001A", "MRR__c": 7})).writes[0].idem_key
        assert first == again and first != edited

    def test_nothing_to_write_when_up_to_date(self) -> None:
        """An echo or a duplicate plans no write."""
        plan = SubscriptionStatusFlow().plan(event(), found({"Id": "001A", "Subscription_Status__c": "Active",
                                                              "MRR__c": 1000.0, "ARR__c": 12000,
                                                              "Next_Renewal_Date__c": "2027-01-31"}))
        assert plan.writes == () and plan.skip_reason

    def test_body_values_are_ignored(self) -> None:
        """A notification claiming another quantity changes nothing: only found state counts."""
        flow = SubscriptionStatusFlow()
        honest = flow.plan(event(), found({"Id": "001A"}))
        lying = flow.plan(event(quantity=9999, status="Canceled"), found({"Id": "001A"}))
        assert honest == lying

    def test_unlinked_customer_is_skipped(self) -> None:
        """A customer not yet linked to a Salesforce account plans nothing, with the reason."""
        unlinked = Found(nue_customers={"c1": {**CUSTOMER, "externalId": None}})
        plan = SubscriptionStatusFlow().plan(event(), unlinked)
        assert plan.writes == () and "not linked" in (plan.skip_reason or "")

    def test_deterministic(self) -> None:
        """The same inputs give the same plan."""
        flow = SubscriptionStatusFlow()
        assert flow.plan(event(), found({"Id": "001A"})) == flow.plan(event(), found({"Id": "001A"}))


class TestHandEdits:
    REF = "salesforce:Account:001A"

    def plan(self, mrr: object, synced: SyncedRecord, notified: FlowEvent | None = None) -> Plan:
        shown = found({"Id": "001A", "Subscription_Status__c": "Active", "MRR__c": mrr, "ARR__c": 12000,
                       "Next_Renewal_Date__c": "2027-01-31"})
        return SubscriptionStatusFlow().plan(notified or event(), dataclasses.replace(shown, synced={self.REF: synced}))

    def test_a_value_neither_synced_nor_nues_is_an_edit(self) -> None:
        """The account shows a value revdaemon never wrote: a conflict with the three values."""
        plan = self.plan(7, SyncedRecord(values={"MRR__c": "900.00"}))
        assert plan.conflict is not None and plan.conflict.salesforce_values == {"MRR__c": 7}
        assert plan.conflict.synced_values == {"MRR__c": "900.00"}

    def test_a_value_revdaemon_wrote_around_the_read_is_no_edit(self) -> None:
        """Another worker's write raced the read (the account shows it, the synced values another): the account
        is written, no conflict."""
        plan = self.plan(800.0, SyncedRecord(values={"MRR__c": "900.00"}, recent={"MRR__c": ("800.00", "850.00")}))
        assert plan.conflict is None
        assert [w.fields for w in plan.writes] == [{"MRR__c": Decimal("1000.00")}]

    def test_recent_values_of_another_field_do_not_excuse_an_edit(self) -> None:
        """Only the field's own recent values count."""
        plan = self.plan(7, SyncedRecord(values={"MRR__c": "900.00"}, recent={"ARR__c": ("7",)}))
        assert plan.conflict is not None

    def test_a_repair_writes_over_the_edit(self) -> None:
        """A reconciliation repair (the flag, from the repair source) writes Nue's value over a hand edit."""
        repair = FlowEvent(key="reconcile:c1:2026-02-01", type="subscription.updated", source=REPAIR_SOURCE,
                           payload={"data": {"id": "c1", "customerId": "c1"}, REPAIR_FLAG: True})
        plan = self.plan(7, SyncedRecord(values={"MRR__c": "900.00"}), repair)
        assert plan.conflict is None and [w.fields for w in plan.writes] == [{"MRR__c": Decimal("1000.00")}]

    def test_a_webhooks_repair_flag_is_not_a_repair(self) -> None:
        """The same flag in a webhook body (or a poll's) is anyone's word: the edit still opens a conflict."""
        for source in sorted(FROM_NUE):
            flagged = FlowEvent(key="nue:e", type="subscription.updated", source=source,
                                payload={"data": {"id": "s1", "customerId": "c1"}, REPAIR_FLAG: True})
            plan = self.plan(7, SyncedRecord(values={"MRR__c": "900.00"}), flagged)
            assert plan.conflict is not None and plan.writes == (), source


class TestAccountOfACustomerMadeInNue:
    def test_the_store_link_names_the_account_before_nue_sets_external_id(self) -> None:
        """Flow 6 made the account for a customer made in Nue and linked them in the store: flow 2 writes that
        account's state without waiting for Nue's own sync to set externalId."""
        customer = {"id": "c1", "name": "Acme"}  # no externalId
        flow = SubscriptionStatusFlow()
        linked = Found(nue_customers={"c1": customer}, id_links={("account", "c1"): "001N"})
        assert ("Account", "001N") in flow.needs(event(), linked).sf_records
        complete = Found(nue_customers={"c1": customer}, nue_subscriptions={"c1": SUBS}, nue_orders={"c1": []},
                         id_links={("account", "c1"): "001N"}, sf_records={("Account", "001N"): {"Id": "001N"}},
                         catalog=CATALOG)
        [write] = flow.plan(event(), complete).writes
        assert isinstance(write, SfUpdate) and write.record_id == "001N"
        assert write.fields["MRR__c"] == Decimal("1000.00")
        unlinked = Found(nue_customers={"c1": customer}, id_links={("account", "c1"): None})
        assert flow.plan(event(), unlinked).skip_reason == "customer c1 is not linked to a Salesforce account yet"


class TestOriginatingOpportunity:
    def test_the_opportunity_of_the_order_gets_the_status(self) -> None:
        """A subscription made by an order carrying an opportunity marker updates that opportunity too."""
        subs = [{**SUBS[0], "orderProductId": "L1"}]
        orders = [{"id": "o-1", "description": "From Salesforce (sfdc-opportunity:006A)",
                   "orderProducts": [{"id": "L1", "discount": 0, "totalAmount": 12000}]}]
        account = {"Id": "001A", "Subscription_Status__c": "Active", "MRR__c": 1000, "ARR__c": 12000,
                   "Next_Renewal_Date__c": "2027-01-31"}
        flow = SubscriptionStatusFlow()
        partial = Found(nue_customers={"c1": CUSTOMER}, nue_subscriptions={"c1": subs}, nue_orders={"c1": orders},
                        sf_records={("Account", "001A"): account}, catalog=CATALOG)
        assert ("Opportunity", "006A") in flow.needs(event(), partial).sf_records
        complete = Found(nue_customers={"c1": CUSTOMER}, nue_subscriptions={"c1": subs}, nue_orders={"c1": orders},
                         sf_records={("Account", "001A"): account,
                                     ("Opportunity", "006A"): {"Id": "006A", "Subscription_Status__c": None}},
                         catalog=CATALOG)
        [write] = flow.plan(event(), complete).writes
        assert isinstance(write, SfUpdate)
        assert (write.sobject, write.record_id, dict(write.fields)) == (
            "Opportunity", "006A", {"Subscription_Status__c": "Active", "MRR__c": Decimal("1000.00"),
                                    "Next_Renewal_Date__c": "2027-01-31"})

    def test_each_opportunity_shows_only_the_subscriptions_its_order_made(self) -> None:
        """Two deals of one customer: each opportunity gets the MRR and renewal of its own subscriptions, the
        account their sum; an opportunity already showing its state is not written."""
        subs = [{**SUBS[0], "orderProductId": "L1"},
                {**SUBS[0], "name": "S2", "quantity": 1, "orderProductId": "L2", "subscriptionEndDate": "2027-06-30"}]
        orders = [{"id": f"o-{n}", "description": f"From Salesforce (sfdc-opportunity:006{n})",
                   "orderProducts": [{"id": f"L{n}", "discount": 0}]} for n in ("1", "2")]
        account = {"Id": "001A", "Subscription_Status__c": "Active", "MRR__c": 1500, "ARR__c": 18000,
                   "Next_Renewal_Date__c": "2027-01-31"}
        up_to_date = {"Id": "0062", "Subscription_Status__c": "Active", "MRR__c": 500,
                      "Next_Renewal_Date__c": "2027-06-30"}
        complete = Found(nue_customers={"c1": CUSTOMER}, nue_subscriptions={"c1": subs}, nue_orders={"c1": orders},
                         sf_records={("Account", "001A"): account, ("Opportunity", "0061"): {"Id": "0061"},
                                     ("Opportunity", "0062"): up_to_date}, catalog=CATALOG)
        [write] = SubscriptionStatusFlow().plan(event(), complete).writes
        assert isinstance(write, SfUpdate)
        assert (write.record_id, dict(write.fields)) == ("0061", {
            "Subscription_Status__c": "Active", "MRR__c": Decimal("1000.00"), "Next_Renewal_Date__c": "2027-01-31"})

    def test_the_opportunity_fields_can_be_switched_off(self) -> None:
        flow = SubscriptionStatusFlow(dataclasses.replace(SubscriptionStatusFlow().mapping,
                                                          opportunity_status_field=None, opportunity_mrr_field=None,
                                                          opportunity_renewal_field=None))
        assert "Opportunity" not in flow.salesforce_fields
