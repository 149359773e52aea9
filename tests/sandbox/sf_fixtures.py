"""Helpers for the Salesforce simulator tests: a running simulator, tokens, and a requests session that
lets simple-salesforce talk plain HTTP to it (salesforce-api.md §6.3 option b)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import requests

from revdaemon.sandbox.salesforce import SalesforceSim, SalesforceSimSettings, generate_rsa_keypair
from revdaemon.sandbox.server import ServerThread

_KEYS: tuple[str, str] | None = None


def keypair() -> tuple[str, str]:
    """One RSA key pair per test run (generation is the slow part)."""
    global _KEYS
    if _KEYS is None:
        _KEYS = generate_rsa_keypair()
    return _KEYS


class FakeClock:
    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class SimulatorSession(requests.Session):
    """Sends every *.salesforce.com URL and https://<simulator> to the simulator over plain HTTP."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base = urlsplit(base_url)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(url if isinstance(url, str) else url.decode())
        host = parts.hostname or ""
        if parts.netloc == self.base.netloc or host.endswith("salesforce.com"):
            url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


@dataclass
class Running:
    sim: SalesforceSim
    url: str
    http: httpx.Client

    def token(self) -> str:
        basic = base64.b64encode(
            f"{self.sim.settings.consumer_key}:{self.sim.settings.consumer_secret}".encode()).decode()
        response = self.http.post("/services/oauth2/token", data={"grant_type": "client_credentials"},
                                  headers={"Authorization": f"Basic {basic}"})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def api(self, token: str | None = None) -> httpx.Client:
        """An httpx client with a bearer token on the v59.0 data API."""
        return httpx.Client(base_url=f"{self.url}/services/data/v59.0",
                            headers={"Authorization": f"Bearer {token or self.token()}"}, timeout=10)


@contextmanager
def running(settings: SalesforceSimSettings | None = None) -> Iterator[Running]:
    settings = settings or SalesforceSimSettings(jwt_public_key_pem=keypair()[1])
    sim = SalesforceSim(settings)
    with ServerThread(sim.app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield Running(sim=sim, url=server.url, http=http)
