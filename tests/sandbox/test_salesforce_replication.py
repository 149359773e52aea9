"""getUpdated / getDeleted through real HTTP (salesforce-api.md §4.2): latestDateCovered is the latest time the
call actually covered, at most the requested end and never a moment that has not happened yet."""

from __future__ import annotations

from datetime import UTC, datetime

from sf_fixtures import FakeClock, keypair, running

from revdaemon.sandbox.salesforce import SalesforceSimSettings

NOW = 1_780_000_000.0 + 37  # 37 s into a minute
NOW_MINUTE = datetime.fromtimestamp(NOW, UTC).replace(second=0)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _wire(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def test_latest_date_covered_never_passes_now() -> None:
    clock = FakeClock(NOW)
    settings = SalesforceSimSettings(jwt_public_key_pem=keypair()[1], clock=clock)
    with running(settings) as org, org.api() as api:
        account = org.sim.seed_data.accounts[0]
        clock.now = NOW - 600  # an edit ten minutes ago: inside every window below
        assert api.patch(f"/sobjects/Account/{account.id}", json={"Phone": "+1-555-0101"}).status_code == 204
        clock.now = NOW
        params = {"start": _iso(NOW - 3600), "end": _iso(NOW + 3600)}  # the end is an hour in the future

        updated = api.get("/sobjects/Account/updated/", params=params)
        assert updated.status_code == 200
        body = updated.json()
        assert body["latestDateCovered"] == _wire(NOW_MINUTE)  # the current minute, not the requested end
        assert account.id in body["ids"]
        deleted = api.get("/sobjects/Account/deleted/", params=params).json()
        assert deleted["latestDateCovered"] == _wire(NOW_MINUTE)

        # An end in the past is covered in full: latestDateCovered is that end (seconds ignored).
        past = api.get("/sobjects/Account/updated/", params={"start": _iso(NOW - 3600), "end": _iso(NOW - 120)})
        assert past.json()["latestDateCovered"] == _wire(datetime.fromtimestamp(NOW - 120, UTC).replace(second=0))


def test_an_edit_in_the_running_minute_is_left_to_the_next_call() -> None:
    """A change after latestDateCovered is not reported yet; the next call from latestDateCovered finds it."""
    clock = FakeClock(NOW)
    settings = SalesforceSimSettings(jwt_public_key_pem=keypair()[1], clock=clock)
    with running(settings) as org, org.api() as api:
        account = org.sim.seed_data.accounts[0]
        assert api.patch(f"/sobjects/Account/{account.id}", json={"Phone": "+1-555-0102"}).status_code == 204
        first = api.get("/sobjects/Account/updated/", params={"start": _iso(NOW - 3600), "end": _iso(NOW + 3600)})
        covered = first.json()["latestDateCovered"]
        assert account.id not in first.json()["ids"]
        clock.now = NOW + 60
        following = api.get("/sobjects/Account/updated/",
                            params={"start": covered.replace("+0000", "+00:00"), "end": _iso(NOW + 7200)})
        assert account.id in following.json()["ids"]
