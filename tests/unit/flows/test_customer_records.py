"""Flow 6's account and contact rules (flows/customer_records.py): pure, no mocks."""

from __future__ import annotations

from typing import Any

import pytest

from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.customer_records import domain_of, primary_contact
from revdaemon.flows.onboarding import OnboardingFlow
from revdaemon.flows.plan import LinkIds, SfCreate, SfUpdate, SfUpsert

ORDER = {"id": "o-1", "orderNumber": "O-1", "orderType": "New", "status": "Activated", "customerId": "c1",
         "activatedDate": "2026-03-10T10:00:00Z", "billToContactId": "n-bill", "orderProducts": []}
CUSTOMER = {"id": "c1", "name": "Zephyr", "website": "https://zephyr.io", "phone": "+1 1", "externalId": None}
CONTACTS = [{"id": "n-ada", "firstName": "Ada", "lastName": "Byron", "email": "ada@zephyr.io"},
            {"id": "n-bill", "firstName": "Bill", "lastName": "Payne", "email": "bill@zephyr.io"}]
EVENT = FlowEvent(key="k", type="order.activated", source="nue_webhook", payload={"data": {"id": "o-1",
                                                                                           "customerId": "c1"}})


def found(**kw: Any) -> Found:
    base: dict[str, Any] = dict(nue_orders={"c1": [ORDER]}, nue_customers={"c1": CUSTOMER},
                                id_links={("account", "c1"): None}, nue_contacts={"c1": CONTACTS},
                                sf_children={("Account", "Nue_Customer_Id__c", "c1"): [],
                                             ("Account", "Name", "Zephyr"): []})
    base.update(kw)
    return Found(**base)


def linked(children: dict[tuple[str, str, str], Any] | None = None) -> Found:
    """The account found by its key, with the contacts' reads."""
    sf = {("Account", "Nue_Customer_Id__c", "c1"): [{"Id": "001A"}], ("Task", "WhatId", "001A"): [],
          **{("Contact", "Nue_Contact_Id__c", c["id"]): [] for c in CONTACTS},
          **{("Contact", "Email", c["email"]): [] for c in CONTACTS}, **(children or {})}
    return found(sf_children=sf, sf_records={("Account", "001A"): {"Id": "001A", "OwnerId": "005O"}})


class TestAccount:
    def test_no_account_anywhere_upserts_one_by_the_customer_id(self) -> None:
        """No link, no keyed account, no account of the name: an upsert by Nue_Customer_Id__c, mapped fields."""
        plan = OnboardingFlow().plan(EVENT, found())
        assert plan.writes == (SfUpsert(sobject="Account", external_id_field="Nue_Customer_Id__c", external_id="c1",
                                        fields={"Name": "Zephyr", "Phone": "+1 1", "Website": "https://zephyr.io"},
                                        idem_key="onboarding:account-create:c1"),)
        assert not plan.done

    def test_one_account_of_the_name_and_domain_is_linked(self) -> None:
        """The key is set on it and nothing else."""
        rows = [{"Id": "001H", "Name": "ZEPHYR", "Website": "www.zephyr.io"},
                {"Id": "001X", "Name": "Zephyr", "Website": "zephyr.de"}]
        plan = OnboardingFlow().plan(EVENT, found(sf_children={("Account", "Nue_Customer_Id__c", "c1"): [],
                                                               ("Account", "Name", "Zephyr"): rows}))
        assert plan.writes == (SfUpdate(sobject="Account", record_id="001H", fields={"Nue_Customer_Id__c": "c1"},
                                        idem_key="onboarding:account-link:c1:001H"),)

    @pytest.mark.parametrize("second", [{"Website": "https://zephyr.io/x"}, {"Website": None}])
    def test_an_ambiguous_name_opens_a_conflict(self, second: dict[str, Any]) -> None:
        """Two of the domain, or one without a website beside it: a person decides, nothing is written."""
        rows = [{"Id": "001H", "Name": "Zephyr", "Website": "zephyr.io"}, {"Id": "001I", "Name": "Zephyr", **second}]
        plan = OnboardingFlow().plan(EVENT, found(sf_children={("Account", "Nue_Customer_Id__c", "c1"): [],
                                                               ("Account", "Name", "Zephyr"): rows}))
        assert plan.writes == () and plan.conflict is not None and plan.conflict.record_ref == "nue:Customer:c1"

    def test_a_keyed_account_is_the_customer_s_and_the_link_is_kept(self) -> None:
        """Found by Nue_Customer_Id__c: the store's link is recorded, contacts come first, Tasks wait for them."""
        plan = OnboardingFlow().plan(EVENT, linked())
        assert plan.links == (LinkIds(object_type="account", nue_id="c1", salesforce_id="001A"),)
        assert {w.external_id for w in plan.writes if isinstance(w, SfUpsert)} == {"n-ada", "n-bill"}
        assert not plan.done and not any(isinstance(w, SfCreate) for w in plan.writes)


