"""The Salesforce client against respx, with bodies quoted from ../shared/design/salesforce-api.md."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import anyio
import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from revdaemon.config import ApiRate, SalesforceAuth, SalesforceSettings
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.errors import AuthFailed, Conflict, Permanent, RequestLimitExceeded, Retryable, Throttled
from revdaemon.limits import ApiLimiter, DailyBudget, Priority, RetryPolicy

pytestmark = pytest.mark.anyio

LOGIN = "https://login.salesforce.com"
INSTANCE = "https://acme.my.salesforce.com"
DATA = f"{INSTANCE}/services/data/v62.0"
TOKEN_BODY = {"access_token": "00D!tok1", "instance_url": INSTANCE, "id": f"{LOGIN}/id/00D/005",
              "token_type": "Bearer", "issued_at": "1708058728442", "scope": "api"}
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]  # §1.6
LIMIT_EXCEEDED = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]  # §3.4
CONCURRENT_EXCEEDED = [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                        "errorCode": "REQUEST_LIMIT_EXCEEDED"}]  # §3.4


def settings(**overrides: object) -> SalesforceSettings:
    base: dict[str, object] = {"login_url": LOGIN, "auth": SalesforceAuth.CLIENT_CREDENTIALS, "client_id": "ck",
                               "client_secret": "cs"}
    base.update(overrides)
    return SalesforceSettings.model_validate(base)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_client(http: httpx.AsyncClient, sleeps: Sleeps, *, share: float = 0.5,
                sf: SalesforceSettings | None = None) -> SalesforceClient:
    return SalesforceClient(sf or settings(), http, limiter=ApiLimiter(ApiRate(requests_per_second=1000, burst=1000)),
                            budget=DailyBudget(share=share), retry=RetryPolicy(max_attempts=4),
                            rng=random.Random(1), sleep=sleeps)


def usage(used: int, total: int = 15000) -> dict[str, str]:
    return {"Sforce-Limit-Info": f"api-usage={used}/{total}"}


class TestAuth:
    @respx.mock
    async def test_client_credentials_login_once_then_cached(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§1.3: the token is requested once and reused for later calls."""
        token = respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        respx.get(f"{DATA}/limits").respond(200, json={"DailyApiRequests": {"Max": 15000, "Remaining": 14990}},
                                            headers=usage(10))
        client = make_client(http, sleeps)
        await client.limits()
        await client.limits()
        assert token.call_count == 1
        form = parse_qs(token.calls[0].request.content.decode())
        assert form == {"grant_type": ["client_credentials"], "client_id": ["ck"], "client_secret": ["cs"]}
        assert client.budget.used == 10 and client.budget.total == 15000

    @respx.mock
    async def test_jwt_assertion_is_rs256_with_the_right_claims(self, http: httpx.AsyncClient,
                                                                sleeps: Sleeps) -> None:
        """§1.2: iss is the consumer key, sub the username, aud the login host (not My Domain), signed RS256."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        token = respx.post(f"{INSTANCE}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        respx.get(f"{DATA}/limits").respond(200, json={})
        sf = settings(auth=SalesforceAuth.JWT, username="int@acme", private_key=pem, client_secret=None,
                      login_url=INSTANCE)
        await make_client(http, sleeps, sf=sf).limits()
        form = parse_qs(token.calls[0].request.content.decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        claims = jwt.decode(form["assertion"][0], key.public_key(), algorithms=["RS256"], audience=LOGIN)
        assert claims["iss"] == "ck" and claims["sub"] == "int@acme"

    @respx.mock
    async def test_invalid_grant_is_auth_failed(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§1.3: a refused login raises AuthFailed with Salesforce's description, and is not retried."""
        token = respx.post(f"{LOGIN}/services/oauth2/token").respond(
            400, json={"error": "invalid_grant", "error_description": "no client credentials user enabled"})
        with pytest.raises(AuthFailed, match="no client credentials user enabled"):
            await make_client(http, sleeps).limits()
        assert token.call_count == 1

    @respx.mock
    async def test_expired_session_relogs_once_for_concurrent_callers(self, http: httpx.AsyncClient,
                                                                      sleeps: Sleeps) -> None:
        """§1.6: two callers hitting 401 share one re-login and each retries once."""
        token = respx.post(f"{LOGIN}/services/oauth2/token")
        token.side_effect = [httpx.Response(200, json=TOKEN_BODY),
                             httpx.Response(200, json={**TOKEN_BODY, "access_token": "00D!tok2"})]

        def limits(request: httpx.Request) -> httpx.Response:
            if request.headers["Authorization"] == "Bearer 00D!tok1":
                return httpx.Response(401, json=INVALID_SESSION)
            return httpx.Response(200, json={"ok": True})

        route = respx.get(f"{DATA}/limits").mock(side_effect=limits)
        client = make_client(http, sleeps)
        await client.auth.token()
        results: list[dict[str, object]] = []

        async def call() -> None:
            results.append(await client.limits())

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            tg.start_soon(call)
        assert results == [{"ok": True}, {"ok": True}]
        assert token.call_count == 2  # the first login, then exactly one refresh
        assert route.call_count == 4

    @respx.mock
    async def test_a_failed_login_is_shared_not_repeated(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """Ten callers waiting on one refused login get its error; the token endpoint is asked once."""
        token = respx.post(f"{LOGIN}/services/oauth2/token").respond(
            400, json={"error": "invalid_grant", "error_description": "authentication failure"})
        client = make_client(http, sleeps)
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await client.limits()
            except AuthFailed as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(call)
        assert len(errors) == 10 and token.call_count == 1

    @respx.mock
    async def test_second_401_raises(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """A session refused again after the re-login is reported, not looped on."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        respx.get(f"{DATA}/limits").respond(401, json=INVALID_SESSION)
        from revdaemon.errors import AuthExpired

        with pytest.raises(AuthExpired):
            await make_client(http, sleeps).limits()


class TestQuery:
    @respx.mock
    async def test_follows_next_records_url(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§2.1: pages are followed until done, attributes are dropped, parents kept."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        first = {"done": False, "totalSize": 3, "nextRecordsUrl": "/services/data/v62.0/query/01gX-2000",
                 "records": [{"attributes": {"type": "Opportunity"}, "Id": "006A",
                              "Account": {"attributes": {"type": "Account"}, "Name": "Acme"}},
                             {"attributes": {"type": "Opportunity"}, "Id": "006B", "Account": None}]}
        second = {"done": True, "totalSize": 3, "records": [{"attributes": {"type": "Opportunity"}, "Id": "006C",
                                                             "Account": None}]}
        query = respx.get(f"{DATA}/query").respond(200, json=first)
        more = respx.get(f"{DATA}/query/01gX-2000").respond(200, json=second)
        records = [r async for r in make_client(http, sleeps).query("SELECT Id, Account.Name FROM Opportunity")]
        assert [r["Id"] for r in records] == ["006A", "006B", "006C"]
        assert records[0]["Account"] == {"Name": "Acme"}
        assert query.calls[0].request.url.params["q"] == "SELECT Id, Account.Name FROM Opportunity"
        assert more.call_count == 1

    @respx.mock
    async def test_malformed_query_is_permanent(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§2.1: MALFORMED_QUERY is a 400 that no retry can fix."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        respx.get(f"{DATA}/query").respond(400, json=[{"message": "unexpected token: FORM",
                                                       "errorCode": "MALFORMED_QUERY"}])
        with pytest.raises(Permanent) as exc:
            [r async for r in make_client(http, sleeps).query("SELECT Id FORM Account")]
        assert exc.value.context.error_code == "MALFORMED_QUERY" and sleeps.calls == []


class TestWrites:
    @respx.mock
    async def test_collections_chunk_by_200_and_map_results_in_order(self, http: httpx.AsyncClient,
                                                                      sleeps: Sleeps) -> None:
        """§2.3: 450 records take 3 calls and each result lines up with its input, errors by statusCode."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)

        def upsert(request: httpx.Request) -> httpx.Response:
            records = json.loads(request.content)["records"]
            assert all(r["attributes"] == {"type": "Account"} for r in records)
            out = []
            for r in records:
                if r["Name"] == "bad":
                    out.append({"id": None, "success": False, "errors": [
                        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Name]",
                         "fields": ["Name"]}]})
                else:
                    out.append({"id": "001" + r["Ext__c"], "success": True, "errors": [], "created": True})
            return httpx.Response(200, json=out)

        route = respx.patch(f"{DATA}/composite/sobjects/Account/Ext__c").mock(side_effect=upsert)
        records = [{"Ext__c": f"{i:04d}", "Name": "bad" if i % 100 == 7 else f"n{i}"} for i in range(450)]
        results = await make_client(http, sleeps).upsert_many("Account", "Ext__c", records)
        assert route.call_count == 3
        assert [len(json.loads(c.request.content)["records"]) for c in route.calls] == [200, 200, 50]
        assert len(results) == 450
        assert results[8].ok and results[8].id == "0010008"
        assert not results[7].ok and results[7].errors[0].code == "REQUIRED_FIELD_MISSING"
        assert sum(not r.ok for r in results) == 5

    @respx.mock
    async def test_upsert_created_and_updated(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§2.2: 201 means created, 200 updated (v46+)."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        route = respx.patch(f"{DATA}/sobjects/Account/Ext__c/a%2Fb")
        route.side_effect = [httpx.Response(201, json={"id": "001X", "success": True, "errors": [], "created": True}),
                             httpx.Response(200, json={"id": "001X", "success": True, "errors": [],
                                                       "created": False})]
        client = make_client(http, sleeps)
        first = await client.upsert("Account", "Ext__c", "a/b", {"Name": "A", "Ext__c": "a/b"})
        second = await client.upsert("Account", "Ext__c", "a/b", {"Name": "A"})
        assert (first.created, second.created) == (True, False)
        assert json.loads(route.calls[0].request.content) == {"Name": "A"}

    @respx.mock
    async def test_several_matches_is_a_conflict(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§2.2: a 300 on upsert goes to the conflict log, not a retry."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        respx.patch(f"{DATA}/sobjects/Account/Ext__c/x").respond(
            300, json=["/services/data/v62.0/sobjects/Account/001A", "/services/data/v62.0/sobjects/Account/001B"])
        with pytest.raises(Conflict):
            await make_client(http, sleeps).upsert("Account", "Ext__c", "x", {"Name": "A"})

    @respx.mock
    async def test_create_is_not_repeated_after_an_ambiguous_failure(self, http: httpx.AsyncClient,
                                                                     sleeps: Sleeps) -> None:
        """A 500 on create may have written the record, so the client raises instead of sending it again."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        route = respx.post(f"{DATA}/sobjects/Task").respond(500, json=[{"message": "boom",
                                                                       "errorCode": "UNKNOWN_EXCEPTION"}])
        with pytest.raises(Retryable):
            await make_client(http, sleeps).create("Task", {"Subject": "x"})
        assert route.call_count == 1

    @respx.mock
    async def test_create_is_repeated_when_it_never_left(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """A connection refused before sending is safe to repeat, even for a create."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        route = respx.post(f"{DATA}/sobjects/Task")
        route.side_effect = [httpx.ConnectError("refused"),
                             httpx.Response(201, json={"id": "00TA", "success": True, "errors": []})]
        assert await make_client(http, sleeps).create("Task", {"Subject": "x"}) == "00TA"
        assert route.call_count == 2 and len(sleeps.calls) == 1

    @respx.mock
    async def test_lock_errors_are_retried_then_succeed(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§2.2: UNABLE_TO_LOCK_ROW is transient; the update goes through on a later attempt."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        locked = httpx.Response(400, json=[{"message": "unable to obtain exclusive access to this record",
                                            "errorCode": "UNABLE_TO_LOCK_ROW"}])
        route = respx.patch(f"{DATA}/sobjects/Account/001A")
        route.side_effect = [locked, httpx.Response(503, json=[{"message": "down", "errorCode":
                                                                "SERVER_UNAVAILABLE"}]), httpx.Response(204)]
        await make_client(http, sleeps).update("Account", "001A", {"MRR__c": 10})
        assert route.call_count == 3 and len(sleeps.calls) == 2


