"""The console's pages and actions through an ASGI client, on a real store with known content."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
import structlog
import yaml

from revdaemon import service
from revdaemon.config import Settings, load_settings
from revdaemon.console import app as console_app
from revdaemon.console.app import ConsoleContext, build_console
from revdaemon.console.server import ConsoleServer
from revdaemon.engine.reconcile import repair_event
from revdaemon.ops.logging import configure_logging
from revdaemon.store import Store, open_store
from revdaemon.store.records import NewAuditEntry, NewConflict, NewDeadLetter, NewEvent, utcnow
from revdaemon.store.states import EventStatus

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ana-console-token-0123456789abcdef"
XSS = "<script>alert(1)</script>"


@dataclass
class Console:
    client: httpx.AsyncClient
    store: Store
    settings: Settings
    ids: dict[str, int]


def settings_for(tmp_path: Path, **console: object) -> Settings:
    document = yaml.safe_load((ROOT / "config.yaml").read_text())
    document["state_dir"] = str(tmp_path / "state")
    document["console"] = {"enabled": True, **console}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    admins = json.dumps({"ana": TOKEN, "bo": "bo-console-token-0123456789abcdef"})
    return load_settings(path, environ={"REVDAEMON_CONSOLE__ADMINS": admins, "REVDAEMON_NUE__API_KEY": "k" * 32,
                                        "REVDAEMON_NUE__WEBHOOK_SECRET": "s" * 32})


async def fill(store: Store) -> dict[str, int]:
    """One done event with a write, one dead letter, an open conflict (fields differ) and one named like an
    attack, and a finished reconciliation report."""
    await store.add_events([NewEvent(source="nue_webhook", key=f"nue:k{i}", type="subscription.updated",
                                     payload={"data": {"id": f"sub-{i}", "customerId": "CUST-1"}}) for i in range(4)])
    a, b, c, d = await store.claim_events(worker="w", limit=4, lease=timedelta(minutes=5))
    await store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                           outcome="ok", event_id=a.id, record_ref="salesforce:Account:001AAA",
                                           mapping_version=3, detail={"request": {"fields": {"MRR__c": "10"}}}))
    await store.complete_event(a.id)
    letter = await store.dead_letter_event(b.id, NewDeadLetter(
        system="salesforce", operation="update Account", error="Required fields are missing: [Name]",
        error_code="REQUIRED_FIELD_MISSING", status=400, record_ref="salesforce:Account:001BBB",
        request={"sent": {"kind": "SfUpdate", "target": "salesforce:Account:001BBB",
                          "fields": {"Name": None, "MRR__c": "4564.00"}},
                 "items": [{"code": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Name]",
                            "fields": ["Name"]}]}))
    conflict = await store.conflict_event(c.id, NewConflict(
        flow="subscription_status", record_ref="salesforce:Account:001CCC", reason="edited in Salesforce",
        nue_values={"MRR__c": "100.00", "ARR__c": "1200.00"}, salesforce_values={"MRR__c": 90.0, "ARR__c": 1200.0},
        synced_values={"MRR__c": "80.00", "ARR__c": "1200.00"}))
    hostile = await store.conflict_event(d.id, NewConflict(flow="quote_sync", record_ref=f"salesforce:Opp:{XSS}",
                                                           reason=f"named {XSS}"))
    return {"letter": letter, "conflict": conflict, "hostile": hostile, "conflict_event": c.id}


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    settings = settings_for(tmp_path)
    store = await open_store(settings.database_path)
    ids = await fill(store)
    report = {"generated_at": "2026-11-26T02:00:00+00:00", "tolerance": "0.01",
              "counts": {"in_sync": 1, "salesforce_differs": 1}, "totals": {"USD": {
                  "computed_mrr": "300", "nue_cmrr": "300", "salesforce_mrr": "250"}}, "repairs": [],
              "rows": [{"customer_id": "CUST-1", "customer_name": "Acme", "account_id": "001CCC",
                        "linked_by": "externalId", "drift": "salesforce_differs", "repairable": True,
                        "nue_cmrr": "100", "salesforce_mrr": "50", "reasons": ["MRR differs"]},
                       {"customer_id": "CUST-2", "customer_name": "Globex", "account_id": "001DDD",
                        "linked_by": "externalId", "drift": "in_sync", "repairable": False,
                        "nue_cmrr": "200", "salesforce_mrr": "200", "reasons": []}]}
    report_path = tmp_path / "state" / "reconciliation.json"
    report_path.write_text(json.dumps(report))
    app = build_console(ConsoleContext(store=store, settings=settings, report_path=report_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.7", 5000)),
                                 base_url="http://console.test") as client:
        yield Console(client=client, store=store, settings=settings, ids=ids)
    await store.close()


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in the page"
    return match[1]


async def log_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await client.get("/login")
    return await client.post("/login", data={"token": token, "csrf": hidden(form.text, "csrf"), "next": "/"})


async def csrf_of(client: httpx.AsyncClient, path: str = "/") -> str:
    return hidden((await client.get(path)).text, "csrf")


class TestLogin:
    async def test_pages_need_a_session(self, console: Console) -> None:
        for path in ("/", "/timeline", "/conflicts", "/dead-letters", "/reconciliation", "/conflicts/1"):
            response = await console.client.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
        refused = await console.client.post(f"/conflicts/{console.ids['conflict']}/resolve", data={"take": "nue"})
        assert refused.status_code == 401
        assert len(await console.store.list_conflicts()) == 2

    async def test_right_token_starts_a_strict_session(self, console: Console) -> None:
        response = await log_in(console.client)
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
        page = await console.client.get("/")
        assert page.status_code == 200 and "ana" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")

    async def test_cookie_is_secure_behind_https(self, tmp_path: Path) -> None:
        settings = settings_for(tmp_path, behind_https=True)
        store = await open_store(settings.database_path)
        try:
            app = build_console(ConsoleContext(store=store, settings=settings))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="https://console.test") as client:
                assert "Secure" in (await log_in(client)).headers["set-cookie"]
        finally:
            await store.close()

    async def test_wrong_token_and_missing_login_csrf_are_refused(self, console: Console) -> None:
        response = await log_in(console.client, token="x" * 40)
        assert response.status_code == 401 and "not valid" in response.text
        assert "set-cookie" not in response.headers or "revdaemon_console=" not in response.headers["set-cookie"]
        forged = await console.client.post("/login", data={"token": TOKEN, "csrf": "forged"})
        assert forged.status_code == 403

    async def test_failed_logins_are_rate_limited(self, console: Console) -> None:
        for _ in range(console.settings.console.login_attempts_per_minute):
            assert (await log_in(console.client, token="wrong-token-" * 3)).status_code == 401
        blocked = await log_in(console.client)  # even the right token waits out the window
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0

    async def test_next_never_leaves_the_console(self, console: Console) -> None:
        form = await console.client.get("/login?next=//evil.example/")
        response = await console.client.post("/login", data={"token": TOKEN, "csrf": hidden(form.text, "csrf"),
                                                             "next": "//evil.example/"})
        assert response.headers["location"] == "/"

    async def test_logout_ends_the_session(self, console: Console) -> None:
        await log_in(console.client)
        await console.client.post("/logout", data={"csrf": await csrf_of(console.client)})
        assert (await console.client.get("/")).status_code == 303


class TestPages:
    async def test_overview_shows_queue_chart_budget_and_parked(self, console: Console, tmp_path: Path) -> None:
        await log_in(console.client)
        page = (await console.client.get("/")).text
        assert "Events processed per minute" in page and "<svg" in page and "<rect" in page
        assert re.search(r"Open conflicts</span><span class=\"value\">2<", page)
        assert re.search(r"Dead letters</span><span class=\"value\">1<", page)
        assert "Salesforce" in page and "Nue" in page and "None: every flow is running" in page

    async def test_overview_shows_the_active_replica_and_since_when(self, console: Console) -> None:
        """No replica has led this store yet; once one takes leadership, the overview names it, its epoch and since
        when."""
        await log_in(console.client)
        assert "No replica has led yet" in (await console.client.get("/")).text
        taken = await console.store.try_lead("box-a")
        assert taken is not None
        page = (await console.client.get("/")).text
        assert "box-a" in page and f"leadership epoch {taken.epoch}" in page
        assert taken.since.strftime("%Y-%m-%d %H:%M:%S") in page

    async def test_overview_names_a_parked_flow_and_its_fix(self, console: Console) -> None:
        settings = console.settings
        app = build_console(ConsoleContext(store=console.store, settings=settings,
                                           parked=lambda: {"billing_events": "Nue_Billing_Event__c is missing"}))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c.test") as client:
            await log_in(client)
            page = (await client.get("/")).text
        assert "billing_events" in page and "Nue_Billing_Event__c is missing" in page and "resumes" in page

    async def test_timeline_finds_events_and_writes_by_id(self, console: Console) -> None:
        await log_in(console.client)
        page = (await console.client.get("/timeline", params={"q": "001AAA"})).text
        assert "API result" in page and "salesforce SfUpdate Account" in page
        assert re.search(r'<td class="num">3</td>', page)  # the mapping version the write used
        by_customer = (await console.client.get("/timeline", params={"q": "CUST-1"})).text
        assert by_customer.count("subscription.updated (nue_webhook)") == 4

    async def test_conflict_list_filters_and_detail_marks_differences(self, console: Console) -> None:
        await log_in(console.client)
        listing = (await console.client.get("/conflicts", params={"flow": "subscription_status"})).text
        assert "salesforce:Account:001CCC" in listing and "quote_sync" not in listing.split("<table>")[1]
        detail = (await console.client.get(f"/conflicts/{console.ids['conflict']}")).text
        rows = re.findall(r'<tr class="(differs|)">\s*<td class="mono">(\w+)', detail)
        assert ("differs", "MRR__c") in rows and ("", "ARR__c") in rows
        assert "80.00" in detail and "90.0" in detail and "100.00" in detail

    async def test_dead_letter_shows_the_api_error_verbatim(self, console: Console) -> None:
        await log_in(console.client)
        page = (await console.client.get(f"/dead-letters/{console.ids['letter']}")).text
        assert "REQUIRED_FIELD_MISSING: Required fields are missing: [Name]" in page
        assert "Attempts" in page and "sub-1" in page  # the event's payload
        # What was sent is the record revdaemon wrote, field by field; the API's error items stand apart from it.
        sent = page.split("<h2>What was sent</h2>", 1)[1]
        assert "SfUpdate of" in sent and '<td class="mono">MRR__c</td><td class="mono">4564.00</td>' in sent
        assert "REQUIRED_FIELD_MISSING" not in sent.split("<h2>", 1)[0]
        # Beside the verbatim error, how to fix it; the list says it too.
        fix = page.split("<h2>How to fix it</h2>", 1)[1].split("</p>", 1)[0]
        assert "Account requires Name and revdaemon sent it empty" in fix
        assert "Fix: Account requires Name" in (await console.client.get("/dead-letters")).text

    async def test_dead_letters_filter_by_error_code_and_offer_all_of_one_kind(
            self, console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
        """The list links each error code present with its count; one code's page lists only its letters and
        offers to preview the replay of all of them (the selection's cap applies)."""
        picklist = "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        await console.store.add_events([NewEvent(source="nue_webhook", key=f"nue:p{i}", type="invoice.updated",
                                                 payload={}) for i in range(2)])
        claimed = await console.store.claim_events(worker="w", limit=2, lease=timedelta(minutes=5))
        ids = sorted([await console.store.dead_letter_event(e.id, NewDeadLetter(
            system="salesforce", operation="upsert Nue_Billing_Event__c", error_code=picklist, status=400,
            error="Status: bad value for restricted picklist field: Overdue", record_ref=f"r{e.id}"))
            for e in claimed])
        await log_in(console.client)
        listing = (await console.client.get("/dead-letters")).text
        assert f'href="/dead-letters?code={picklist}">{picklist} (2)</a>' in listing
        assert "REQUIRED_FIELD_MISSING (1)</a>" in listing and "Preview replay of all" not in listing
        one_kind = (await console.client.get("/dead-letters", params={"code": picklist})).text
        table = one_kind.split("<table>", 1)[1]
        assert table.count("bad value for restricted picklist") == 2 and "REQUIRED_FIELD_MISSING" not in table
        bulk = one_kind.split('class="bulk"', 1)[1].split("</form>", 1)[0]
        assert f"Preview replay of all 2 with {picklist}" in bulk
        assert sorted(int(i) for i in re.findall(r'name="id" value="(\d+)"', bulk)) == ids
        monkeypatch.setattr(console_app, "MAX_SELECTION", 1)
        capped = (await console.client.get("/dead-letters", params={"code": picklist})).text
        bulk = capped.split('class="bulk"', 1)[1].split("</form>", 1)[0]
        assert "the newest 1 of 2" in bulk and re.findall(r'name="id" value="(\d+)"', bulk) == [str(ids[-1])]
        nothing = (await console.client.get("/dead-letters", params={"code": "NO_SUCH_CODE"})).text
        assert "No dead letters." in nothing and 'class="bulk"' not in nothing

    async def test_reconciliation_shows_rows_totals_and_selects_repairable(self, console: Console) -> None:
        await log_in(console.client)
        page = (await console.client.get("/reconciliation")).text
        assert "Acme" in page and "Globex" in page and "-50.00" in page
        assert page.count('name="customer"') == 1  # only the repairable row can be selected

    async def test_reconciliation_marks_repairs_since_the_report(self, console: Console, tmp_path: Path) -> None:
        """A customer whose repair wrote the account after the report reads repaired and leaves the drift
        count; one whose repair was dead-lettered links its letter and still counts."""
        report = json.loads((tmp_path / "state" / "reconciliation.json").read_text())
        report["generated_at"] = (utcnow() - timedelta(hours=1)).isoformat()
        report["rows"][1].update(drift="salesforce_differs", currency="USD", nue_cmrr="200.00",
                              salesforce_mrr="150.00")
        report["rows"][0]["currency"] = "USD"
        (tmp_path / "state" / "reconciliation.json").write_text(json.dumps(report))
        await console.store.add_events([repair_event("CUST-1", utcnow().date()),
                                        repair_event("CUST-2", utcnow().date())])
        fixed, failed = await console.store.claim_events(worker="w", limit=2, lease=timedelta(minutes=5))
        await console.store.record_write(NewAuditEntry(system="salesforce", operation="SfUpdate", target="Account",
                                                       outcome="ok", event_id=fixed.id,
                                                       record_ref="salesforce:Account:001CCC"))
        await console.store.complete_event(fixed.id)
        letter = await console.store.dead_letter_event(failed.id, NewDeadLetter(
            system="salesforce", operation="update Account", error="locked", error_code="ENTITY_IS_LOCKED",
            status=400, record_ref="salesforce:Account:001DDD", request={}))
        await log_in(console.client)
        page = (await console.client.get("/reconciliation")).text
        assert "repaired (at " in page and "the report said salesforce_differs" in page
        assert f'<a href="/dead-letters/{letter}">dead letter {letter}</a>' in page
        assert "Drift left: 1 customer(s)" in page and "1 repaired since the report" in page
        assert "USD -50.00 (Salesforce minus Nue)" in page  # Globex's only: Acme's -50 is repaired

    async def test_run_now_needs_the_daemon(self, console: Console) -> None:
        """A console with no daemon behind it offers no run and refuses one with the reason; nothing is audited."""
        await log_in(console.client)
        page = (await console.client.get("/reconciliation")).text
        assert 'action="/reconciliation/run"' not in page and "revdaemon reconcile" in page
        refused = await console.client.post("/reconciliation/run", data={"csrf": hidden(page, "csrf")})
        assert refused.status_code == 409 and "no daemon to run the reconciliation in" in refused.text
        assert not [w for w in await console.store.list_writes(limit=50) if w.system == "operator"]

    async def test_missing_records_are_404(self, console: Console) -> None:
        await log_in(console.client)
        assert (await console.client.get("/conflicts/999")).status_code == 404
        assert (await console.client.get("/dead-letters/999")).status_code == 404


