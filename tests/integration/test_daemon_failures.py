"""The daemon when a part of it fails: a store that fails after it opened, a state directory it cannot make, a
port another process holds. It says why, exits with the documented code, and never hangs; readiness follows
whether writes succeed, not only reads."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
import structlog
import yaml
from click.testing import CliRunner

from revdaemon.cli import EXIT_RUNTIME, EXIT_STORE, main
from revdaemon.engine.supervisor import Daemon, run_daemon
from revdaemon.errors import StoreBusy, StoreUnavailable
from revdaemon.listener.signature import sign
from revdaemon.sandbox.runner import Sandbox, create_sandbox
from revdaemon.store import Store
from revdaemon.store.records import NewEvent
from revdaemon.store.sql_store import SqlStore
from revdaemon.store.sqlite import SqliteDialect
from revdaemon.store.states import EventStatus
from tests.integration.engine_fixtures import daemon_settings, engine, webhook
from tests.integration.test_engine_subscription_status import activate_for
from tests.integration.test_replicas import wait_until
from tests.unit.test_cli import config_in

pytestmark = pytest.mark.anyio


def _sqlite_of(store: Store) -> SqliteDialect:
    assert isinstance(store, SqlStore) and isinstance(store._db, SqliteDialect)
    return store._db


async def _refuse_writes(store: Store, refuse: bool) -> None:
    # SQLite's own refusal of every write while reads go on: what a read-only database file or a full disk does.
    await _sqlite_of(store)._conn.execute(f"PRAGMA query_only = {'ON' if refuse else 'OFF'}")


async def test_a_store_failing_mid_run_stops_the_daemon_with_the_store_error_and_closes_it(tmp_path: Path) -> None:
    """Writes fail once the daemon runs, so the worker cannot claim and shutdown cannot release its claims:
    run_daemon still closes the store (its connection thread would keep the process alive) and raises the
    store's own error, which the CLI turns into exit 3."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=11).start_threads()
    held: dict[str, SqliteDialect] = {}
    try:
        settings = daemon_settings(box, tmp_path)

        async def on_ready(daemon: Daemon) -> None:
            held["store"] = _sqlite_of(daemon.store)
            await daemon.store.add_events([NewEvent(source="nue_webhook", key="nue:evt-1", type="customer.updated",
                                                    payload={"data": {"id": "cust-1"}})])
            await _refuse_writes(daemon.store, True)
            await anyio.sleep_forever()  # the worker's failure ends the daemon

        with structlog.testing.capture_logs() as logs, pytest.raises(StoreUnavailable, match="readonly"):
            with anyio.fail_after(30):
                await run_daemon(settings, on_ready=on_ready, polling=False)
    finally:
        box.close()
    assert held["store"]._conn._connection is None  # closed, its thread stopped
    events = [entry["event"] for entry in logs]
    assert "claims_not_released" in events and events[-1] == "daemon_stopped"


def test_an_uncreatable_state_directory_is_the_store_exit_code_with_the_reason(tmp_path: Path) -> None:
    """state_dir under a path that is a file (as an unwritable parent does): exit 3 and what to do, no trace."""
    (tmp_path / "not-a-directory").write_text("")
    path = config_in(tmp_path)
    document = path.read_text().replace(str(tmp_path / "state"), str(tmp_path / "not-a-directory" / "state"))
    path.write_text(document)
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--stop-after", "0"])
    assert result.exit_code == EXIT_STORE, result.output
    assert "cannot create the state directory" in result.output and "Traceback" not in result.output


async def test_readiness_is_false_while_writes_fail_and_comes_back_when_they_succeed(tmp_path: Path) -> None:
    """/healthz reads the store and also knows the last write failed: not ready while webhooks cannot be
    stored, ready again as soon as a write goes through, without waiting for the next webhook."""
    box = create_sandbox(key_dir=tmp_path / "keys", seed=12).start_threads()
    seen: list[tuple[int, bool]] = []
    try:
        settings = daemon_settings(box, tmp_path)
        assert settings.nue.webhook_secret is not None
        secret = settings.nue.webhook_secret.get_secret_value()

        async def on_ready(daemon: Daemon) -> None:
            _sqlite_of(daemon.store)
            base = f"http://127.0.0.1:{daemon.listener_port}"
            body = json.dumps({"id": "evt-full", "type": "customer.updated", "data": {"id": "cust-1"}}).encode()
            async with httpx.AsyncClient() as client:
                async def ready() -> None:
                    answer = await client.get(base + "/healthz")
                    seen.append((answer.status_code, answer.json()["ready"]))

                await ready()
                await _refuse_writes(daemon.store, True)
                refused = await client.post(base + "/webhooks/nue", content=body, headers={
                    "content-type": "application/json", "nue-signature": sign(body, secret, int(time.time()))})
                assert refused.status_code >= 500
                await ready()
                await ready()  # the probe write fails again: still not ready
                await _refuse_writes(daemon.store, False)
                await ready()

        await run_daemon(settings, on_ready=on_ready, stop_after=0, polling=False)
    finally:
        box.close()
    assert seen == [(200, True), (503, False), (503, False), (200, True)]


def test_a_taken_port_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """The webhook port held by another process: exit 1 naming the address and the setting."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = config_in(tmp_path)
        document = yaml.safe_load(path.read_text())
        document["listener"]["port"] = port
        path.write_text(yaml.safe_dump(document))
        result = CliRunner().invoke(main, ["run", "--config", str(path), "--stop-after", "0"])
    assert result.exit_code == EXIT_RUNTIME, result.output
    assert f"the listener cannot listen on 127.0.0.1:{port}" in result.output and "listener.port" in result.output
    assert "Traceback" not in result.output


class _BusyOnce:
    """The store, but its first claim and its first give-back answer StoreBusy (a lock held past the busy
    timeout): what two transient errors in a row look like to a worker."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.busy = {"claim_events", "release_claims"}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if name not in self.busy:
            return method

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            self.busy.discard(name)
            raise StoreBusy("the state database stayed locked by another process")

        return refuse


async def test_a_busy_store_twice_in_a_row_does_not_stop_the_worker(sandbox: Sandbox, tmp_path: Path) -> None:
    """The claim fails busy, then giving the batch back fails busy too: the worker logs it, waits, and goes on to
    sync the event, instead of ending the daemon with exit 3 as a broken store does."""
    _, account_id, subscriptions = activate_for(sandbox, 3, 3)
    async with engine(sandbox, tmp_path, wrap_store=lambda store: cast(Store, _BusyOnce(store))) as e:
        await e.store.add_events([webhook("subscription.updated", dict(subscriptions[0]), "busy-1")])
        with structlog.testing.capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(e.worker.run)

                async def synced() -> bool:
                    return (await e.store.queue_depths())[EventStatus.DONE] == 1

                await wait_until(synced, 20)
                e.worker.stop()
    assert "claims_not_released" in [entry["event"] for entry in logs]
    assert sandbox.salesforce.record("Account", account_id)["MRR__c"] is not None
