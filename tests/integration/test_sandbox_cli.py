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