class TestActions:
    async def test_resolve_records_actor_and_audit(self, console: Console) -> None:
        await log_in(console.client)
        conflict_id = console.ids["conflict"]
        csrf = await csrf_of(console.client, f"/conflicts/{conflict_id}")
        response = await console.client.post(f"/conflicts/{conflict_id}/resolve",
                                             data={"take": "nue", "comment": "Nue is the master", "csrf": csrf})
        assert response.status_code == 303
        resolved = await console.store.get_conflict(conflict_id)
        assert resolved is not None and resolved.resolved_by == "ana" and resolved.comment == "Nue is the master"
        assert (await console.store.get_event(console.ids["conflict_event"])).status is EventStatus.RECEIVED  # type: ignore[union-attr]
        [action] = [w for w in await console.store.list_writes(limit=10) if w.system == "operator"]
        assert action.detail["actor"] == "ana" and action.operation == "resolve conflict: take nue"
        followed = await console.client.get(response.headers["location"])
        assert "resolved" in followed.text and "Record decision" not in followed.text

    async def test_the_notice_after_an_action_lives_in_the_session_not_the_link(self, console: Console) -> None:
        """A link with ?flash= shows no notice (anyone could write one); the action's own notice shows once, on the
        page it leads to, and the address carries no text."""
        await log_in(console.client)
        forged = await console.client.get("/dead-letters?flash=Your+session+expired:+log+in+at+evil.example")
        assert "evil.example" not in forged.text and 'class="flash"' not in forged.text
        csrf = await csrf_of(console.client, "/dead-letters")
        done = await console.client.post("/dead-letters/replay", data={"id": str(console.ids["letter"]),
                                                                      "csrf": csrf})
        assert done.status_code == 303 and done.headers["location"] == "/dead-letters"
        shown = await console.client.get(done.headers["location"])
        assert '<p class="flash" role="status">1 dead letter(s) back in the inbox.</p>' in shown.text
        again = await console.client.get("/dead-letters")
        assert 'class="flash"' not in again.text

    async def test_bad_or_missing_csrf_is_refused_and_changes_nothing(self, console: Console) -> None:
        await log_in(console.client)
        conflict_id = console.ids["conflict"]
        for data in ({"take": "nue"}, {"take": "nue", "csrf": "guess"}):
            response = await console.client.post(f"/conflicts/{conflict_id}/resolve", data=data)
            assert response.status_code == 403
        replay = await console.client.post("/dead-letters/replay", data={"id": str(console.ids["letter"])})
        assert replay.status_code == 403
        assert len(await console.store.list_conflicts()) == 2 and len(await console.store.list_dead_letters()) == 1

    async def test_another_sessions_csrf_token_does_not_work(self, console: Console, tmp_path: Path) -> None:
        await log_in(console.client)
        mine = await csrf_of(console.client)
        other = httpx.AsyncClient(transport=console.client._transport, base_url="http://console.test")
        async with other:
            await log_in(other, "bo-console-token-0123456789abcdef")
            refused = await other.post(f"/conflicts/{console.ids['conflict']}/resolve",
                                       data={"take": "skip", "csrf": mine})
        assert refused.status_code == 403

    async def test_replay_needs_a_preview_reader_and_replay_requeues(self, console: Console) -> None:
        await log_in(console.client)
        csrf = await csrf_of(console.client, "/dead-letters")
        preview = await console.client.post("/dead-letters/preview", data={"id": str(console.ids["letter"]),
                                                                          "csrf": csrf})
        assert preview.status_code == 409 and "API clients" in preview.text
        done = await console.client.post("/dead-letters/replay", data={"id": str(console.ids["letter"]),
                                                                      "csrf": csrf})
        assert done.status_code == 303 and await console.store.list_dead_letters() == []
        [action] = [w for w in await console.store.list_writes(limit=10) if w.system == "operator"]
        assert action.detail["actor"] == "ana"

    async def test_an_empty_or_bogus_selection_is_a_clear_error(self, console: Console) -> None:
        await log_in(console.client)
        csrf = await csrf_of(console.client, "/dead-letters")
        empty = await console.client.post("/dead-letters/replay", data={"csrf": csrf})
        assert empty.status_code == 400 and "select at least one" in empty.text
        bogus = await console.client.post("/dead-letters/replay", data={"csrf": csrf, "id": "1; DROP TABLE"})
        assert bogus.status_code == 400 and "not a number" in bogus.text

    async def test_repair_queues_one_event_per_selected_customer(self, console: Console) -> None:
        await log_in(console.client)
        csrf = await csrf_of(console.client, "/reconciliation")
        response = await console.client.post("/reconciliation/repair", data={"customer": "CUST-1", "csrf": csrf})
        assert response.status_code == 303
        [queued] = [e for e in await console.store.list_events(status=EventStatus.RECEIVED) if e.source == "schedule"]
        assert queued.payload["repair"] is True and queued.payload["data"]["customerId"] == "CUST-1"



