"""kill -9 in the middle of the work, restart, and count: nothing lost, nothing made twice.

The sandbox and the daemon run as separate processes, as on a real box. Nue answers slowly (an injected
latency), so the kill lands while orders are being made.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

DEAL_COUNT = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--key-dir", str(tmp_path / "keys"),
         "--webhook-target", f"http://127.0.0.1:{port}/webhooks/nue"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        info["listener_port"] = port
        yield info
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def write_config(tmp_path: Path, info: dict[str, Any]) -> Path:
    sf, nue = info["salesforce"], info["nue"]
    config = {
        "state_dir": str(tmp_path / "state"),
        "salesforce": {"login_url": sf["login_url"], "auth": "jwt", "client_id": sf["consumer_key"],
                       "username": sf["username"], "private_key_file": sf["private_key_file"]},
        "nue": {"base_url": nue["url"], "api_key": nue["api_key"], "webhook_secret": nue["webhook_secret"]},
        "listener": {"port": info["listener_port"]},
        "metrics": {"port": 0},
        "engine": {"workers": 2, "batch_size": 2, "lease_seconds": 5},
        "schedule": {"salesforce_poll_seconds": 5, "nue_poll_seconds": 3600},
        "log": {"format": "json", "level": "info"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "run", "--config", str(config)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_mid_batch_loses_nothing_and_duplicates_nothing(sandbox: dict[str, Any], tmp_path: Path) -> None:
    """Deals closed in Salesforce each end as one activated Nue order and a written-back opportunity."""
    sf_url, nue = sandbox["salesforce"]["url"], sandbox["nue"]
    opportunities = [o for o in httpx.get(f"{sf_url}/__sandbox/records/Opportunity").json()
                     if not o["IsClosed"]][:DEAL_COUNT]
    assert len(opportunities) == DEAL_COUNT
    for opportunity in opportunities:
        httpx.post(f"{sf_url}/__sandbox/scenario/close-won", json={"opportunity_id": opportunity["Id"]})
    httpx.post(f"{nue['url']}/__sandbox/faults", json={"latency_ms": 150})

    def nue_posts(path: str) -> int:
        return sum(1 for r in httpx.get(f"{nue['url']}/__sandbox/requests").json()["requests"]
                   if r["method"] == "POST" and r["path"].startswith(path))

    config = write_config(tmp_path, sandbox)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log)
    try:
        wait_for(lambda: nue_posts("/orders") >= 1, 60, "the first Nue order request")
        os.kill(daemon.pid, signal.SIGKILL)  # no clean stop: claims, intents and leases stay as they were
        daemon.wait(timeout=10)
        records = {o["Id"]: o for o in httpx.get(f"{sf_url}/__sandbox/records/Opportunity").json()}
        finished = sum(1 for o in opportunities if records[o["Id"]].get("Nue_Order_Id__c"))
        assert finished < DEAL_COUNT, "the kill came too late to interrupt anything"
        httpx.post(f"{nue['url']}/__sandbox/faults", json={"latency_ms": 0})
        daemon = start_daemon(config, log)

        headers = {"nue-api-key": nue["api_key"]}

        def orders() -> list[dict[str, Any]]:
            query = "query { Order(limit: 100) { id orderNumber status description } }"
            body = httpx.post(f"{nue['url']}/async/graphql", json={"query": query}, headers=headers).json()
            return list(body["data"]["Order"])

        def written_back() -> bool:
            records = {o["Id"]: o for o in httpx.get(f"{sf_url}/__sandbox/records/Opportunity").json()}
            return all(records[o["Id"]].get("Nue_Order_Id__c") for o in opportunities)

        wait_for(written_back, 90, "every opportunity to show its Nue order")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.read_text()[-3000:]

    made = orders()
    for opportunity in opportunities:
        mine = [o for o in made if f"sfdc-opportunity:{opportunity['Id']}" in (o["description"] or "")]
        assert len(mine) == 1, f"{opportunity['Name']}: {len(mine)} orders"
        assert mine[0]["status"] == "Activated"
    status = subprocess.run([sys.executable, "-m", "revdaemon.cli", "status", "--config", str(config), "--json"],
                            capture_output=True, text=True, check=True)
    depths = json.loads(status.stdout)["queue_depths"]
    assert depths["dead"] == 0 and depths["conflict"] == 0
