"""The console's shadow page (issue 29): the report as the CLI prints it, each count's planned writes with their
diffs, and going live from it; on a real store holding shadow entries."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from revdaemon.config import Mode
from revdaemon.console import app as console_app
from revdaemon.console.app import ConsoleContext, build_console
from revdaemon.store import Store, open_store
from revdaemon.store.records import NewShadowEntry, utcnow
from tests.integration.test_console_pages import XSS, csrf_of, log_in, settings_for

pytestmark = pytest.mark.anyio
ORG = "https://acme.my.salesforce.com"
ACCOUNT = "001000000000001AAA"
OTHER = "001000000000002AAA"
OPPORTUNITY = "006000000000001AAA"
EVENT = f"sf:Opportunity:{OPPORTUNITY}:1"


def account_update(n: int, account: str = ACCOUNT, **kw: object) -> NewShadowEntry:
    return NewShadowEntry(event_id=None, event_key=f"nue:sub-{n}", flow="subscription_status", outcome="write",
                          system="salesforce", action="update", target=f"Account {account}", idem_key=f"u{n}",
                          changes=({"field": "MRR__c", "current": 90.0, "planned": "100.00", "changes": True},
                                   {"field": "ARR__c", "current": 1200.0, "planned": "1200.00", "changes": False}),
                          **kw)  # type: ignore[arg-type]


ENTRIES = [
    NewShadowEntry(event_id=None, event_key=EVENT, flow="closed_won_to_order", outcome="write", system="nue",
                   action="create", target=f"Order for opportunity {OPPORTUNITY}", idem_key="o1",
                   changes=({"field": "name", "current": None, "planned": "Deal", "changes": True},),
                   flags=(f"an order already names opportunity {OPPORTUNITY}",)),
    account_update(1, flags=(f"Account {ACCOUNT} was last changed by user 005X on 2026-03-01: {XSS}",)),
    account_update(2, account=OTHER, warnings=("Required fields are missing: [Name]",)),
    NewShadowEntry(event_id=None, event_key="nue:sub-3", flow="subscription_status", outcome="conflict",
                   note="edited in Salesforce"),
    NewShadowEntry(event_id=None, event_key="nue:sub-4", flow="subscription_status", outcome="error",
                   note="no such customer"),
    NewShadowEntry(event_id=None, event_key="nue:sub-5", flow="invoice_sync", outcome="nothing"),
]


async def _console(tmp_path: Path, mode: Mode, entries: list[NewShadowEntry]) -> AsyncIterator[
        tuple[httpx.AsyncClient, Store]]:
    settings = settings_for(tmp_path).model_copy(update={"mode": mode})
    store = await open_store(settings.database_path)
    await store.record_shadow(entries)
    app = build_console(ConsoleContext(store=store, settings=settings, salesforce_url=lambda: ORG))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as client:
        await log_in(client)
        yield client, store
    await store.close()


@pytest.fixture
async def shadowed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    """Shadow mode on, with a week's entries: writes, a flag, a describe warning, a conflict, an error, nothing."""
    async for pair in _console(tmp_path, Mode.SHADOW, ENTRIES):
        yield pair


@pytest.fixture
async def never(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    """Live mode, and shadow mode never ran."""
    async for pair in _console(tmp_path, Mode.LIVE, []):
        yield pair


def cells(html: str) -> list[list[str]]:
    """Every table row's cells as text, tags stripped."""
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)]


class TestShadowPage:
    async def test_never_ran_says_so(self, never: tuple[httpx.AsyncClient, Store]) -> None:
        """In live mode without any shadow entry the page says shadow mode never ran, with no button; the nav
        links it anyway, and the overview has no banner."""
        client, _ = never
        page = await client.get("/shadow")
        assert page.status_code == 200 and "Shadow mode never ran here" in page.text
        assert "/shadow/promote" not in page.text
        overview = (await client.get("/")).text
        assert '<a href="/shadow">Shadow</a>' in overview and "nothing is written" not in overview
        refused = await client.post("/shadow/promote", data={"csrf": await csrf_of(client, "/shadow")})
        assert refused.status_code == 400 and "nothing to promote" in refused.text

    async def test_report_as_the_cli_prints_it(self, shadowed: tuple[httpx.AsyncClient, Store]) -> None:
        """Counts per flow, system and object; left alone; the conflicts, dead letters and flags, targets named
        by id and linked to the org; the mode, and the overview's banner while not promoted."""
        client, _ = shadowed
        page = (await client.get("/shadow")).text
        rows = cells(page)
        assert ["closed_won_to_order", "nue", "Order", "1", "0", "0", "0", "the writes and their diffs"] in rows
        assert ["subscription_status", "salesforce", "Account", "0", "2", "0", "0",
                "the writes and their diffs"] in rows
        assert "Left alone (nothing to write): invoice_sync 1." in page
        assert "edited in Salesforce" in page and "no such customer" in page
        assert "Required fields are missing: [Name]" in page
        assert f'href="{ORG}/lightning/r/Account/{ACCOUNT}/view"' in page  # a flag's target, linked out
        assert f'href="{ORG}/lightning/r/Account/{OTHER}/view"' in page  # a would-be dead letter's too
        assert f"an order already names opportunity {OPPORTUNITY}" in page
        assert XSS not in page and "&lt;script&gt;" in page
        assert "Shadow mode is on" in page and "not promoted" in page and 'action="/shadow/promote"' in page
        assert "Shadow mode: nothing is written; see" in (await client.get("/")).text

    async def test_since_filter(self, shadowed: tuple[httpx.AsyncClient, Store]) -> None:
        """?since= keeps what was planned from that day on; a date not shaped YYYY-MM-DD is refused."""
        client, _ = shadowed
        assert "6 event(s), 3 write(s)" in (await client.get("/shadow?since=2000-01-01")).text
        tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
        later = (await client.get(f"/shadow?since={tomorrow}")).text
        assert "0 event(s), 0 write(s)" in later and f"No write planned since {tomorrow}" in later
        assert "Shadow mode never ran" not in later
        assert (await client.get("/shadow?since=yesterday")).status_code == 400