async def third_conflict(store: Store) -> int:
    """One more open conflict, of the subscription flow, beside the fixture's two."""
    await store.add_events([NewEvent(source="nue_webhook", key="nue:k9", type="subscription.updated",
                                     payload={"data": {"id": "sub-9", "customerId": "CUST-9"}})])
    [event] = await store.claim_events(worker="w", limit=1, lease=timedelta(minutes=5))
    return await store.conflict_event(event.id, NewConflict(flow="subscription_status",
                                                            record_ref="salesforce:Account:001EEE",
                                                            reason="edited in Salesforce"))


def selection_of(page: str) -> list[int]:
    """The conflicts a preview page will resolve: the hidden ids its confirm form carries."""
    return sorted(int(i) for i in re.findall(r'<input type="hidden" name="id" value="(\d+)">', page))


class TestResolveMany:
    async def test_preview_names_every_selected_then_confirm_resolves_them_all(self, console: Console) -> None:
        """Three ticked conflicts previewed taking Salesforce: the dry run names all three and stores nothing;
        confirming resolves the three, one audit entry each, and the list's notice says how many."""
        await log_in(console.client)
        third = await third_conflict(console.store)
        ids = sorted([console.ids["conflict"], console.ids["hostile"], third])
        listing = (await console.client.get("/conflicts")).text
        assert sorted(int(i) for i in re.findall(r'name="id" value="(\d+)"', listing)) == ids
        preview = await console.client.post("/conflicts/preview", data={
            "csrf": hidden(listing, "csrf"), "id": [str(i) for i in ids], "take": "salesforce",
            "comment": "the reps are right", "scope": "selected"})
        assert preview.status_code == 200 and "nothing has been sent" in preview.text
        assert selection_of(preview.text) == ids and "Resolve these 3" in preview.text
        assert preview.text.count("taking Salesforce keeps its values") == 3
        assert all(ref in preview.text for ref in ("001CCC", "001EEE", "salesforce:Opp:&lt;script&gt;"))
        assert len(await console.store.list_conflicts()) == 3  # the dry run decided nothing

        done = await console.client.post("/conflicts/resolve", data={
            "csrf": hidden(preview.text, "csrf"), "id": [str(i) for i in selection_of(preview.text)],
            "take": hidden(preview.text, "take"), "comment": hidden(preview.text, "comment")})
        assert done.status_code == 303 and done.headers["location"] == "/conflicts"
        assert await console.store.list_conflicts() == []
        for conflict_id in ids:
            decided = await console.store.get_conflict(conflict_id)
            assert decided is not None and (decided.resolved_by, decided.comment) == ("ana", "the reps are right")
        actions = [w for w in await console.store.list_writes(limit=20) if w.system == "operator"]
        assert sorted(a.detail["conflict"] for a in actions) == ids
        assert {(a.operation, a.detail["actor"]) for a in actions} == {("resolve conflict: take salesforce", "ana")}
        shown = (await console.client.get("/conflicts")).text
        assert "3 conflict(s) resolved: Salesforce&#39;s value is kept." in shown

    async def test_one_decided_meanwhile_is_skipped_and_named(self, console: Console) -> None:
        """A conflict another admin decides between preview and confirm is not decided again: the others are,
        and the notice names the skipped one with who decided it; a preview after it shows it as skipped."""
        await log_in(console.client)
        third = await third_conflict(console.store)
        ids = sorted([console.ids["conflict"], console.ids["hostile"], third])
        csrf = await csrf_of(console.client, "/conflicts")
        await service.resolve_conflict(console.store, third, take="nue", actor="bo")
        preview = await console.client.post("/conflicts/preview", data={
            "csrf": csrf, "id": [str(i) for i in ids], "take": "skip", "scope": "selected"})
        assert f"conflict {third} is already resolved (take nue by bo): it is skipped" in preview.text
        assert "Resolve these 2" in preview.text
        done = await console.client.post("/conflicts/resolve", data={"csrf": csrf, "id": [str(i) for i in ids],
                                                                     "take": "skip"})
        assert done.status_code == 303
        notice = (await console.client.get("/conflicts")).text
        assert f"2 conflict(s) resolved: skipped, nothing written. 1 skipped: {third} already resolved " \
               "(take nue by bo)." in notice
        assert (await console.store.get_conflict(third)).resolved_by == "bo"  # type: ignore[union-attr]
        actions = [w for w in await console.store.list_writes(limit=20) if w.system == "operator"]
        assert sorted((a.detail["actor"], a.detail["conflict"]) for a in actions) == sorted(
            [("ana", console.ids["conflict"]), ("ana", console.ids["hostile"]), ("bo", third)])

    async def test_a_conflicts_own_page_previews_before_deciding(self, console: Console) -> None:
        """The decision form on one conflict's page previews that one conflict (no script: the button's own
        form action), and the preview's confirm decides it."""
        await log_in(console.client)
        conflict_id = console.ids["conflict"]
        page = (await console.client.get(f"/conflicts/{conflict_id}")).text
        assert 'formaction="/conflicts/preview"' in page
        preview = await console.client.post("/conflicts/preview", data={
            "csrf": hidden(page, "csrf"), "id": hidden(page, "id"), "take": "skip", "comment": "dup"})
        assert selection_of(preview.text) == [conflict_id] and "Resolve these 1" in preview.text
        done = await console.client.post("/conflicts/resolve", data={
            "csrf": hidden(page, "csrf"), "id": str(conflict_id), "take": hidden(preview.text, "take"),
            "comment": hidden(preview.text, "comment")})
        assert done.status_code == 303
        decided = await console.store.get_conflict(conflict_id)
        assert decided is not None and (decided.resolved_by, decided.comment) == ("ana", "dup")

    async def test_all_shown_carries_only_the_filtered_open_conflicts(self, console: Console) -> None:
        """Filtered by flow, the "all shown" button previews exactly the open conflicts the list shows."""
        await log_in(console.client)
        third = await third_conflict(console.store)
        listing = (await console.client.get("/conflicts", params={"flow": "subscription_status"})).text
        assert "Preview all 2 open shown" in listing
        preview = await console.client.post("/conflicts/preview", data={
            "csrf": hidden(listing, "csrf"), "take": "skip", "scope": "shown",
            "shown": re.findall(r'name="shown" value="(\d+)"', listing)})
        assert selection_of(preview.text) == sorted([console.ids["conflict"], third])

    async def test_no_selection_no_choice_or_no_csrf_is_refused(self, console: Console) -> None:
        """An empty selection or no side chosen is 400, a missing CSRF token 403; taking Nue needs the API
        clients to plan the writes (409 here); none of them decides anything."""
        await log_in(console.client)
        csrf = await csrf_of(console.client, "/conflicts")
        one = str(console.ids["conflict"])
        for action in ("/conflicts/preview", "/conflicts/resolve"):
            empty = await console.client.post(action, data={"csrf": csrf, "take": "skip"})
            assert empty.status_code == 400 and "select at least one" in empty.text, action
            unchosen = await console.client.post(action, data={"csrf": csrf, "id": one})
            assert unchosen.status_code == 400 and "choose Nue, Salesforce or skip" in unchosen.text, action
            forged = await console.client.post(action, data={"id": one, "take": "skip"})
            assert forged.status_code == 403, action
        no_shown = await console.client.post("/conflicts/preview", data={"csrf": csrf, "take": "skip", "id": one,
                                                                         "scope": "shown"})
        assert no_shown.status_code == 400
        nue = await console.client.post("/conflicts/preview", data={"csrf": csrf, "take": "nue", "id": one})
        assert nue.status_code == 409 and "API clients" in nue.text
        assert len(await console.store.list_conflicts()) == 2

