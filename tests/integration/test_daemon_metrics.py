"""The running daemon's Prometheus metrics: on a loopback admin listener of their own by default, on the webhook
port only with metrics.listen: webhook, nowhere with off."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.sandbox.runner import create_sandbox
from tests.integration.engine_fixtures import as_bound, daemon_settings

pytestmark = pytest.mark.anyio


async def test_metrics_count_a_webhook_and_show_queue_depths(tmp_path: Path) -> None:
    """After one signed webhook, the admin port's /metrics shows it received and the queue gauges from the store;
    the webhook port, which faces Nue, has no /metrics."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=6).start_threads()
    scraped: dict[str, str] = {}
    try:
        settings = daemon_settings(box, tmp_path)

        async def on_ready(daemon: Daemon) -> None:
            assert daemon.metrics_port and daemon.metrics_port != daemon.listener_port
            box.nue.webhooks.set_targets([f"http://127.0.0.1:{daemon.listener_port}/webhooks/nue"])
            box.nue.scenario.create_customer(0)
            await anyio.to_thread.run_sync(lambda: box.nue.webhooks.wait_idle(10))
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{daemon.metrics_port}/metrics")
                webhook_port = await client.get(f"http://127.0.0.1:{daemon.listener_port}/metrics")
            scraped["status"] = str(response.status_code)
            scraped["body"] = response.text
            scraped["type"] = response.headers["content-type"]
            scraped["webhook_port"] = str(webhook_port.status_code)

        await run_daemon(settings, on_ready=on_ready, stop_after=0.2, polling=False)
    finally:
        box.close()
    assert scraped["status"] == "200" and scraped["type"].startswith("text/plain")
    body = scraped["body"]
    assert 'revdaemon_events_received_total{source="nue_webhook",type="customer.created"} 1.0' in body
    assert "revdaemon_queue_depth{" in body
    assert scraped["webhook_port"] == "404"


@pytest.mark.parametrize(("listen", "on_webhook_port"), [("webhook", 200), ("off", 404)])
async def test_metrics_on_the_webhook_port_or_off(tmp_path: Path, listen: str, on_webhook_port: int) -> None:
    """metrics.listen: webhook serves /metrics on the listener as before; off serves it nowhere. Neither opens
    the admin listener."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=6).start_threads()
    seen: dict[str, object] = {}
    try:
        settings = daemon_settings(box, tmp_path, REVDAEMON_METRICS__LISTEN=listen)

        async def on_ready(daemon: Daemon) -> None:
            seen["admin"] = (daemon.metrics_listener, daemon.metrics_port)
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{daemon.listener_port}/metrics")
            seen["status"], seen["body"] = response.status_code, response.text

        await run_daemon(settings, on_ready=on_ready, stop_after=0.1, polling=False)
    finally:
        box.close()
    assert seen["admin"] == (None, None)
    assert seen["status"] == on_webhook_port
    assert ("revdaemon_queue_depth{" in str(seen["body"])) is (on_webhook_port == 200)


async def test_admin_healthz_shows_what_the_webhook_port_hides(tmp_path: Path) -> None:
    """The admin /healthz carries each poller's last error; the webhook /healthz only when polls last succeeded.
    The admin listener takes GET and HEAD alone, and has nothing else."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=6).start_threads()
    seen: dict[str, httpx.Response] = {}
    try:
        settings = daemon_settings(box, tmp_path)

        async def on_ready(daemon: Daemon) -> None:
            daemon.health.poll_failed("nue:Invoice", "INVALID_FIELD on record a0B5g00000XyZ")
            async with httpx.AsyncClient() as client:
                admin = f"http://127.0.0.1:{daemon.metrics_port}"
                seen["admin"] = await client.get(f"{admin}/healthz")
                seen["webhook"] = await client.get(f"http://127.0.0.1:{daemon.listener_port}/healthz")
                seen["post"] = await client.post(f"{admin}/metrics")
                seen["other"] = await client.get(f"{admin}/webhooks/nue")

        await run_daemon(settings, on_ready=on_ready, stop_after=0.1, polling=False)
    finally:
        box.close()
    admin = seen["admin"].json()
    assert seen["admin"].status_code == 200 and admin["ready"] is True
    assert admin["pollers"]["nue:Invoice"]["last_error"] == "INVALID_FIELD on record a0B5g00000XyZ"
    assert seen["webhook"].status_code == 200 and "a0B5g00000XyZ" not in seen["webhook"].text
    assert seen["webhook"].json()["last_polls"] == {"nue:Invoice": None}
    assert seen["post"].status_code == 405 and seen["other"].status_code == 404


