"""Faults after the request is applied: the record is created, but the answer is lost, a 5xx or late."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sf_fixtures import Running, running

from revdaemon.sandbox.salesforce import FaultSettings, SalesforceSimSettings


def accounts_named(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    """A read over the API, as a client would make after losing the answer."""
    response = api.get("/query", params={"q": f"SELECT Id, Name FROM Account WHERE Name = '{name}'"})
    assert response.status_code == 200, response.text
    return list(response.json()["records"])


def fired(org: Running) -> dict[str, int]:
    response = org.http.get("/__sandbox/faults/fired")
    assert response.status_code == 200
    return dict(response.json())


def logged_faults(org: Running) -> list[str | None]:
    return [entry["fault"] for entry in org.http.get("/__sandbox/requests").json()]


def test_applied_then_dropped(org: Running, api: httpx.Client) -> None:
    """The create commits, the client sees the connection close without an answer, the count says so."""
    assert org.http.post("/__sandbox/faults", json={"applied_drop_next": 1}).status_code == 200
    with pytest.raises(httpx.TransportError):
        api.post("/sobjects/Account", json={"Name": "Dropped Answer Ltd"})
    assert len(accounts_named(api, "Dropped Answer Ltd")) == 1
    assert fired(org) == {"applied_drop": 1, "applied_503": 0, "applied_504": 0, "applied_slow": 0}
    assert logged_faults(org) == [None, "applied_drop", None]  # token, the create, the read
    assert org.http.get("/__sandbox/faults").json()["applied_drop_next"] == 0


@pytest.mark.parametrize(("status", "setting"), [(503, "applied_503_next"), (504, "applied_504_next")])
def test_applied_then_5xx(org: Running, api: httpx.Client, status: int, setting: str) -> None:
    """The create commits, the client gets a 5xx body instead of its 201, the count says so."""
    org.http.post("/__sandbox/faults", json={setting: 1})
    response = api.post("/sobjects/Account", json={"Name": "Failed Answer Ltd"})
    assert response.status_code == status
    if status == 503:
        assert response.json() == [{"message": "Server unavailable, please try again later.",
                                    "errorCode": "SERVER_UNAVAILABLE"}]
    else:
        assert response.headers["content-type"].startswith("text/html")
    assert len(accounts_named(api, "Failed Answer Ltd")) == 1
    assert fired(org)[f"applied_{status}"] == 1
    assert org.sim.log.count(fault=f"applied_{status}", status=status) == 1
    # The counter is spent: the next create answers normally.
    assert api.post("/sobjects/Account", json={"Name": "Answered Ltd"}).status_code == 201


def test_applied_slowly(org: Running) -> None:
    """The record is readable at once while the answer waits; a client with a shorter timeout gives up."""
    org.sim.set_faults(applied_slow_next=1, applied_slow_seconds=1.0)
    token = org.token()
    with org.api(token) as api, httpx.Client(base_url=api.base_url, headers=api.headers, timeout=0.3) as hasty:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            hasty.post("/sobjects/Account", json={"Name": "Slow Answer Ltd"})
        assert len(accounts_named(api, "Slow Answer Ltd")) == 1
        assert time.monotonic() - started < 1.0  # read while the answer was still held
        assert fired(org)["applied_slow"] == 1
        org.sim.set_faults(applied_slow_next=1, applied_slow_seconds=0.3)
        patient = api.post("/sobjects/Account", json={"Name": "Patient Ltd"})
        assert patient.status_code == 201 and patient.json()["success"] is True
    deadline = time.monotonic() + 5
    while logged_faults(org).count("applied_slow") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the abandoned answer is logged when it leaves
    assert logged_faults(org).count("applied_slow") == 2
    assert fired(org)["applied_slow"] == 2


def test_only_applied_targeted_writes_are_hit(org: Running, api: httpx.Client) -> None:
    """Reads, refused writes and writes outside applied_paths pass; a collection create is hit."""
    org.sim.set_faults(applied_503_rate=1.0, applied_paths=["POST /composite/sobjects"])
    assert api.get("/limits").status_code == 200
    assert api.post("/sobjects/Account", json={"Name": "Single Create Ltd"}).status_code == 201
    malformed = api.post("/composite/sobjects", content=b"{", headers={"content-type": "application/json"})
    assert malformed.status_code == 400  # not applied: no fault
    created = api.post("/composite/sobjects", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Account"}, "Name": "Collection Ltd"}]})
    assert created.status_code == 503
    assert len(accounts_named(api, "Collection Ltd")) == 1
    assert fired(org)["applied_503"] == 1
    org.sim.set_faults(applied_503_rate=0.0, applied_paths=[], applied_504_next=1, applied_writes_only=False)
    assert api.get("/limits").status_code == 504  # writes_only off: a read can lose its answer too
    assert org.http.get("/__sandbox/faults").json()["applied_paths"] == []


def test_a_refused_write_does_not_spend_a_counter(org: Running, api: httpx.Client) -> None:
    org.sim.set_faults(applied_drop_next=1)
    refused = api.post("/sobjects/Account", json={"Phone": "1"})
    assert refused.status_code == 400
    assert fired(org)["applied_drop"] == 0
    with pytest.raises(httpx.TransportError):
        api.post("/sobjects/Account", json={"Name": "Second Try Ltd"})
    assert fired(org)["applied_drop"] == 1


def test_rates_are_deterministic_per_seed_and_reset_clears_counts() -> None:
    def pattern() -> list[int]:
        faults = FaultSettings(applied_503_rate=0.3, applied_504_rate=0.2, seed=7)
        with running(SalesforceSimSettings(faults=faults)) as org, org.api() as api:
            statuses = [api.post("/sobjects/Account", json={"Name": f"Lost Answer {i}"}).status_code
                        for i in range(24)]
            query = "SELECT Id FROM Account WHERE Name LIKE 'Lost Answer %'"
            assert len(api.get("/query", params={"q": query}).json()["records"]) == 24  # all applied
            counts = fired(org)
            assert counts["applied_503"] == statuses.count(503) and counts["applied_504"] == statuses.count(504)
            org.http.post("/__sandbox/reset")
            assert set(fired(org).values()) == {0}
            return statuses

    first = pattern()
    assert first == pattern()
    assert {201, 503, 504} == set(first)


def test_settings_are_validated(org: Running) -> None:
    assert org.http.post("/__sandbox/faults", json={"applied_503_rate": 0.7,
                                                    "applied_slow_rate": 0.7}).status_code == 400
    assert org.http.post("/__sandbox/faults", json={"applied_paths": ["composite"]}).status_code == 400
    assert org.http.get("/__sandbox/faults").json()["applied_503_rate"] == 0.0