class TestEscapingAndSecrets:
    async def test_hostile_names_render_as_text(self, console: Console) -> None:
        await log_in(console.client)
        for path, params in (("/conflicts", {}), (f"/conflicts/{console.ids['hostile']}", {}),
                             ("/timeline", {"q": XSS})):
            page = (await console.client.get(path, params=params)).text
            assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    async def test_no_secret_is_ever_rendered(self, console: Console) -> None:
        await log_in(console.client)
        secrets = console.settings.secret_values()
        assert TOKEN in secrets
        for path in ("/", "/timeline?q=CUST-1", "/conflicts", f"/conflicts/{console.ids['conflict']}",
                     "/dead-letters", f"/dead-letters/{console.ids['letter']}", "/reconciliation", "/login"):
            page = (await console.client.get(path)).text
            assert not [s for s in secrets if s in page], path


# Ids no stored row can have: past SQLite's and PostgreSQL's signed 64-bit ids (the store's drivers would raise
# OverflowError), not positive, not a number, and longer than int() converts quickly.
IMPOSSIBLE_IDS = [str(2**63), str(2**64 + 1), "-1", "0", "abc", "1e3", "9" * 300]


class TestImpossibleIds:
    @pytest.mark.parametrize("bad", IMPOSSIBLE_IDS)
    async def test_a_path_id_no_row_can_have_is_404(self, console: Console, bad: str) -> None:
        """A conflict or dead letter page, and resolving, under an id that cannot exist answer 404, not 500."""
        await log_in(console.client)
        csrf = await csrf_of(console.client)
        for path in (f"/conflicts/{bad}", f"/dead-letters/{bad}"):
            assert (await console.client.get(path)).status_code == 404, path
        resolve = await console.client.post(f"/conflicts/{bad}/resolve", data={"take": "nue", "csrf": csrf})
        assert resolve.status_code == 404
        assert len(await console.store.list_conflicts()) == 2

    @pytest.mark.parametrize("bad", IMPOSSIBLE_IDS)
    async def test_a_selected_id_no_row_can_have_is_400(self, console: Console, bad: str) -> None:
        """Previewing or replaying a selection with an id that cannot exist answers 400 with the reason."""
        await log_in(console.client)
        csrf = await csrf_of(console.client, "/dead-letters")
        for action in ("/dead-letters/preview", "/dead-letters/replay"):
            response = await console.client.post(action, data={"csrf": csrf, "id": [str(console.ids["letter"]), bad]})
            assert response.status_code == 400 and "not a number from 1 to" in response.text, action
        assert len(await console.store.list_dead_letters()) == 1  # the good id in the selection was not replayed
        for action in ("/conflicts/preview", "/conflicts/resolve"):
            response = await console.client.post(action, data={"csrf": csrf, "take": "skip",
                                                               "id": [str(console.ids["conflict"]), bad]})
            assert response.status_code == 400 and "not a number from 1 to" in response.text, action
        assert len(await console.store.list_conflicts()) == 2

    async def test_the_largest_id_is_a_plain_miss(self, console: Console) -> None:
        """2^63 - 1 can be an id: it reaches the store and is simply not there (404)."""
        await log_in(console.client)
        assert (await console.client.get(f"/conflicts/{2**63 - 1}")).status_code == 404
        assert (await console.client.get(f"/dead-letters/{2**63 - 1}")).status_code == 404