async def test_status_reads_the_running_daemon(tmp_path: Path) -> None:
    """`status` adds readiness and last polls from a running daemon's listener, and its figures from the admin
    port's /metrics; None when nothing answers."""
    from revdaemon.cli import _live_daemon

    box = create_sandbox(key_dir=tmp_path / "keys", seed=7).start_threads()
    seen: dict[str, object] = {}
    try:
        settings = daemon_settings(box, tmp_path)

        async def on_ready(daemon: Daemon) -> None:
            await daemon.pollers[1].run_once()
            seen["live"] = await anyio.to_thread.run_sync(_live_daemon, as_bound(settings, daemon))

        await run_daemon(settings, on_ready=on_ready, stop_after=0.2, polling=False)
    finally:
        box.close()
    live = seen["live"]
    assert isinstance(live, dict) and live["ready"] is True and live["last_polls"]
    assert live["nue_calls"] is not None and live["nue_calls"] >= 1  # read from the admin port's /metrics
    assert _live_daemon(settings.model_copy(update={"listener": settings.listener.model_copy(
        update={"port": 9})})) is None


async def test_status_lists_the_daemon_as_the_leading_replica(tmp_path: Path) -> None:
    """The daemon's heartbeat is in the store: `status` shows it as the active replica (one box), with the
    leadership epoch it took at start."""
    from revdaemon.cli import _summary

    box = create_sandbox(key_dir=tmp_path / "keys", seed=7).start_threads()
    try:
        settings = daemon_settings(box, tmp_path, REVDAEMON_STORE__REPLICA_ID="box-a")
        await run_daemon(settings, stop_after=0.2, polling=False)
    finally:
        box.close()
    _summary_of_store, replicas, active, _footprint, mode = await _summary(settings)
    assert [(r["id"], r["leader"]) for r in replicas] == [("box-a", True)]
    assert active is not None and (active["id"], active["epoch"]) == ("box-a", 1)
    assert mode["mode"] == "live" and mode["promoted"] is None  # never shadowed


async def test_status_shows_only_its_own_stores_daemon(tmp_path: Path) -> None:
    """A daemon answering on the configured listener is shown only when it is one of the store's replicas: with
    another store's config (a demo on the same port, say) `status` says so and shows none of its figures."""
    from revdaemon.cli import _store_daemon, _summary
    from revdaemon.store import open_store

    box = create_sandbox(key_dir=tmp_path / "keys", seed=7).start_threads()
    seen: dict[str, object] = {}
    try:
        settings = daemon_settings(box, tmp_path / "a")
        other = daemon_settings(box, tmp_path / "b")
        store = await open_store(other.database_path)  # a store no daemon has run on
        await store.close()

        async def on_ready(daemon: Daemon) -> None:
            for name, config in (("own", settings), ("other", other)):
                _summary_of_store, replicas, _active, _footprint, _mode = await _summary(config)
                seen[name] = await anyio.to_thread.run_sync(_store_daemon, as_bound(config, daemon), replicas)

        await run_daemon(settings, on_ready=on_ready, stop_after=0.2, polling=False)
    finally:
        box.close()
    own_live, own_elsewhere = seen["own"]  # type: ignore[misc]
    assert own_live is not None and own_live["ready"] is True and own_elsewhere is None
    other_live, other_elsewhere = seen["other"]  # type: ignore[misc]
    assert other_live is None and other_elsewhere is not None and other_elsewhere.startswith("http://127.0.0.1:")