class TestLimits:
    @respx.mock
    async def test_past_the_share_only_realtime_work_is_sent(self, http: httpx.AsyncClient,
                                                             sleeps: Sleeps) -> None:
        """§3.2: at 60% of the allocation with a 50% share, a background query waits; a real-time call goes."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        respx.get(f"{DATA}/limits").respond(200, json={}, headers=usage(9000))
        query = respx.get(f"{DATA}/query").respond(200, json={"done": True, "totalSize": 0, "records": []})
        client = make_client(http, sleeps, share=0.5)
        await client.limits()
        with pytest.raises(Throttled):
            [r async for r in client.query("SELECT Id FROM Account", priority=Priority.BACKGROUND)]
        assert query.call_count == 0
        assert [r async for r in client.query("SELECT Id FROM Account", priority=Priority.REALTIME)] == []

    @respx.mock
    async def test_limit_exceeded_pauses_everything(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """§3.4: REQUEST_LIMIT_EXCEEDED raises its own class and holds back even real-time work."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        route = respx.get(f"{DATA}/limits").respond(403, json=LIMIT_EXCEEDED, headers=usage(15001))
        client = make_client(http, sleeps)
        with pytest.raises(RequestLimitExceeded):
            await client.limits()
        calls_after_first = route.call_count
        with pytest.raises(Throttled):
            await client.limits()
        assert route.call_count == calls_after_first
        assert not client.budget.allows(Priority.REALTIME)

    @respx.mock
    async def test_the_concurrent_limit_waits_a_second_and_pauses_nothing(self, http: httpx.AsyncClient,
                                                                        sleeps: Sleeps) -> None:
        """§3.4: the per-second/concurrent limit is retried after about a second; the daily budget stays open."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        route = respx.get(f"{DATA}/limits")
        route.side_effect = [httpx.Response(403, json=CONCURRENT_EXCEEDED), httpx.Response(200, json={})]
        client = make_client(http, sleeps)
        assert await client.limits() == {}
        assert sleeps.calls == [1.0]
        assert client.budget.allows(Priority.REALTIME) and client.budget.allows(Priority.BACKGROUND)

    @respx.mock
    async def test_retry_after_is_honoured(self, http: httpx.AsyncClient, sleeps: Sleeps) -> None:
        """A 429 with Retry-After waits exactly that long before the next attempt."""
        respx.post(f"{LOGIN}/services/oauth2/token").respond(200, json=TOKEN_BODY)
        route = respx.get(f"{DATA}/limits")
        route.side_effect = [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json={})]
        await make_client(http, sleeps).limits()
        assert sleeps.calls == [7.0]
