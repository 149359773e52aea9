"""The README's nginx snippet, run as written in front of a running daemon: a signed webhook reaches the inbox over
TLS, `check --online --public-url`'s signed ping is answered by this daemon through it, and nothing else is
exposed."""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import shutil
import socket
import ssl
import time
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from revdaemon.engine.supervisor import Daemon, default_flows, run_daemon
from revdaemon.listener.signature import sign
from revdaemon.sandbox.runner import create_sandbox
from revdaemon.setup.golive import webhook_check
from tests.integration.engine_fixtures import as_bound, daemon_settings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def readme_snippet() -> str:
    """The README's nginx server block (the fenced block that starts with its file's name)."""
    text = (ROOT / "README.md").read_text()
    [block] = re.findall(r"```nginx\n(# /etc/nginx/sites-available/revdaemon.*?)```", text, re.S)
    return block


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nginx_config(directory: Path, *, listen: int, upstream: int, cert: Path, key: Path) -> Path:
    """The snippet with this test's port, certificate and upstream, inside the least nginx.conf that runs it."""
    server = (readme_snippet()
              .replace("listen 443 ssl;", f"listen 127.0.0.1:{listen} ssl;")
              .replace("/etc/letsencrypt/live/sync.example.com/fullchain.pem", str(cert))
              .replace("/etc/letsencrypt/live/sync.example.com/privkey.pem", str(key))
              .replace("127.0.0.1:8787", f"127.0.0.1:{upstream}"))
    temp = "\n".join(f"    {kind}_temp_path {directory / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = directory / "nginx.conf"
    config.write_text(f"""daemon off;
worker_processes 1;
pid {directory / 'nginx.pid'};
error_log {directory / 'error.log'} warn;
events {{}}
http {{
    access_log off;
{temp}
{server}
}}
""")
    return config


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian's nginx-light; .ci/run installs it)")
async def test_the_readme_nginx_snippet_forwards_the_webhook_and_health_and_nothing_else(tmp_path: Path) -> None:
    assert NGINX is not None
    box = create_sandbox(key_dir=tmp_path / "keys", seed=3).start_threads()
    cert, key = self_signed(tmp_path)
    listen = free_port()
    public = f"https://127.0.0.1:{listen}"
    seen: dict[str, object] = {}
    try:
        # /metrics on the webhook port: revdaemon itself would answer it, so a 404 through the proxy is nginx's.
        settings = daemon_settings(box, tmp_path, REVDAEMON_METRICS__LISTEN="webhook")
        assert settings.nue.webhook_secret is not None
        secret = settings.nue.webhook_secret.get_secret_value()

        async def on_ready(daemon: Daemon) -> None:
            config = nginx_config(tmp_path, listen=listen, upstream=daemon.listener_port, cert=cert, key=key)
            proxy = await anyio.open_process([NGINX, "-c", str(config), "-p", str(tmp_path)])
            try:
                async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as http:
                    deadline = time.monotonic() + 10
                    while True:
                        try:
                            await http.get(f"{public}/healthz")
                            break
                        except httpx.ConnectError:
                            assert proxy.returncode is None, (tmp_path / "error.log").read_text()
                            assert time.monotonic() < deadline, "nginx did not start"
                            await anyio.sleep(0.1)
                    body = json.dumps({"id": "evt-proxied", "type": "customer.updated",
                                       "data": {"id": "cust-1"}}).encode()
                    signature = sign(body, secret, int(time.time()))
                    sent = await http.post(f"{public}/webhooks/nue", content=body,
                                           headers={"Nue-Signature": signature, "Content-Type": "application/json"})
                    seen["webhook"] = sent.status_code
                    unsigned = await http.post(f"{public}/webhooks/nue", content=body,
                                               headers={"Content-Type": "application/json"})
                    seen["unsigned"] = unsigned.status_code
                    seen["elsewhere"] = (await http.get(f"{public}/metrics")).status_code
                    seen["direct"] = (await http.get(f"http://127.0.0.1:{daemon.listener_port}/metrics")).status_code
                    seen["event"] = await daemon.store.find_event("nue:evt-proxied")
                    seen["check"] = await webhook_check(as_bound(settings, daemon), default_flows(settings), public,
                                                        http)
                    seen["types"] = {event.type for event in await daemon.store.list_events(limit=100)}
            finally:
                proxy.terminate()
                with anyio.fail_after(10):
                    await proxy.wait()

        with anyio.fail_after(60):
            await run_daemon(settings, on_ready=on_ready, stop_after=0.1, polling=False)
    finally:
        box.close()
    assert seen["webhook"] in (200, 202) and seen["event"] is not None
    assert seen["unsigned"] == 401  # refused by revdaemon through the proxy, as directly
    assert seen["direct"] == 200 and seen["elsewhere"] == 404  # only the webhook and /healthz face the internet
    check = seen["check"]
    assert getattr(check, "ok", False), check  # its signed ping went through the proxy to this daemon
    assert seen["types"] == {"customer.updated"}  # and was answered, not stored