class TestContacts:
    def test_a_contact_of_the_email_without_key_gets_the_key_not_a_twin(self) -> None:
        """Made by a person (no key): the key is set on it and the Tasks name it when it is the bill-to contact."""
        by_hand = {"Id": "003H", "Email": "BILL@zephyr.io", "AccountId": "001A", "FirstName": "Bill",
                   "LastName": "Payne", "Nue_Contact_Id__c": None}
        keyed_ada = {"Id": "003A", "Email": "ada@zephyr.io", "AccountId": "001A", "FirstName": "Ada",
                     "LastName": "Byron", "Nue_Contact_Id__c": "n-ada"}
        plan = OnboardingFlow().plan(EVENT, linked({("Contact", "Email", "bill@zephyr.io"): [by_hand],
                                                    ("Contact", "Nue_Contact_Id__c", "n-ada"): [keyed_ada]}))
        contacts = [w for w in plan.writes if w.sobject == "Contact"]  # type: ignore[union-attr]
        assert contacts == [SfUpdate(sobject="Contact", record_id="003H", fields={"Nue_Contact_Id__c": "n-bill",
                                                                                  "Email": "bill@zephyr.io"},
                                     idem_key="onboarding:contact-link:n-bill:003H")]
        tasks = [w for w in plan.writes if isinstance(w, SfCreate)]
        assert len(tasks) == 3 and {t.fields["WhoId"] for t in tasks} == {"003H"} and plan.done

    def test_a_contact_of_the_email_on_another_companys_account_is_left_to_it(self) -> None:
        """An agency's person on customer A's account is not customer B's contact: B gets its own, A's keeps no
        key of B's."""
        elsewhere = {"Id": "003X", "Email": "ada@zephyr.io", "AccountId": "001OTHER", "Nue_Contact_Id__c": None}
        plan = OnboardingFlow().plan(EVENT, linked({("Contact", "Email", "ada@zephyr.io"): [elsewhere]}))
        contacts = [w for w in plan.writes if getattr(w, "sobject", None) == "Contact"]
        assert contacts and not any(getattr(w, "record_id", None) == "003X" for w in contacts)
        ada = [w for w in contacts if isinstance(w, SfUpsert) and w.external_id == "n-ada"]
        assert ada and ada[0].fields["AccountId"] == "001A"

    def test_two_contacts_of_one_email_open_a_conflict(self) -> None:
        """Neither is guessed."""
        twins = [{"Id": f"003{i}", "Email": "ada@zephyr.io", "AccountId": "001A"} for i in range(2)]
        plan = OnboardingFlow().plan(EVENT, linked({("Contact", "Email", "ada@zephyr.io"): twins}))
        assert plan.conflict is not None and plan.conflict.record_ref == "nue:Contact:n-ada"