def broken() -> dict[str, str]:
    raise RuntimeError("the schema guard broke at 0xdeadbeef")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The daemon's JSON log pipeline writing into a buffer, the tests' own structlog setup restored after."""
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    yield stream
    structlog.configure(**saved)


class TestUnexpectedErrors:
    async def test_one_structured_line_and_a_plain_500(self, console: Console, json_log: io.StringIO) -> None:
        """An exception no route handles is one JSON log line with route, method, error and traceback; the
        answer is a plain 500 with the security headers and nothing of the exception in it."""
        app = build_console(ConsoleContext(store=console.store, settings=console.settings, parked=broken))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c.test") as client:
            await log_in(client)
            response = await client.get("/")
        assert response.status_code == 500
        assert "Traceback" not in response.text and "deadbeef" not in response.text
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        [record] = [json.loads(line) for line in json_log.getvalue().splitlines()]
        assert record["event"] == "console_request_failed" and record["level"] == "error"
        assert record["route"] == "/" and record["method"] == "GET"
        assert record["error_type"] == "RuntimeError" and "0xdeadbeef" in record["error"]
        assert "Traceback" in record["exception"] and "broken" in record["exception"]

    async def test_served_by_uvicorn_stderr_carries_only_json(self, console: Console, capfd: pytest.CaptureFixture[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
        """Through the real admin server, the failure reaches stderr as one JSON line, and uvicorn logs no
        plain-text traceback beside it (through the standard library's logging, which the daemon leaves
        unconfigured: its last-resort handler writes to stderr)."""
        saved = structlog.get_config()
        configure_logging(level="info", fmt="json", stream=sys.stderr)
        app = build_console(ConsoleContext(store=console.store, settings=console.settings, parked=broken))
        server = ConsoleServer(app, "127.0.0.1", 0)
        try:
            async with anyio.create_task_group() as tg:
                port = await tg.start(server.serve)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    await log_in(client)
                    status = (await client.get("/")).status_code
                tg.cancel_scope.cancel()
        finally:
            structlog.configure(**saved)
        assert status == 500
        records = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.strip()]
        assert [r["event"] for r in records if r["level"] == "error"] == ["console_request_failed"]
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
