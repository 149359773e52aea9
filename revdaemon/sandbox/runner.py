"""Both simulators together, as `revdaemon sandbox` and the demo run them.

One seed builds one catalog that both load (a Nue tenant connected to Salesforce shares ids); a fresh
RSA key pair is written for the JWT bearer flow; `info()` is what a client needs to connect. The Salesforce
org's Pub/Sub API (gRPC, plaintext) has a port of its own, held from creation so `info()` can name it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from revdaemon.sandbox.nue import NueSim, NueSimSettings
from revdaemon.sandbox.salesforce import SalesforceSim, SalesforceSimSettings, generate_rsa_keypair
from revdaemon.sandbox.salesforce.pubsub import PubSubServerThread, reserve_port, serve_pubsub
from revdaemon.sandbox.seed import build_seed
from revdaemon.sandbox.server import ServerThread, bind, serve, url_of


@dataclass
class Sandbox:
    """Both simulators, their bound sockets and the credentials to reach them."""

    salesforce: SalesforceSim
    nue: NueSim
    private_key_path: Path
    seed: int
    sf_socket: socket.socket
    nue_socket: socket.socket
    pubsub_socket: socket.socket  # holds the Pub/Sub port (reserve_port) until grpc binds it
    threads: list[ServerThread | PubSubServerThread] = field(default_factory=list)

    @property
    def salesforce_url(self) -> str:
        return url_of(self.sf_socket)

    @property
    def nue_url(self) -> str:
        return url_of(self.nue_socket)

    @property
    def pubsub_url(self) -> str:
        """host:port of the Pub/Sub API, for a plaintext gRPC channel."""
        host, port = self.pubsub_socket.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def info(self) -> dict[str, Any]:
        sf, nue = self.salesforce.settings, self.nue.settings
        go_live = self.salesforce.seed_data.go_live
        return {
            "seed": self.seed,
            **({"brownfield_won_since": go_live.isoformat()} if go_live else {}),
            "salesforce": {
                "url": self.salesforce_url,
                "login_url": self.salesforce_url,
                "consumer_key": sf.consumer_key,
                "consumer_secret": sf.consumer_secret,
                "username": sf.username,
                "private_key_file": str(self.private_key_path),
                "pubsub_url": self.pubsub_url,
            },
            "nue": {
                "url": self.nue_url,
                "api_key": nue.api_key,
                "webhook_auth": nue.webhook_auth,
                "webhook_secret": nue.webhook_secret,
                "webhook_path_token": nue.webhook_path_token,
                "webhook_targets": list(self.nue.webhooks.targets),
            },
        }

    async def serve(self) -> None:
        """Serve both (and Salesforce's Pub/Sub API) in the current event loop until cancelled."""
        host, port = self.pubsub_socket.getsockname()[:2]
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, self.salesforce.app, self.sf_socket)
            tg.start_soon(serve, self.nue.app, self.nue_socket)
            tg.start_soon(serve_pubsub, self.salesforce.pubsub_service(), host, port)

    def start_threads(self) -> Sandbox:
        """Serve both (and Salesforce's Pub/Sub API) from background threads (for synchronous callers)."""
        for app, sock in ((self.salesforce.app, self.sf_socket), (self.nue.app, self.nue_socket)):
            self.threads.append(ServerThread(app, sock=sock).start())
        host, port = self.pubsub_socket.getsockname()[:2]
        self.threads.append(self.salesforce.serve_pubsub(host, port).start())
        return self

    def close(self) -> None:
        for thread in self.threads:
            thread.stop()
        self.nue.close()
        for sock in (self.sf_socket, self.nue_socket, self.pubsub_socket):
            sock.close()


def create_sandbox(
    *,
    key_dir: Path,
    seed: int = 1,
    host: str = "127.0.0.1",
    sf_port: int = 0,
    nue_port: int = 0,
    pubsub_port: int = 0,
    webhook_targets: list[str] | None = None,
    nue_settings: dict[str, Any] | None = None,
    sf_settings: dict[str, Any] | None = None,
    brownfield: int = 0,
) -> Sandbox:
    """`brownfield`: that many more won deals, most already ordered in Nue (seed.BROWNFIELD_KINDS)."""
    seed_data = build_seed(seed, brownfield=brownfield)
    private_pem, public_pem = generate_rsa_keypair()
    key_dir.mkdir(parents=True, exist_ok=True)
    private_key_path = key_dir / "sandbox-jwt-private.pem"
    # Written 0600 from the start: it is a key, even if only the sandbox trusts it.
    fd = os.open(private_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(private_pem)
    salesforce = SalesforceSim(SalesforceSimSettings(jwt_public_key_pem=public_pem, **(sf_settings or {})), seed_data)
    nue = NueSim(NueSimSettings(seed=seed, webhook_targets=list(webhook_targets or []), **(nue_settings or {})),
                 seed_data)
    return Sandbox(salesforce=salesforce, nue=nue, private_key_path=private_key_path, seed=seed,
                   sf_socket=bind(host, sf_port), nue_socket=bind(host, nue_port),
                   pubsub_socket=reserve_port(host, pubsub_port))
