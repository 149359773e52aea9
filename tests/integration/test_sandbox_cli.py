"""`revdaemon sandbox` as an operator runs it: a real process printing where to connect."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx


class TestSandboxCommand:
    def test_prints_one_json_line_and_serves_both_until_sigterm(self, tmp_path: Path) -> None:
        """--json prints the URLs and credentials on one line; both simulators answer; SIGTERM stops it."""
        process = subprocess.Popen(
            [sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--seed", "7", "--key-dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert process.stdout is not None
            info = json.loads(process.stdout.readline())
            sf, nue = info["salesforce"], info["nue"]
            assert Path(sf["private_key_file"]).read_text().startswith("-----BEGIN PRIVATE KEY-----")
            token = httpx.post(f"{sf['login_url']}/services/oauth2/token",
                               data={"grant_type": "client_credentials", "client_id": sf["consumer_key"],
                                     "client_secret": sf["consumer_secret"]})
            assert token.status_code == 200 and token.json()["instance_url"] == sf["url"]
            products = httpx.get(f"{nue['url']}/catalog/products", headers={"nue-api-key": nue["api_key"]})
            assert products.status_code == 200 and products.json()["status"] == "success"
            assert httpx.get(f"{nue['url']}/catalog/products").status_code == 401
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0


def sandbox_config(box: object, tmp_path: Path, *, client_id: str | None = None, api_key: str | None = None
                   ) -> Path:
    """A config.yaml for this sandbox; `client_id` / `api_key`: other credentials than the ones it accepts."""
    import yaml

    info = box.info()  # type: ignore[attr-defined]
    config = {
        "state_dir": str(tmp_path / "state"),
        "salesforce": {"login_url": info["salesforce"]["login_url"], "auth": "jwt",
                       "client_id": client_id or info["salesforce"]["consumer_key"],
                       "username": info["salesforce"]["username"],
                       "private_key_file": info["salesforce"]["private_key_file"]},
        "nue": {"base_url": info["nue"]["url"], "api_key": api_key or info["nue"]["api_key"],
                "webhook_secret": info["nue"]["webhook_secret"]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class TestReconcileCommand:
    def test_reports_drift_and_exits_5(self, tmp_path: Path) -> None:
        """`reconcile --json` names the account whose MRR Salesforce lacks, exits 5, and writes the report file."""
        from revdaemon.sandbox.runner import create_sandbox

        box = create_sandbox(key_dir=tmp_path / "keys", seed=4).start_threads()
        try:
            customer = box.nue.scenario.create_customer(0)
            box.nue.scenario.create_and_activate_order(customer["id"], opportunity=0)
            path = sandbox_config(box, tmp_path)
            result = subprocess.run([sys.executable, "-m", "revdaemon.cli", "reconcile", "--json", "--config",
                                     str(path)], capture_output=True, text=True)
            assert result.returncode == 5, result.stderr[-2000:]
            report = json.loads(result.stdout)
            [row] = [r for r in report["rows"] if r["customer_id"] == customer["id"]]
            assert row["drift"] == "salesforce_differs" and row["repairable"] is True
            assert (tmp_path / "state" / "reconciliation.json").exists()
        finally:
            box.close()


class TestOnlineCheck:
    def test_check_online_logs_in_and_finds_missing_fields(self, tmp_path: Path) -> None:
        """`check --online` logs in to both simulators; with a mapped field removed it names it and exits 4."""
        from revdaemon.sandbox.runner import create_sandbox

        box = create_sandbox(key_dir=tmp_path / "keys", seed=2).start_threads()
        try:
            path = sandbox_config(box, tmp_path)
            command = [sys.executable, "-m", "revdaemon.cli", "check", "--online", "--json", "--config", str(path)]
            ok = subprocess.run(command, capture_output=True, text=True)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            online = json.loads(ok.stdout)["online"]
            assert {key: online[key] for key in ("salesforce", "nue", "missing_fields", "ok")} == {
                "salesforce": "ok", "nue": "ok", "missing_fields": {}, "ok": True}
            assert [line["name"] for line in online["checks"] if not line["ok"]] == []
            box.salesforce.remove_field("Opportunity", "Nue_Order_Id__c")
            drifted = subprocess.run(command, capture_output=True, text=True)
            assert drifted.returncode == 4
            missing = json.loads(drifted.stdout)["online"]["missing_fields"]
            assert missing["closed_won_to_order"] == {"Opportunity": ["Nue_Order_Id__c"]}
        finally:
            box.close()

    def test_refused_credentials_are_one_line_each_with_the_url(self, tmp_path: Path) -> None:
        """`check --online` with keys both simulators refuse: one line per API naming it, its URL and the
        reason, exit 4, and no traceback."""
        from revdaemon.sandbox.runner import create_sandbox

        box = create_sandbox(key_dir=tmp_path / "keys", seed=2).start_threads()
        try:
            info = box.info()
            path = sandbox_config(box, tmp_path, client_id="not-the-consumer-key", api_key="not-the-api-key")
            command = [sys.executable, "-m", "revdaemon.cli", "check", "--online", "--config", str(path)]
            refused = subprocess.run(command, capture_output=True, text=True)
        finally:
            box.close()
        assert refused.returncode == 4, refused.stdout + refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.startswith("revdaemon: ")]
        assert [line.split(" at ")[0] for line in lines] == ["revdaemon: Salesforce", "revdaemon: Nue"]
        assert f"Salesforce at {info['salesforce']['login_url']} refused the credentials: " in lines[0]
        assert f"Nue at {info['nue']['url']} refused the credentials: " in lines[1]
        assert "Traceback" not in refused.stdout + refused.stderr


class TestBackfillCommand:
    def test_backfill_stores_each_change_once(self, tmp_path: Path) -> None:
        """Deals closed since a day are stored as events; a second backfill adds nothing (keys dedupe)."""
        from datetime import UTC, datetime, timedelta

        from revdaemon.sandbox.runner import create_sandbox

        box = create_sandbox(key_dir=tmp_path / "keys", seed=5).start_threads()
        try:
            for opportunity in box.salesforce.seed_data.opportunities[:2]:
                box.salesforce.close_won(opportunity.id)
            path = sandbox_config(box, tmp_path)
            since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
            command = [sys.executable, "-m", "revdaemon.cli", "backfill", "--since", since, "--flow",
                       "closed_won_to_order", "--json", "--config", str(path)]
            first = subprocess.run(command, capture_output=True, text=True)
            assert first.returncode == 0, first.stderr[-2000:]
            assert json.loads(first.stdout)["stored"] == {"salesforce:Opportunity:closed_won": 2}
            second = subprocess.run(command, capture_output=True, text=True)
            assert json.loads(second.stdout)["stored"] == {"salesforce:Opportunity:closed_won": 0}
        finally:
            box.close()


class TestReplayDryRun:
    def test_dry_run_prints_the_field_changes_and_sends_nothing(self, tmp_path: Path) -> None:
        """`dead-letters replay N --dry-run` prints what would be written; no write reaches Salesforce and the
        dead letter stays."""
        from datetime import timedelta

        import anyio

        from revdaemon.sandbox.runner import create_sandbox
        from revdaemon.store import open_store
        from revdaemon.store.records import NewDeadLetter, NewEvent

        box = create_sandbox(key_dir=tmp_path / "keys", seed=4).start_threads()
        try:
            customer = box.nue.scenario.create_customer(0)
            box.nue.scenario.create_and_activate_order(customer["id"], opportunity=0)
            path = sandbox_config(box, tmp_path)

            async def dead_letter() -> int:
                store = await open_store(tmp_path / "state" / "revdaemon.sqlite3")
                try:
                    await store.add_events([NewEvent(source="nue_webhook", key="nue:x", type="subscription.updated",
                                                     payload={"data": {"customerId": customer["id"]}})])
                    [event] = await store.claim_events(worker="w", limit=1, lease=timedelta(minutes=1))
                    return await store.dead_letter_event(event.id, NewDeadLetter(
                        system="salesforce", operation="update Account", error="boom"))
                finally:
                    await store.close()

            letter = anyio.run(dead_letter)
            box.salesforce.log.clear()
            result = subprocess.run([sys.executable, "-m", "revdaemon.cli", "dead-letters", "replay", str(letter),
                                     "--dry-run", "--config", str(path)], capture_output=True, text=True)
            assert result.returncode == 0, result.stderr[-2000:]
            assert "MRR__c" in result.stdout and "nothing was sent" in result.stdout
            assert [r for r in box.salesforce.log.writes() if r.path.startswith("/services/data")] == []
            listed = subprocess.run([sys.executable, "-m", "revdaemon.cli", "dead-letters", "list", "--json",
                                     "--config", str(path)], capture_output=True, text=True)
            assert len(json.loads(listed.stdout)) == 1
        finally:
            box.close()


class TestBackfillDryRun:
    def test_dry_run_plans_every_change_in_a_few_reads_and_writes_nothing(self, tmp_path: Path) -> None:
        """`backfill --dry-run` reads the changes once, plans them together (batched lookups), and neither
        stores an event nor sends a write."""
        from revdaemon.sandbox.runner import create_sandbox

        box = create_sandbox(key_dir=tmp_path / "keys", seed=4).start_threads()
        try:
            for index in range(6):
                customer = box.nue.scenario.create_customer(index)
                box.nue.scenario.create_and_activate_order(customer["id"], opportunity=index)
            path = sandbox_config(box, tmp_path)
            subprocess.run([sys.executable, "-m", "revdaemon.cli", "check", "--config", str(path)],
                           capture_output=True, check=False)
            box.salesforce.log.clear()
            box.nue.log.clear()
            result = subprocess.run([sys.executable, "-m", "revdaemon.cli", "backfill", "--since", "2000-01-01",
                                     "--flow", "subscription_status", "--dry-run", "--json", "--config", str(path)],
                                    capture_output=True, text=True)
            assert result.returncode == 0, result.stderr[-2000:]
            preview = json.loads(result.stdout.splitlines()[-1])
            planned = [e for e in preview["events"] if e["writes"]]
            assert len(planned) >= 6 and all(w["target"].startswith("Account ") for e in planned for w in e["writes"])
            assert [r for r in box.salesforce.log.writes() if r.path.startswith("/services/data")] == []
            assert [r for r in box.nue.log.writes() if r.path != "/async/graphql"] == []
            reads = box.salesforce.log.count(path_prefix="/services/data") + box.nue.log.count()
            assert reads <= 10, reads
        finally:
            box.close()
