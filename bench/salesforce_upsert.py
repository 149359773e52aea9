"""Records per second for a 10,000-record upsert through sObject Collections against the sandbox, and the
API calls it used (expected: ceil(10000/200) = 50, plus one login).

The sandbox runs in its own process; the client is revdaemon's SalesforceClient.
Usage: python bench/salesforce_upsert.py [--records 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import subprocess
import sys
import tempfile
import time

import httpx

from revdaemon.config import ApiRate, SalesforceAuth, SalesforceSettings
from revdaemon.connectors.salesforce import SalesforceClient
from revdaemon.limits import ApiLimiter, DailyBudget, RetryPolicy


async def run(info: dict[str, str], records: int) -> dict[str, float]:
    settings = SalesforceSettings(login_url=info["login_url"], auth=SalesforceAuth.JWT, client_id=info["consumer_key"],
                                  username=info["username"], private_key_file=info["private_key_file"])
    async with httpx.AsyncClient() as http:
        client = SalesforceClient(settings, http, limiter=ApiLimiter(ApiRate(requests_per_second=100, burst=100)),
                                  budget=DailyBudget(share=1.0), retry=RetryPolicy())
        await client.auth.token()
        rows = [{"Nue_Customer_Id__c": f"bench-{i:06d}", "Name": f"Bench {i}", "MRR__c": i % 1000}
                for i in range(records)]
        started = time.perf_counter()
        results = await client.upsert_many("Account", "Nue_Customer_Id__c", rows)
        elapsed = time.perf_counter() - started
    failed = sum(not r.ok for r in results)
    return {"records": records, "seconds": elapsed, "records_per_second": records / elapsed,
            "api_calls": client.calls, "logins": client.auth.logins, "expected_calls": math.ceil(records / 200),
            "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as keys:
        sandbox = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--key-dir", keys],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert sandbox.stdout is not None
            info = json.loads(sandbox.stdout.readline())["salesforce"]
            figures = asyncio.run(run(info, args.records))
        finally:
            sandbox.send_signal(signal.SIGTERM)
            sandbox.wait(timeout=15)
    print(f"Collections upsert of {figures['records']:.0f} records: {figures['records_per_second']:.0f} records/s "
          f"({figures['seconds']:.2f} s), {figures['api_calls']:.0f} API calls + {figures['logins']:.0f} login "
          f"(expected {figures['expected_calls']:.0f}), {figures['failed']:.0f} failed")
    print(json.dumps({"benchmark": "salesforce_upsert", "results": figures}))
    if figures["api_calls"] != figures["expected_calls"] or figures["failed"]:
        sys.exit("the call count or the results are not what batching promises")


if __name__ == "__main__":
    main()
