"""The two clients against the sandbox simulators over real sockets, faults included."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import httpx
import pytest

from revdaemon.config import ApiRate, NueSettings, SalesforceAuth, SalesforceSettings
from revdaemon.connectors.nue import NueClient
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.errors import Throttled
from revdaemon.limits import ApiLimiter, DailyBudget, Priority, RetryPolicy
from revdaemon.sandbox.runner import Sandbox

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05, max_total=10)


async def no_sleep(seconds: float) -> None:
    """Retry-After from the simulators is seconds long; the tests only count the retries."""


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def salesforce(sandbox: Sandbox, http: httpx.AsyncClient, *, auth: SalesforceAuth = SalesforceAuth.JWT,
               share: float = 0.5) -> SalesforceClient:
    info = sandbox.info()["salesforce"]
    settings = SalesforceSettings(login_url=info["login_url"], auth=auth, client_id=info["consumer_key"],
                                  client_secret=info["consumer_secret"], username=info["username"],
                                  private_key_file=info["private_key_file"])
    return SalesforceClient(settings, http, limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)),
                            budget=DailyBudget(share=share), retry=FAST_RETRY, rng=random.Random(1))


def nue(sandbox: Sandbox, http: httpx.AsyncClient) -> NueClient:
    info = sandbox.info()["nue"]
    return NueClient(NueSettings(base_url=info["url"], api_key=info["api_key"]), http,
                     limiter=ApiLimiter(ApiRate(requests_per_second=500, burst=500)), retry=FAST_RETRY,
                     rng=random.Random(1), sleep=no_sleep)


class TestSalesforce:
    @pytest.mark.parametrize("auth", [SalesforceAuth.JWT, SalesforceAuth.CLIENT_CREDENTIALS])
    async def test_login_and_query_the_seed(self, sandbox: Sandbox, http: httpx.AsyncClient,
                                            auth: SalesforceAuth) -> None:
        """Both server-to-server flows log in, and a query returns the seeded opportunities with parents."""
        client = salesforce(sandbox, http, auth=auth)
        rows = [r async for r in client.query("SELECT Id, Name, Account.Name FROM Opportunity ORDER BY Name")]
        assert len(rows) == len(sandbox.salesforce.seed_data.opportunities)
        assert all(r["Account"]["Name"] for r in rows)
        assert client.budget.used is not None and client.budget.total == 15000

    async def test_10_000_upserts_take_50_calls(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """Collections upsert: 10,000 records in ceil(10000/200) = 50 calls, every result mapped back."""
        client = salesforce(sandbox, http)
        records = [{"Nue_Customer_Id__c": f"cust-{i:05d}", "Name": f"Customer {i}"} for i in range(10_000)]
        sandbox.salesforce.log.clear()
        results = await client.upsert_many("Account", "Nue_Customer_Id__c", records)
        assert len(results) == 10_000 and all(r.ok and r.created for r in results)
        assert sandbox.salesforce.log.count(path_prefix="/services/data/v62.0/composite/sobjects") == 50
        again = await client.upsert_many("Account", "Nue_Customer_Id__c", records[:200])
        assert all(r.ok and r.created is False for r in again)

    async def test_faults_end_in_success(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """503s, lock errors and a dropped connection are retried until the write lands."""
        client = salesforce(sandbox, http)
        [account] = [r async for r in client.query("SELECT Id FROM Account WHERE Name = 'Acme Corp'")]
        sandbox.salesforce.set_faults(unavailable_next=2, lock_row_next=1)
        await client.update("Account", account["Id"], {"MRR__c": 1234.5})
        patches = [e.status for e in sandbox.salesforce.log.entries() if e.method == "PATCH"]
        assert sorted(patches) == [204, 400, 503, 503]
        sandbox.salesforce.set_faults(drop_next=1)
        fetched = await client.get("Account", account["Id"], ["MRR__c"])
        assert fetched["MRR__c"] == 1234.5
        assert sandbox.salesforce.record("Account", account["Id"])["MRR__c"] == 1234.5

    async def test_session_expiry_mid_run_relogs_once(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """After the org expires every session, the next call logs in again once and carries on."""
        client = salesforce(sandbox, http)
        await client.limits()
        sandbox.salesforce.expire_sessions()
        await client.limits()
        await client.limits()
        assert client.auth.logins == 2

    async def test_budget_share_holds_background_work(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """Past the configured share of the allocation, a poll waits while a real-time write goes through."""
        client = salesforce(sandbox, http, share=0.5)
        sandbox.salesforce.set_api_usage(9_000)
        await client.limits()
        with pytest.raises(Throttled):
            [r async for r in client.query("SELECT Id FROM Account", priority=Priority.BACKGROUND)]
        assert [r async for r in client.query("SELECT Id FROM Account LIMIT 1", priority=Priority.REALTIME)]

    async def test_describe_shows_custom_fields(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """Describe lists the custom fields the mapping relies on, and drops a removed one after refresh."""
        client = salesforce(sandbox, http)
        assert "Nue_Order_Id__c" in await client.field_names("Opportunity")
        sandbox.salesforce.remove_field("Opportunity", "Nue_Order_Id__c")
        assert "Nue_Order_Id__c" in await client.field_names("Opportunity")  # cached
        await client.describe("Opportunity", refresh=True)
        assert "Nue_Order_Id__c" not in await client.field_names("Opportunity")


class TestNue:
    async def test_customers_orders_subscriptions(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """Create a customer, find it by its Salesforce id, order, activate, and read its subscriptions."""
        client = nue(sandbox, http)
        seed = sandbox.nue.seed_data
        account = seed.accounts[0]
        assert await client.find_customer(account.id) is None
        created = await client.create_customers([{"name": account.name, "recordType": "Business",
                                                  "salesAccountId": account.id}])
        customer_id = created[0]["id"]
        assert (await client.find_customer(customer_id))["name"] == account.name  # type: ignore[index]
        product = seed.products[0]
        order = await client.create_order({
            "customer": {"id": customer_id}, "effectiveDate": "2026-12-01", "name": "Test order",
            "description": "from the test sfdc-opportunity:006TEST",
            "orderProducts": [{"priceBookEntryId": product.pricebook_entry_id, "quantity": 3,
                               "subscriptionStartDate": "2026-12-01", "subscriptionTerm": 12}],
        })
        assert (await client.find_order_for_opportunity(customer_id, "006TEST"))["id"] == order["id"]  # type: ignore[index]
        activated, _assets = await client.activate_order(order["id"], generate_invoice=True, activate_invoice=True)
        assert activated["status"].lower() == "activated"
        subscriptions = await client.list_subscriptions([customer_id])
        assert [s["quantity"] for s in subscriptions] == [3]
        invoices = [i async for i in client.iter_invoices({"customerId": customer_id}, page_size=1)]
        assert len(invoices) == 1
        polled = [s async for s in client.poll("Subscription", ["status", "quantity"], since=None)]
        assert [s["id"] for s in polled] == [s["id"] for s in subscriptions]

    async def test_429_and_5xx_end_in_success(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """Scripted 429, 502 (an HTML page) and 503 answers are retried and the read succeeds."""
        client = nue(sandbox, http)
        sandbox.nue.faults.script([429, 502, 503])
        products = await client.products()
        assert {p["sku"] for p in products} >= {"PLAT-SUB", "GROW-BNDL"}
        assert sandbox.nue.log.count(path_prefix="/catalog/products") == 4

    async def test_many_customers_cost_few_reads(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        """Subscriptions of 300 customers are read in a handful of calls, not 300."""
        client = nue(sandbox, http)
        created = [c for start in (0, 150) for c in await client.create_customers(
            [{"name": f"C{start + i}", "recordType": "Business"} for i in range(150)])]
        sandbox.nue.log.clear()
        await client.list_subscriptions([c["id"] for c in created])
        assert 1 <= sandbox.nue.log.count(path_prefix="/subscriptions") <= 5
