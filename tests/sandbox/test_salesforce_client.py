"""The simulator driven by simple-salesforce, an independent client (salesforce-api.md §6)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sf_fixtures import FakeClock, Running, SimulatorSession, keypair, running
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMoreThanOneRecord, SalesforceResourceNotFound

from revdaemon.sandbox.salesforce import SalesforceSimSettings

CLOCK = FakeClock()


@pytest.fixture
def org() -> Iterator[Running]:
    CLOCK.now = 1_780_000_000.0
    settings = SalesforceSimSettings(jwt_public_key_pem=keypair()[1], token_lifetime_seconds=3600, clock=CLOCK)
    with running(settings) as org:
        yield org


def jwt_client(org: Running) -> Salesforce:
    return Salesforce(username="integration@revdaemon.sandbox", consumer_key="sandbox-consumer-key",
                      privatekey=keypair()[0], session=SimulatorSession(org.url))


def test_jwt_login_gives_instance_url_of_the_simulator(org: Running) -> None:
    sf = jwt_client(org)
    assert sf.sf_instance == org.url.removeprefix("http://")
    assert sf.session_id.startswith(org.sim.seed_data.organization_id[:15] + "!")
    result = sf.query("SELECT Id, Name FROM Account ORDER BY Name")
    assert [r["Name"] for r in result["records"]][:2] == ["Acme Corp", "Globex"]


def test_client_credentials_login(org: Running) -> None:
    sf = Salesforce(consumer_key="sandbox-consumer-key", consumer_secret="sandbox-consumer-secret",
                    domain="revdaemon.my", session=SimulatorSession(org.url))
    assert sf.query("SELECT COUNT() FROM Opportunity")["totalSize"] == 6


def test_query_all_follows_next_records_url_across_pages(org: Running) -> None:
    sf = jwt_client(org)
    records = [{"attributes": {"type": "Nue_Billing_Event__c"}, "Nue_Event_Key__c": f"evt-{i:03d}",
                "Amount__c": i} for i in range(450)]
    for start in range(0, 450, 200):
        results = sf.restful("composite/sobjects", method="POST",
                             json={"allOrNone": True, "records": records[start:start + 200]})
        assert all(r["success"] for r in results)
    sf.headers["Sforce-Query-Options"] = "batchSize=200"
    first = sf.query("SELECT Id, Nue_Event_Key__c FROM Nue_Billing_Event__c ORDER BY Nue_Event_Key__c")
    assert first["done"] is False and first["totalSize"] == 450 and len(first["records"]) == 200
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    everything = sf.query_all("SELECT Id, Nue_Event_Key__c FROM Nue_Billing_Event__c ORDER BY Nue_Event_Key__c")
    keys = [r["Nue_Event_Key__c"] for r in everything["records"]]
    assert keys == [f"evt-{i:03d}" for i in range(450)]
    assert org.sim.log.count(path_prefix="/services/data/v59.0/query/01g") == 2  # pages 2 and 3 of query_all


def test_create_update_get_and_api_usage(org: Running) -> None:
    sf = jwt_client(org)
    opportunity = sf.Opportunity  # each attribute access makes a new SFType with its own api_usage
    account = org.sim.seed_data.accounts[0].id
    created = opportunity.create({"Name": "Expansion", "StageName": "Prospecting", "CloseDate": "2026-12-31",
                                  "AccountId": account})
    assert created["success"] is True and created["id"].startswith("006") and len(created["id"]) == 18
    assert opportunity.update(created["id"], {"StageName": "Closed Won", "Nue_Order_Id__c": "ORD-1"}) == 204
    got = opportunity.get(created["id"])
    assert (got["IsWon"], got["IsClosed"], got["Probability"]) == (True, True, 100.0)
    assert got["SystemModstamp"].endswith("+0000") and got["LastModifiedDate"] >= got["CreatedDate"]
    assert opportunity.api_usage["api-usage"] == (3, 15000)
    sf.query("SELECT Id FROM Opportunity LIMIT 1")
    assert sf.api_usage["api-usage"].used == org.sim.api_usage == 4


def test_upsert_creates_then_updates(org: Running) -> None:
    sf = jwt_client(org)
    assert sf.Account.upsert("Nue_Customer_Id__c/CUST-9", {"Name": "Nine Inc"}) == 201
    assert sf.Account.upsert("Nue_Customer_Id__c/CUST-9", {"MRR__c": 900}) == 200
    record = sf.Account.get_by_custom_id("Nue_Customer_Id__c", "CUST-9")
    assert (record["Name"], record["MRR__c"]) == ("Nine Inc", 900.0)
    assert len([a for a in org.sim.records("Account") if a["Nue_Customer_Id__c"] == "CUST-9"]) == 1


def test_upsert_with_duplicate_external_ids_is_300(org: Running) -> None:
    sf = jwt_client(org)
    opportunities = org.sim.seed_data.opportunities
    for opp in opportunities[:2]:
        sf.Opportunity.update(opp.id, {"Nue_Order_Id__c": "ORD-DUP"})
    with pytest.raises(SalesforceMoreThanOneRecord) as raised:
        sf.Opportunity.upsert("Nue_Order_Id__c/ORD-DUP", {"Name": "x"})
    assert raised.value.status == 300
    assert sorted(u.rsplit("/", 1)[1] for u in raised.value.content) == sorted(o.id for o in opportunities[:2])
    with pytest.raises(SalesforceResourceNotFound):
        sf.Opportunity.upsert("No_Such_Field__c/1", {"Name": "x"})


def test_expired_token_triggers_relogin(org: Running) -> None:
    sf = jwt_client(org)
    first_token = sf.session_id
    sf.query("SELECT Id FROM User")
    CLOCK.now += 3601  # past token_lifetime_seconds
    result = sf.query("SELECT Id FROM User")
    assert result["totalSize"] == 3
    assert sf.session_id != first_token
    assert org.sim.log.count(path_prefix="/services/data", status=401) == 1
    assert org.sim.log.count(path_prefix="/services/oauth2/token", status=200) == 2
