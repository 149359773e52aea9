"""Late commits through the admin API: a change whose timestamp is minutes older than its commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from nue_fixtures import running as running_nue
from sf_fixtures import running as running_sf


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("+0000", "+00:00").replace("Z", "+00:00"))


def test_salesforce_commit_late_stamps_the_past() -> None:
    """POST /__sandbox/scenario/commit-late: the edit is visible now, its SystemModstamp minutes old."""
    with running_sf() as org:
        opportunity = org.sim.seed_data.opportunities[0]
        response = org.http.post("/__sandbox/scenario/commit-late", json={
            "sobject": "Opportunity", "id": opportunity.id, "fields": {"StageName": "Closed Won"},
            "minutes_ago": 7})
        assert response.status_code == 200
        record = response.json()
        assert record["IsWon"] is True and record["LastModifiedById"] == org.sim.sales_rep_id
        age = datetime.now(UTC) - _at(record["SystemModstamp"])
        assert timedelta(minutes=6) < age < timedelta(minutes=8)


def test_nue_commit_late_stamps_the_past_without_a_webhook() -> None:
    """POST /__sandbox/scenario/commit-late: fields and an old lastModifiedDate (or an exact one), no webhook."""
    with running_nue() as nue:
        admin = nue.url + "/__sandbox"
        customer = httpx.post(f"{admin}/scenario/create-customer", json={"account": 0}).json()["result"]
        late = httpx.post(f"{admin}/scenario/commit-late", json={
            "kind": "Customer", "record_id": customer["id"], "minutes_ago": 7, "phone": "+1-555-0000"}).json()
        age = datetime.now(UTC) - _at(late["result"]["lastModifiedDate"])
        assert timedelta(minutes=6) < age < timedelta(minutes=8) and late["result"]["phone"] == "+1-555-0000"
        exact = httpx.post(f"{admin}/scenario/commit-late", json={
            "kind": "Customer", "record_id": customer["id"], "at": "2026-01-01T00:00:00.000Z"}).json()
        assert exact["result"]["lastModifiedDate"] == "2026-01-01T00:00:00.000Z"
        httpx.post(f"{admin}/webhooks/flush")
        published = [p["type"] for p in httpx.get(f"{admin}/webhooks").json()["published"]]
        assert "customer.updated" not in published
        assert httpx.post(f"{admin}/scenario/commit-late", json={"kind": "Widget", "record_id": "x"}).status_code == 422