class TestShadowWrites:
    async def test_drill_down_shows_each_write_with_its_diff(self, shadowed: tuple[httpx.AsyncClient, Store]) -> None:
        """A count's link lists that flow and object's planned writes, each field current -> planned, the
        changed ones marked; another flow's writes are not among them."""
        client, _ = shadowed
        report = (await client.get("/shadow")).text
        link = re.search(r'href="(/shadow/writes\?flow=subscription_status[^"]*)"', report)
        assert link, "no drill-down link for the Account row"
        page = (await client.get(link[1].replace("&amp;", "&"))).text
        assert "2 write(s) planned" in page and "Order for opportunity" not in page
        assert page.count('<tr class="differs"><td class="mono">MRR__c</td><td class="mono">90.0</td>'
                          '<td class="mono">100.00</td></tr>') == 2
        assert page.count('<tr class="same"><td class="mono">ARR__c</td>') == 2
        assert f'href="{ORG}/lightning/r/Account/{OTHER}/view"' in page
        assert "Salesforce would refuse this: Required fields are missing: [Name]" in page
        assert "Look before going live: Account" in page

    async def test_drill_down_is_capped(self, shadowed: tuple[httpx.AsyncClient, Store],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
        client, _ = shadowed
        monkeypatch.setattr(console_app, "MAX_SHADOW_WRITES", 1)
        page = (await client.get("/shadow/writes?flow=subscription_status&system=salesforce&object=Account")).text
        assert "2 write(s) planned" in page and "the first 1 shown" in page
        assert page.count('class="card"') == 1

    async def test_drill_down_needs_a_row(self, shadowed: tuple[httpx.AsyncClient, Store]) -> None:
        client, _ = shadowed
        assert (await client.get("/shadow/writes?flow=subscription_status")).status_code == 400


class TestPromote:
    async def test_promote_from_the_page(self, shadowed: tuple[httpx.AsyncClient, Store]) -> None:
        """The form promotes as the session's admin with the go-live date given; afterwards the page says who and
        when, keeps the report, has no button, and the overview's banner is gone."""
        client, store = shadowed
        forged = await client.post("/shadow/promote", data={"csrf": "forged", "go_live": "2026-01-05"})
        assert forged.status_code == 403 and await store.shadow_promotion() is None
        bad = await client.post("/shadow/promote", data={"csrf": await csrf_of(client, "/shadow"), "go_live": "5 Jan"})
        assert bad.status_code == 400 and await store.shadow_promotion() is None
        done = await client.post("/shadow/promote", data={"csrf": await csrf_of(client, "/shadow"),
                                                          "go_live": "2026-01-05"})
        assert done.status_code == 303 and done.headers["location"] == "/shadow"
        promotion = await store.shadow_promotion()
        assert promotion is not None and promotion.actor == "ana" and promotion.go_live == date(2026, 1, 5)
        page = (await client.get("/shadow")).text
        assert "Promoted to live: revdaemon writes from its next claim (go-live cut-off 2026-01-05)" in page  # flash
        assert "Promoted to live on" in page and "by ana (go-live cut-off 2026-01-05)" in page
        assert f"an order already names opportunity {OPPORTUNITY}" in page  # what it flagged stays readable
        assert 'action="/shadow/promote"' not in page
        assert "nothing is written" not in (await client.get("/")).text

    async def test_promote_twice_keeps_the_first(self, shadowed: tuple[httpx.AsyncClient, Store]) -> None:
        client, store = shadowed
        for _ in range(2):
            await client.post("/shadow/promote", data={"csrf": await csrf_of(client), "go_live": ""})
        assert "Already promoted on" in (await client.get("/shadow")).text
        promotion = await store.shadow_promotion()
        assert promotion is not None and promotion.go_live == await store.go_live()
