"""What the API budget planner decides, as an operator sees it: the running daemon's /metrics, `revdaemon
status` reading them back, and the console's overview."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import httpx
import pytest
from rich.console import Console

from revdaemon.console.app import ConsoleContext, build_console
from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.limits import DailyBudget
from revdaemon.sandbox.runner import create_sandbox
from revdaemon.store import open_store
from tests.integration.engine_fixtures import as_bound, daemon_settings
from tests.integration.test_console_pages import log_in, settings_for

pytestmark = pytest.mark.anyio


async def test_metrics_and_status_show_exhaustion_and_what_waits(tmp_path: Path) -> None:
    """The running daemon's /metrics carry the planner's figures, and `status` reads them back."""
    from revdaemon.cli import _live_daemon, _print_budget_plan

    box = create_sandbox(key_dir=tmp_path / "keys", seed=8).start_threads()
    seen: dict[str, object] = {}
    try:
        settings = daemon_settings(box, tmp_path)
        box.salesforce.set_api_usage(6_000)  # share 0.5 of 15,000: a fifth of the daemon's 7,500 left

        async def on_ready(daemon: Daemon) -> None:
            await daemon.salesforce.limits()  # one real-time call reports the usage
            await daemon.salesforce.limits()
            seen["live"] = await anyio.to_thread.run_sync(_live_daemon, as_bound(settings, daemon))

        await run_daemon(settings, on_ready=on_ready, stop_after=0.1, polling=False)
    finally:
        box.close()
    live = seen["live"]
    assert isinstance(live, dict)
    assert live["deferred"] == ["bulk"] and live["poll_interval_multiplier"] == 4.0
    assert live["salesforce_calls_per_minute"] is not None
    out = io.StringIO()
    _print_budget_plan(Console(file=out, width=200), settings, live)
    text = out.getvalue()
    assert "polls at 4x their interval; deferred: backfill and reconciliation" in text
    assert "allocation spent in" in text and "Nue: no daily allocation" in text


async def test_console_overview_shows_the_plan(tmp_path: Path) -> None:
    """The overview's API budget table: the recent rate, when it runs out, and a Deferred line."""
    settings = settings_for(tmp_path)
    now = [0.0]
    budget = DailyBudget(share=0.5, clock=lambda: now[0])
    budget.observe(4_900, 10_000)
    now[0] = 120.0
    budget.observe(5_020, 10_000)  # 1 call/s: 4,980 left, spent in 1 h 23 min
    store = await open_store(settings.database_path)
    try:
        app = build_console(ConsoleContext(store=store, settings=settings, salesforce_budget=budget))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c.test") as client:
            await log_in(client)
            page = (await client.get("/")).text
    finally:
        await store.close()
    assert "Deferred: backfill and reconciliation, polling; polls at 8x their interval." in page
    assert "(in 1 h 23 min)" in page and "60.0" in page
