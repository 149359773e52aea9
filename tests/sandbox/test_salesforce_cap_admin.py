"""The per-second cap and the daily allocation set at run time through /__sandbox/usage (the burst benchmark
sets them after its unmeasured setup), and /__sandbox/reset restoring the configured ones."""

from __future__ import annotations

from sf_fixtures import FakeClock, running

from revdaemon.sandbox.salesforce import SalesforceSimSettings


def test_per_second_cap_set_and_lifted_through_the_admin_endpoint() -> None:
    clock = FakeClock()
    with running(SalesforceSimSettings(clock=clock)) as org, org.api() as api:
        assert org.http.get("/__sandbox/usage").json()["per_second_cap"] is None
        assert [api.get("/limits").status_code for _ in range(3)] == [200, 200, 200]
        answer = org.http.post("/__sandbox/usage", json={"per_second_cap": 2})
        assert answer.status_code == 200 and answer.json()["per_second_cap"] == 2
        assert answer.json()["used"] == 3  # the daily counter is left alone
        clock.now += 1
        refused = [api.get("/limits") for _ in range(3)]
        assert [r.status_code for r in refused] == [200, 200, 403]
        assert refused[2].json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        clock.now += 1
        assert api.get("/limits").status_code == 200
        assert org.http.post("/__sandbox/usage", json={"per_second_cap": None}).json()["per_second_cap"] is None
        assert [api.get("/limits").status_code for _ in range(3)] == [200, 200, 200]


def test_usage_endpoint_refuses_a_bad_cap_and_an_empty_body() -> None:
    with running() as org:
        assert org.http.post("/__sandbox/usage", json={"per_second_cap": 0}).status_code == 400
        assert org.http.post("/__sandbox/usage", json={}).status_code == 400
        assert org.http.post("/__sandbox/usage", json={"used": 5}).json()["used"] == 5
        assert org.http.get("/__sandbox/usage").json()["per_second_cap"] is None


def test_daily_allocation_raised_through_the_admin_endpoint_and_reset_restores_both() -> None:
    with running(SalesforceSimSettings(daily_limit=2)) as org, org.api() as api:
        assert [api.get("/limits").status_code for _ in range(3)] == [200, 200, 403]
        answer = org.http.post("/__sandbox/usage", json={"max": 200_000, "per_second_cap": 50}).json()
        assert answer == {"used": 2, "max": 200_000, "per_second_cap": 50}
        limits = api.get("/limits")
        assert limits.status_code == 200
        assert limits.json()["DailyApiRequests"] == {"Max": 200_000, "Remaining": 199_997}
        org.http.post("/__sandbox/reset")
        assert org.http.get("/__sandbox/usage").json() == {"used": 0, "max": 2, "per_second_cap": None}
