"""The Nue client against respx, with shapes from ../shared/design/nue-api.md."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from revdaemon.config import ApiRate, NueSettings
from revdaemon.connectors import nue_wire as wire
from revdaemon.connectors.nue import NueClient
from revdaemon.errors import AuthFailed, OutcomeUnknown, Permanent, Throttled

pytestmark = pytest.mark.anyio

BASE = "https://api.nue.test"


def ok(data: object, **extra: object) -> dict[str, object]:
    return {"status": "success", "data": data, "warnings": [], **extra}


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(sleeps: Sleeps) -> AsyncIterator[NueClient]:
    from revdaemon.limits import ApiLimiter, RetryPolicy

    async with httpx.AsyncClient() as http:
        yield NueClient(NueSettings(base_url=BASE, api_key="key-123"), http,
                        limiter=ApiLimiter(ApiRate(requests_per_second=1000, burst=1000)),
                        retry=RetryPolicy(max_attempts=3), rng=random.Random(2), sleep=sleeps)


class TestTransport:
    @respx.mock
    async def test_api_key_header_and_envelope(self, client: NueClient) -> None:
        """Transport: the key goes in nue-api-key; data is unwrapped and warnings are logged."""
        route = respx.get(f"{BASE}/customers/001A").respond(200, json={
            "status": "success", "data": [{"id": "c-1", "externalId": "001A"}], "warnings": ["partial"]})
        with capture_logs() as logs:
            customer = await client.find_customer("001A")
        assert customer == {"id": "c-1", "externalId": "001A"}
        assert route.calls[0].request.headers["nue-api-key"] == "key-123"
        assert {"event": "nue_warning", "warning": "partial"}.items() <= logs[0].items()

    @respx.mock
    async def test_unknown_customer_is_none(self, client: NueClient) -> None:
        """Lookup before create: a 404 means no such customer, not an error."""
        respx.get(f"{BASE}/customers/001Z").respond(404, json={"status": "failure", "message": "Not found",
                                                                "errorCode": "NOT_FOUND", "errorId": "e1"})
        assert await client.find_customer("001Z") is None

    @respx.mock
    async def test_html_502_is_a_typed_retryable_error(self, client: NueClient, sleeps: Sleeps) -> None:
        """Errors [assumed]: an HTML gateway page still becomes an error with its status, and is retried."""
        route = respx.get(f"{BASE}/catalog/products")
        route.side_effect = [httpx.Response(502, text="<html><body>Bad Gateway</body></html>"),
                             httpx.Response(200, json=ok([{"id": "01tA", "sku": "X"}]))]
        assert await client.products() == [{"id": "01tA", "sku": "X"}]
        assert route.call_count == 2 and len(sleeps.calls) == 1

    @respx.mock
    async def test_message_only_body_is_permanent(self, client: NueClient) -> None:
        """A 422 with only a message keeps the message."""
        respx.post(f"{BASE}/orders").respond(422, json={"message": "effectiveDate is required"})
        with pytest.raises(Permanent, match="effectiveDate is required") as exc:
            await client.create_order({"customer": {"id": "c-1"}})
        assert exc.value.context.status == 422

    @respx.mock
    async def test_bad_key_is_auth_failed(self, client: NueClient) -> None:
        """A 401 cannot be fixed by retrying: the key is wrong."""
        respx.get(f"{BASE}/catalog/products").respond(401, json={"status": "failure", "message": "Unauthorized"})
        with pytest.raises(AuthFailed):
            await client.products()

    @respx.mock
    async def test_429_waits_retry_after(self, client: NueClient, sleeps: Sleeps) -> None:
        """Rate limits [assumed]: 429 with Retry-After is honoured."""
        route = respx.get(f"{BASE}/catalog/products")
        route.side_effect = [httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow down"}),
                             httpx.Response(200, json=ok([]))]
        await client.products()
        assert sleeps.calls == [3.0]

    @respx.mock
    async def test_429_exhausted_raises_throttled(self, client: NueClient) -> None:
        """Retries are bounded: after the last attempt the throttle error is raised."""
        respx.get(f"{BASE}/catalog/products").respond(429, headers={"Retry-After": "1"}, json={"message": "x"})
        with pytest.raises(Throttled):
            await client.products()

    @respx.mock
    async def test_create_is_not_repeated_after_a_500(self, client: NueClient) -> None:
        """No idempotency header: a create that may have applied is raised, for the lookup to settle."""
        route = respx.post(f"{BASE}/orders").respond(500, json={"status": "failure", "message": "oops"})
        with pytest.raises(OutcomeUnknown):
            await client.create_order({"customer": {"id": "c-1"}})
        assert route.call_count == 1

    @respx.mock
    async def test_an_unreadable_create_answer_is_an_unknown_outcome(self, client: NueClient) -> None:
        """A 200 without the order, or fewer customers than asked: applied or not, nobody knows (no crash)."""
        respx.post(f"{BASE}/orders").respond(200, json=ok({"unexpected": True}))
        with pytest.raises(OutcomeUnknown):
            await client.create_order({"customer": {"id": "c-1"}})
        respx.post(f"{BASE}/customers").respond(200, json=ok([{"id": "c-1", "name": "a"}]))
        with pytest.raises(OutcomeUnknown):
            await client.create_customers([{"name": "a", "recordType": "Business"},
                                           {"name": "b", "recordType": "Business"}])

    @respx.mock
    async def test_a_create_refused_before_handling_is_repeated(self, client: NueClient) -> None:
        """A 429 changed nothing: even a create is sent again (after Retry-After)."""
        route = respx.post(f"{BASE}/orders")
        route.side_effect = [httpx.Response(429, headers={"Retry-After": "0"}, json={"message": "slow down"}),
                             httpx.Response(200, json=ok({"order": {"id": "o-1", "orderNumber": "O-1"}}))]
        assert (await client.create_order({"customer": {"id": "c-1"}}))["id"] == "o-1"
        assert route.call_count == 2


class TestResources:
    @respx.mock
    async def test_customers_are_created_as_one_array(self, client: NueClient) -> None:
        """Customer: POST /customers takes an array of up to 200; more is refused before sending."""
        def create(request: httpx.Request) -> httpx.Response:
            batch = json.loads(request.content)
            return httpx.Response(200, json=ok([{"id": f"c-{c['name']}", **c} for c in batch]))

        route = respx.post(f"{BASE}/customers").mock(side_effect=create)
        created = await client.create_customers([{"name": str(i), "recordType": "Business"} for i in range(200)])
        assert route.call_count == 1 and created[199]["id"] == "c-199"
        with pytest.raises(ValueError, match="1 to 200"):
            await client.create_customers([{"name": "x", "recordType": "Business"}] * 201)

    @respx.mock
    async def test_orders_of_many_customers_batch_by_url_length(self, client: NueClient) -> None:
        """Reads by customerIds cost one call per URL-sized batch, and every customer is asked for once."""
        route = respx.get(f"{BASE}/orders").respond(200, json=ok([]))
        ids = [f"0015g00000{i:05d}AAA" for i in range(1000)]
        await client.list_orders(ids + ids[:10])
        asked = [json.loads(parse_qs(urlsplit(str(c.request.url)).query)["customerIds"][0]) for c in route.calls]
        assert sorted(i for batch in asked for i in batch) == sorted(ids)
        assert 1 < route.call_count < 10
        assert all(len(str(c.request.url)) < 8192 for c in route.calls)

    @respx.mock
    async def test_order_found_by_opportunity_marker(self, client: NueClient) -> None:
        """Order lookup before create [assumed design]: the marker in the description identifies it."""
        respx.get(f"{BASE}/orders").respond(200, json=ok([
            {"id": "o-1", "description": "other"},
            {"id": "o-2", "description": f"Won deal {wire.order_marker('006A')}"},
        ]))
        found = await client.find_order_for_opportunity("c-1", "006A")
        assert found is not None and found["id"] == "o-2"
        assert await client.find_order_for_opportunity("c-1", "006B") is None

    @respx.mock
    async def test_order_found_by_nues_own_links(self, client: NueClient) -> None:
        """Orders revdaemon did not make [assumed]: by opportunityId, by the id the opportunity shows, and by
        quoteId through the opportunity's quotes (read only when nothing else matched); live before canceled."""
        respx.get(f"{BASE}/orders").respond(200, json=ok([
            {"id": "o-1", "status": "Canceled", "opportunityId": "006A"},
            {"id": "o-2", "status": "Activated", "opportunityId": "006A"},
            {"id": "o-3", "status": "Activated", "quoteId": "q-9"},
            {"id": "o-4", "status": "Draft"},
        ]))
        quotes = respx.post(f"{BASE}/async/graphql").respond(200, json={"data": {"Quote": [
            {"id": "q-9", "opportunityId": "006Q"}]}})
        assert (await client.find_order_for_opportunity("c-1", "006A"))["id"] == "o-2"  # type: ignore[index]
        assert quotes.call_count == 0
        assert (await client.find_order_for_opportunity("c-1", "006X", order_id="o-4"))["id"] == "o-4"  # type: ignore[index]
        assert (await client.find_order_for_opportunity("c-1", "006Q"))["id"] == "o-3"  # type: ignore[index]
        assert quotes.call_count == 1
        assert await client.find_order_for_opportunity("c-1", "006Z", quote_ids=["q-1"]) is None
        assert quotes.call_count == 1

    @respx.mock
    async def test_create_and_activate_order(self, client: NueClient) -> None:
        """Order: create answers data.order; activation answers data.order and data.assets."""
        respx.post(f"{BASE}/orders").respond(200, json=ok({"order": {"id": "o-1", "status": "Draft"}}))
        activate = respx.post(f"{BASE}/orders/o-1").respond(200, json=ok({
            "order": {"id": "o-1", "orderNumber": "O-00000300", "status": "Activated"},
            "assets": [{"name": "SUB-00000309"}]}))
        order = await client.create_order({"customer": {"id": "c-1"}})
        activated, assets = await client.activate_order(order["id"])
        assert activated["orderNumber"] == "O-00000300" and assets == [{"name": "SUB-00000309"}]
        assert json.loads(activate.calls[0].request.content) == {
            "options": {"generateInvoice": True, "activateInvoice": True}}

    @respx.mock
    async def test_invoices_page_until_total(self, client: NueClient) -> None:
        """Invoice: page is 1-based, limit <= 500, pagination.total ends the walk."""
        def page(request: httpx.Request) -> httpx.Response:
            number, limit = int(request.url.params["page"]), int(request.url.params["limit"])
            rows = [{"id": f"inv-{i}"} for i in range((number - 1) * limit, min(number * limit, 5))]
            return httpx.Response(200, json=ok(rows, pagination={"total": 5, "page": number}))

        route = respx.get(f"{BASE}/invoices").mock(side_effect=page)
        invoices = [i async for i in client.iter_invoices({"paymentStatus": "Paid"}, page_size=2)]
        assert [i["id"] for i in invoices] == [f"inv-{i}" for i in range(5)]
        assert route.call_count == 3
        assert route.calls[0].request.url.params["paymentStatus"] == "Paid"

    @respx.mock
    async def test_get_quote_unwraps_data_quote(self, client: NueClient) -> None:
        """Quote: GET /cpq/quotes/{id} answers data.quote; the client returns the quote itself."""
        respx.get(f"{BASE}/cpq/quotes/q-1").respond(200, json=ok({"quote": {"id": "q-1", "quoteVersion": 2}}))
        assert await client.get_quote("q-1") == {"id": "q-1", "quoteVersion": 2}

    @respx.mock
    async def test_credit_memos_page_like_invoices(self, client: NueClient) -> None:
        """Credit memos use the same page/limit walk; a short page ends it."""
        route = respx.get(f"{BASE}/credit-memos")
        route.side_effect = [httpx.Response(200, json=ok([{"id": "cm-1"}, {"id": "cm-2"}])),
                             httpx.Response(200, json=ok([{"id": "cm-3"}]))]
        memos = [m async for m in client.iter_credit_memos(page_size=2)]
        assert [m["id"] for m in memos] == ["cm-1", "cm-2", "cm-3"]
        assert [c.request.url.params["page"] for c in route.calls] == ["1", "2"]

    @respx.mock
    async def test_graphql_poll_pages_by_keyset(self, client: NueClient) -> None:
        """Polling [assumed]: where lastModifiedDate _gte, ordered by (lastModifiedDate, id); each next page is
        the keyset after the last row (never an offset), so a run of equal times is walked by id."""
        queries: list[str] = []
        rows = [{"id": f"s-{i}", "lastModifiedDate": "2026-01-01T00:00:00.000Z"} for i in range(5)]

        def graphql(request: httpx.Request) -> httpx.Response:
            query = json.loads(request.content)["query"]
            queries.append(query)
            after = query.split('id: {_gt: "')[1].split('"')[0] if "_or" in query else ""
            return httpx.Response(200, json={"data": {"Subscription": [r for r in rows if r["id"] > after][:2]}})

        respx.post(f"{BASE}/async/graphql").mock(side_effect=graphql)
        read = [r async for r in client.poll("Subscription", ["status"], since="2026-01-01T00:00:00Z", page_size=2)]
        assert [r["id"] for r in read] == ["s-0", "s-1", "s-2", "s-3", "s-4"]
        assert 'lastModifiedDate: {_gte: "2026-01-01T00:00:00Z"}' in queries[0]
        assert all("order_by: {lastModifiedDate: asc, id: asc}" in q and "offset" not in q for q in queries)
        assert ('where: {_or: [{lastModifiedDate: {_gt: "2026-01-01T00:00:00.000Z"}}, '
                '{lastModifiedDate: {_eq: "2026-01-01T00:00:00.000Z"}, id: {_gt: "s-1"}}]}') in queries[1]

    @respx.mock
    async def test_graphql_errors_are_permanent(self, client: NueClient) -> None:
        """A query Nue rejects is reported, not looped on."""
        respx.post(f"{BASE}/async/graphql").respond(200, json={"errors": [{"message": "Cannot query field x"}]})
        with pytest.raises(Permanent, match="Cannot query field x"):
            [r async for r in client.poll("Subscription", ["x"], since=None)]
