"""How many simple requests per second each simulator answers on loopback (target: >= 1,000).

The sandbox runs in its own process (`revdaemon sandbox --json`), the load comes from client processes
with keep-alive connections, so the figure is the simulators' throughput on this machine, clients'
CPU included. Usage: python bench/sandbox_throughput.py [--seconds 5] [--clients 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time

import httpx


def _hammer(url: str, headers: dict[str, str], seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    count = errors = 0
    latencies: list[float] = []
    with httpx.Client(headers=headers) as client:
        deadline = time.perf_counter() + seconds
        while (now := time.perf_counter()) < deadline:
            response = client.get(url)
            latencies.append(time.perf_counter() - now)
            count += 1
            errors += response.status_code != 200
    out.put((count, errors, latencies))


def measure(name: str, url: str, headers: dict[str, str], seconds: float, clients: int) -> dict[str, float]:
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    workers = [multiprocessing.Process(target=_hammer, args=(url, headers, seconds, queue)) for _ in range(clients)]
    for worker in workers:
        worker.start()
    results = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    total = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    figures = {"requests_per_second": total / seconds, "errors": errors, "p50_ms": p50, "p99_ms": p99}
    print(f"{name:<34} {figures['requests_per_second']:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
          f"errors {errors}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as keys:
        sandbox = subprocess.Popen([sys.executable, "-m", "revdaemon.cli", "sandbox", "--json", "--key-dir", keys],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert sandbox.stdout is not None
            info = json.loads(sandbox.stdout.readline())
            sf, nue = info["salesforce"], info["nue"]
            token = httpx.post(f"{sf['login_url']}/services/oauth2/token",
                               data={"grant_type": "client_credentials", "client_id": sf["consumer_key"],
                                     "client_secret": sf["consumer_secret"]}).json()
            sf_headers = {"Authorization": f"Bearer {token['access_token']}"}
            accounts = httpx.get(f"{sf['url']}/services/data/v62.0/query",
                                 params={"q": "SELECT Id FROM Account LIMIT 1"}, headers=sf_headers).json()
            account_id = accounts["records"][0]["Id"]
            customer = httpx.post(f"{nue['url']}/__sandbox/scenario/create-customer", json={"account": 0}).json()
            customer_id = customer["result"]["id"]
            nue_headers = {"nue-api-key": nue["api_key"]}
            # The simulator's default daily allocation is a Developer Edition's 15,000 requests: at over 1,500
            # requests/s the measuring alone spends it, and the rest are refused (REQUEST_LIMIT_EXCEEDED). This
            # measures the simulator's speed, not the allocation.
            httpx.post(f"{sf['url']}/__sandbox/usage", json={"max": 10_000_000}, timeout=30).raise_for_status()
            print(f"sandbox throughput, {args.clients} client processes x {args.seconds:g} s, keep-alive")
            results = {
                "salesforce_get_record": measure(
                    "Salesforce GET sobjects/Account/{id}",
                    f"{sf['url']}/services/data/v62.0/sobjects/Account/{account_id}", sf_headers,
                    args.seconds, args.clients),
                "nue_get_customer": measure(
                    "Nue GET /customers/{id}", f"{nue['url']}/customers/{customer_id}", nue_headers,
                    args.seconds, args.clients),
            }
            print(json.dumps({"benchmark": "sandbox_throughput", "results": results}))
            if any(r["errors"] for r in results.values()):
                sys.exit("some requests failed: the figures above are not valid")
        finally:
            sandbox.send_signal(signal.SIGTERM)
            sandbox.wait(timeout=15)


if __name__ == "__main__":
    main()