class TestHelpers:
    @pytest.mark.parametrize(("value", "domain"), [("https://www.Acme.com/about", "acme.com"), ("acme.com", "acme.com"),
                                                   ("ops@acme.com", "acme.com"), ("", None), (None, None)])
    def test_domain_of(self, value: Any, domain: str | None) -> None:
        """Websites and email addresses reduce to one comparable domain."""
        assert domain_of(value) == domain

    def test_primary_contact_falls_back_to_bill_to_then_the_first(self) -> None:
        """[assumed] primaryContactId, else billToContactId, else the first contact made."""
        assert primary_contact({**ORDER, "primaryContactId": "n-ada"}, CUSTOMER, CONTACTS) == "n-ada"
        assert primary_contact(ORDER, CUSTOMER, CONTACTS) == "n-bill"
        assert primary_contact({"id": "o"}, CUSTOMER, [{**c, "createdDate": d} for c, d in
                                                       zip(CONTACTS, ("2", "1"), strict=True)]) == "n-bill"


class TestNuesOwnSyncRacingRevdaemon:
    def test_nue_linking_another_account_than_revdaemons_opens_a_conflict_and_writes_nothing(self) -> None:
        """revdaemon made an account for a customer made in Nue; Nue's own sync then made its own and set
        externalId: two accounts for one customer are a person's to merge, not silently two."""
        raced = found(nue_customers={"c1": {**CUSTOMER, "externalId": "001NUE"}},
                      id_links={("account", "c1"): "001REV"})
        plan = OnboardingFlow().plan(EVENT, raced)
        assert plan.conflict is not None and plan.writes == ()
        assert "001NUE" in plan.conflict.reason and "001REV" in plan.conflict.reason

    def test_the_same_account_in_15_and_18_characters_is_no_race(self) -> None:
        agreed = found(nue_customers={"c1": {**CUSTOMER, "externalId": "001A00000000001"}},
                       id_links={("account", "c1"): "001A00000000001AAA"})
        assert OnboardingFlow().plan(EVENT, agreed).conflict is None


class TestTheAccountOfACustomer:
    """One rule for every flow that writes to a customer's account (flows 2 to 6)."""

    def test_nues_own_link_first_then_the_stores_then_the_sales_account(self) -> None:
        from revdaemon.flows.common import ACCOUNT_LINK, account_id_of

        linked = Found(id_links={(ACCOUNT_LINK, "c1"): "001L"})
        assert account_id_of("c1", {"externalId": "001E", "salesAccountId": "001S"}, linked) == "001E"
        assert account_id_of("c1", {"salesAccountId": "001S"}, linked) == "001L"
        assert account_id_of("c1", {"salesAccountId": "001S"}, Found()) == "001S"
        assert account_id_of("c1", None, linked) == "001L"  # known before the customer is read
        assert account_id_of("c1", {}, Found(id_links={(ACCOUNT_LINK, "c1"): None})) is None

    @pytest.mark.parametrize("flow", ["renewals", "billing_events", "amendments", "subscription_status"])
    def test_every_account_writing_flow_reads_the_stores_link(self, flow: str) -> None:
        from revdaemon.flows.amendments import AmendmentsFlow
        from revdaemon.flows.billing_events import BillingEventsFlow
        from revdaemon.flows.common import ACCOUNT_LINK, CHANGE_ORDER_TYPE
        from revdaemon.flows.renewals import RenewalFlow
        from revdaemon.flows.subscription_status import SubscriptionStatusFlow

        made = {"renewals": RenewalFlow, "billing_events": BillingEventsFlow, "amendments": AmendmentsFlow,
                "subscription_status": SubscriptionStatusFlow}[flow]()
        data = {"id": "x1", "customerId": "c1", "subscriptionId": "s1", "subscriptionEndDate": "2027-01-31"}
        event_type = {"renewals": "renewal.due", "billing_events": "invoice.activated",
                      "amendments": "order.activated", "subscription_status": "subscription.updated"}[flow]
        found = Found(nue_invoices={"x1": {"id": "x1", "customerId": "c1"}},
                      nue_orders={"c1": [{"id": "x1", "orderType": CHANGE_ORDER_TYPE, "customerId": "c1"}]})
        event = FlowEvent(key="k", type=event_type, source="schedule" if flow == "renewals" else "nue_webhook",
                          payload={"data": data, **({"subscriptionId": "s1", "customerId": "c1",
                                                      "subscriptionEndDate": "2027-01-31"} if flow == "renewals"
                                                     else {})})
        assert (ACCOUNT_LINK, "c1") in made.needs(event, found).id_links
