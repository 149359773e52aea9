"""The running daemon exposes Prometheus metrics on its listener."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.sandbox.runner import create_sandbox
from tests.integration.engine_fixtures import daemon_settings

pytestmark = pytest.mark.anyio



async def test_metrics_count_a_webhook_and_show_queue_depths(tmp_path: Path) -> None:
    """After one signed webhook, /metrics shows it received and the queue gauges from the store."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=6).start_threads()
    scraped: dict[str, str] = {}
    try:
        settings = daemon_settings(box, tmp_path)

        async def on_ready(daemon: Daemon) -> None:
            box.nue.webhooks.set_targets([f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"])
            box.nue.scenario.create_customer(0)
            await anyio.to_thread.run_sync(lambda: box.nue.webhooks.wait_idle(10))
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{daemon.listener_port}/metrics")
            scraped["status"] = str(response.status_code)
            scraped["body"] = response.text
            scraped["type"] = response.headers["content-type"]

        await run_daemon(settings, on_ready=on_ready, stop_after=0.2, polling=False)
    finally:
        box.close()
    assert scraped["status"] == "200" and scraped["type"].startswith("text/plain")
    body = scraped["body"]
    assert 'revdaemon_events_received_total{source="nue_webhook",type="customer.created"} 1.0' in body
    assert "revdaemon_queue_depth{" in body


async def test_status_reads_the_running_daemon(tmp_path: Path) -> None:
    """`status` adds readiness and last polls from a running daemon's listener; None when nothing answers."""
    from revdaemon.cli import _live_daemon

    box = create_sandbox(key_dir=tmp_path / "keys", seed=7).start_threads()
    seen: dict[str, object] = {}
    try:
        settings = daemon_settings(box, tmp_path)

        async def on_ready(daemon: Daemon) -> None:
            await daemon.pollers[1].run_once()
            bound = settings.model_copy(update={"listener": settings.listener.model_copy(
                update={"port": daemon.listener_port})})
            seen["live"] = await anyio.to_thread.run_sync(_live_daemon, bound)

        await run_daemon(settings, on_ready=on_ready, stop_after=0.2, polling=False)
    finally:
        box.close()
    live = seen["live"]
    assert isinstance(live, dict) and live["ready"] is True and live["last_polls"]
    assert _live_daemon(settings.model_copy(update={"listener": settings.listener.model_copy(
        update={"port": 9})})) is None


async def test_status_lists_the_daemon_as_the_leading_replica(tmp_path: Path) -> None:
    """The daemon's heartbeat is in the store: `status` shows it, leading the scheduled work (one box)."""
    from revdaemon.cli import _summary

    box = create_sandbox(key_dir=tmp_path / "keys", seed=7).start_threads()
    try:
        settings = daemon_settings(box, tmp_path, REVDAEMON_STORE__REPLICA_ID="box-a")
        await run_daemon(settings, stop_after=0.2, polling=False)
    finally:
        box.close()
    _summary_of_store, replicas = await _summary(settings)
    assert [(r["id"], r["leader"]) for r in replicas] == [("box-a", True)]
