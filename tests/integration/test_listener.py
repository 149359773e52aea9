"""The webhook listener over real loopback sockets: every answer it gives, and what it stores."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from revdaemon.config import ListenerSettings, NueSettings, WebhookAuth
from revdaemon.flows.registry import INTERNAL_TYPES, WEBHOOK_TYPES
from revdaemon.listener.app import ListenerApp
from revdaemon.listener.group_commit import GroupCommitter
from revdaemon.listener.http import HttpServer
from revdaemon.listener.signature import sign
from revdaemon.ops.health import Health
from revdaemon.store import Store, open_store
from revdaemon.store.states import EventStatus

pytestmark = pytest.mark.anyio

SECRET = "whsec-test-secret"
TOKEN = "path-token-0123456789abcdef"


@dataclass
class Running:
    url: str
    port: int
    store: Store
    health: Health
    app: ListenerApp
    committer: GroupCommitter


async def start(tmp_path: Path, *, nue: NueSettings | None = None, listener: ListenerSettings | None = None,
                store: Store | None = None) -> AsyncIterator[Running]:
    """The listener on a loopback port, with its own store in `tmp_path` unless given one (left open)."""
    own = store is None
    store = store or await open_store(tmp_path / "db.sqlite3")
    health = Health()
    committer = GroupCommitter(store)
    app = ListenerApp(nue or NueSettings(api_key="k", webhook_secret=SECRET), committer, store, health)
    server = HttpServer(listener or ListenerSettings(port=0, header_timeout_seconds=0.5, body_timeout_seconds=0.5,
                                                     keepalive_timeout_seconds=5, max_body_bytes=2048), app)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(committer.run)
            port = await tg.start(server.serve)
            yield Running(url=f"http://127.0.0.1:{port}", port=port, store=store, health=health, app=app,
                          committer=committer)
            tg.cancel_scope.cancel()
    finally:
        if own:
            await store.close()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async for value in start(tmp_path):
        yield value


def notification(event_id: str | None = "evt-1", **data: object) -> bytes:
    document: dict[str, object] = {"type": "order.activated", "createdDate": "2026-01-01T00:00:00Z",
                                   "data": {"id": "o-1", "lastModifiedDate": "2026-01-01T00:00:00Z", **data}}
    if event_id is not None:
        document["id"] = event_id
    return json.dumps(document).encode()


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    return {"content-type": "application/json", "nue-signature": sign(body, secret, int(at or time.time()))}


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url, content=body, headers=headers)


class TestAccepting:
    async def test_signed_webhook_is_stored_then_acknowledged(self, running: Running) -> None:
        """A correctly signed notification is in the inbox by the time 202 arrives."""
        body = notification()
        response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.status_code == 202 and response.json()["key"] == "nue:evt-1"
        stored = await running.store.find_event("nue:evt-1")
        assert stored is not None and stored.type == "order.activated" and stored.status is EventStatus.RECEIVED

    async def test_duplicate_returns_200_and_stores_nothing(self, running: Running) -> None:
        """The same event twice is acknowledged twice and stored once."""
        body = notification()
        assert (await post(f"{running.url}/webhooks/nue", body, signed(body))).status_code == 202
        again = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert (await running.store.queue_depths())[EventStatus.RECEIVED] == 1

    async def test_without_an_id_the_key_is_type_resource_and_modified_date(self, running: Running) -> None:
        """An envelope without an id is keyed by (type, resource id, lastModifiedDate)."""
        body = notification(event_id=None)
        response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.json()["key"] == "nue:order.activated:o-1:2026-01-01T00:00:00Z"

    async def test_concurrent_requests_share_commits(self, running: Running) -> None:
        """A burst of concurrent webhooks is stored whole, in fewer transactions than requests."""
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50)) as client:
            async def one(i: int) -> None:
                body = notification(event_id=f"evt-{i}")
                response = await client.post(f"{running.url}/webhooks/nue", content=body, headers=signed(body))
                assert response.status_code == 202

            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(one, i)
        assert (await running.store.queue_depths())[EventStatus.RECEIVED] == 200
        assert running.committer.events == 200 and running.committer.commits < 200

    async def test_keep_alive_serves_several_requests_on_one_connection(self, running: Running) -> None:
        """Two requests over one kept-alive connection both succeed."""
        stream = await anyio.connect_tcp("127.0.0.1", running.port)
        async with stream:
            for i in range(2):
                body = notification(event_id=f"ka-{i}")
                head = "".join(f"{k}: {v}\r\n" for k, v in signed(body).items())
                await stream.send(f"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
                                  f"{head}\r\n".encode() + body)
                reply = await stream.receive()
                assert reply.startswith(b"HTTP/1.1 202")
        assert (await running.store.queue_depths())[EventStatus.RECEIVED] == 2

    async def test_healthz(self, running: Running) -> None:
        """/healthz reports live and ready while the store is writable."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{running.url}/healthz")
        assert response.status_code == 200
        assert response.json() == {"live": True, "ready": True, "store": True, "last_polls": {}, "daemon": None,
                                   "pollers_stopped": [], "streams": {}}
        running.health.poll_succeeded("nue:Subscription")
        async with httpx.AsyncClient() as client:
            polled = (await client.get(f"{running.url}/healthz")).json()["last_polls"]
        assert polled["nue:Subscription"] is not None

    async def test_head_gets_the_headers_without_a_body(self, running: Running) -> None:
        """HEAD /healthz is answered with GET's status and length and no body (it used to get no answer at all),
        and the connection serves the next request."""
        async with httpx.AsyncClient() as client:
            head = await client.head(f"{running.url}/healthz")
            get = await client.get(f"{running.url}/healthz")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))


class TestRefusing:
    @pytest.mark.parametrize(
        ("body", "error"),
        [
            (b"{not json", "malformed JSON"),
            (b"[1, 2]", "JSON object"),
            (json.dumps({"id": "e", "data": {"id": "x"}}).encode(), "type"),
            (json.dumps({"id": "e", "type": "order.activated"}).encode(), "data"),
            (json.dumps({"id": "e", "type": "order.activated", "data": {}}).encode(), "data.id"),
        ],
    )
    async def test_malformed_body_is_400_and_not_stored(self, running: Running, body: bytes, error: str) -> None:
        """A body that is not a usable notification is refused with the reason and never stored."""
        response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.status_code == 400 and error in response.json()["error"]
        assert sum((await running.store.queue_depths()).values()) == 0

    @pytest.mark.parametrize(
        ("headers", "reason"),
        [
            ({"content-type": "application/json"}, "missing signature"),
            ({"content-type": "application/json", "nue-signature": "garbage"}, "malformed"),
            ("wrong-secret", "does not match"),
            ("expired", "outside tolerance"),
        ],
    )
    async def test_bad_signature_is_401(self, running: Running, headers: object, reason: str) -> None:
        """Missing, malformed, wrong or expired signatures are refused and nothing is stored."""
        body = notification()
        if headers == "wrong-secret":
            headers = signed(body, secret="other-secret")
        elif headers == "expired":
            headers = signed(body, at=time.time() - 3600)
        response = await post(f"{running.url}/webhooks/nue", body, headers)  # type: ignore[arg-type]
        assert response.status_code == 401 and reason in response.json()["error"]
        assert sum((await running.store.queue_depths()).values()) == 0

    async def test_tampered_body_is_401(self, running: Running) -> None:
        """A signature over another body does not authenticate this one."""
        headers = signed(notification())
        response = await post(f"{running.url}/webhooks/nue", notification(amount=999999), headers)
        assert response.status_code == 401

    async def test_non_ascii_signature_is_401_not_500(self, running: Running) -> None:
        """A signature header with characters no HMAC can have is refused, not a crash."""
        body = notification()
        stream = await anyio.connect_tcp("127.0.0.1", running.port)
        async with stream:
            await stream.send(b"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                              b"nue-signature: t=" + str(int(time.time())).encode() + b",v1=\xc3\xa9\xc3\xa9\r\n"
                              b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            with anyio.fail_after(5):
                reply = await stream.receive()
        assert reply.startswith(b"HTTP/1.1 401")

    async def test_content_length_with_transfer_encoding_is_400_and_closed(self, running: Running) -> None:
        """Both framings at once (a request-smuggling shape, RFC 9112 §6.3): refused, and the connection closed
        after the answer rather than reading on by one of them."""
        body = notification()
        chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        head = "".join(f"{k}: {v}\r\n" for k, v in signed(body).items())
        stream = await anyio.connect_tcp("127.0.0.1", running.port)
        received = b""
        async with stream:
            await stream.send(f"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\n{head}content-length: {len(chunked)}\r\n"
                              "transfer-encoding: chunked\r\n\r\n".encode() + chunked)
            with anyio.fail_after(5), contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    received += await stream.receive()
        assert received.startswith(b"HTTP/1.1 400") and b"connection: close" in received
        assert sum((await running.store.queue_depths()).values()) == 0

    async def test_unstorable_id_fails_alone(self, running: Running) -> None:
        """An envelope id with an unpaired surrogate is refused with 400; its concurrent neighbour is stored."""
        bad = b'{"id": "\\ud800", "type": "order.activated", "data": {"id": "o-1"}}'
        good = notification(event_id="good-1")
        async with httpx.AsyncClient() as client:
            responses = {}

            async def send(name: str, body: bytes) -> None:
                responses[name] = await client.post(f"{running.url}/webhooks/nue", content=body, headers=signed(body))

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "bad", bad)
                tg.start_soon(send, "good", good)
        assert responses["bad"].status_code == 400 and responses["good"].status_code == 202

    async def test_oversized_head_is_431(self, running: Running) -> None:
        """A request head over the cap is refused even when it arrives in one read."""
        stream = await anyio.connect_tcp("127.0.0.1", running.port)
        async with stream:
            await stream.send(b"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000 +
                              b"\r\ncontent-length: 0\r\n\r\n")
            with anyio.fail_after(5):
                reply = await stream.receive()
        assert reply.startswith(b"HTTP/1.1 431")

    async def test_unknown_path_is_404(self, running: Running) -> None:
        """Only the webhook and health paths exist."""
        body = notification()
        assert (await post(f"{running.url}/webhooks/other", body, signed(body))).status_code == 404
        assert (await post(f"{running.url}/webhooks/nue/some-token", body, signed(body))).status_code == 404

    async def test_wrong_method_is_405(self, running: Running) -> None:
        """GET on the webhook path is refused with Allow: POST."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{running.url}/webhooks/nue")
        assert response.status_code == 405 and response.headers["allow"] == "POST"

    async def test_wrong_content_type_is_415(self, running: Running) -> None:
        """A signed form post is refused: only JSON is accepted."""
        body = notification()
        headers = {**signed(body), "content-type": "application/x-www-form-urlencoded"}
        assert (await post(f"{running.url}/webhooks/nue", body, headers)).status_code == 415

    async def test_oversized_body_is_413(self, running: Running) -> None:
        """A Content-Length over the cap is refused before the body is read."""
        body = notification(padding="x" * 4096)
        response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.status_code == 413

    async def test_oversized_chunked_body_is_413(self, running: Running) -> None:
        """A chunked body is cut off at the cap, and the client still reads the 413."""
        stream = await anyio.connect_tcp("127.0.0.1", running.port)
        async with stream:
            chunk = b"3e8\r\n" + b"x" * 1000 + b"\r\n"
            await stream.send(b"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                              b"transfer-encoding: chunked\r\n\r\n" + chunk * 5)
            with anyio.fail_after(5):
                reply = await stream.receive()
        assert reply.startswith(b"HTTP/1.1 413")

    @pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be"])
    async def test_a_body_not_utf8_is_400(self, running: Running, encoding: str) -> None:
        """A signed, well-formed envelope in UTF-16 or UTF-32 is refused: webhook bodies are UTF-8."""
        body = notification().decode().encode(encoding)
        response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.status_code == 400 and "must be UTF-8" in response.json()["error"]
        assert sum((await running.store.queue_depths()).values()) == 0

    @pytest.mark.parametrize("event_type", sorted(INTERNAL_TYPES))
    async def test_an_internal_type_is_400_naming_the_accepted_ones(self, running: Running, event_type: str) -> None:
        """A type only revdaemon's own sources store is refused, signed or not, and the answer lists Nue's types."""
        body = json.dumps({"id": "evt-int", "type": event_type, "data": {"id": "x-1"}}).encode()
        with capture_logs() as logs:
            response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.status_code == 400 and "revdaemon's own" in response.json()["error"]
        assert all(t in response.json()["error"] for t in WEBHOOK_TYPES)
        assert sum((await running.store.queue_depths()).values()) == 0
        assert [entry["event"] for entry in logs] == ["webhook_refused"]

    async def test_a_repair_flag_is_stored_as_sent_and_logged(self, running: Running) -> None:
        """A notification flagged `repair` is still a hint: stored as sent (the flow ignores the flag), and logged."""
        document = {"id": "evt-flag", "type": "subscription.updated", "repair": True, "data": {"id": "s-1"}}
        body = json.dumps(document).encode()
        with capture_logs() as logs:
            response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.status_code == 202
        stored = await running.store.find_event("nue:evt-flag")
        assert stored is not None and stored.source == "nue_webhook" and stored.payload == document
        [flagged] = [entry for entry in logs if entry["event"] == "webhook_flag_ignored"]
        assert flagged["flags"] == ["repair"] and flagged["log_level"] == "warning"

    async def test_shutting_down_is_503(self, running: Running) -> None:
        """While the daemon stops, new webhooks are told to come back later."""
        running.health.shutting_down = True
        body = notification()
        response = await post(f"{running.url}/webhooks/nue", body, signed(body))
        assert response.status_code == 503 and response.headers["retry-after"] == "5"


class TestSlowAndMany:
    async def test_slow_headers_are_cut_off(self, running: Running) -> None:
        """A client that never finishes its headers is disconnected after the header timeout."""
        stream = await anyio.connect_tcp("127.0.0.1", running.port)
        async with stream:
            await stream.send(b"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\n")
            with anyio.fail_after(5):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)):
                    while True:
                        if not await stream.receive():
                            raise anyio.EndOfStream

    async def test_slow_body_is_cut_off(self, running: Running) -> None:
        """A client that stops sending its body gets 408 and the connection closes."""
        stream = await anyio.connect_tcp("127.0.0.1", running.port)
        async with stream:
            await stream.send(b"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                              b"content-length: 100\r\n\r\n{\"id\":")
            with anyio.fail_after(5):
                reply = await stream.receive()
        assert reply.startswith(b"HTTP/1.1 408")

    async def test_connections_over_the_cap_get_503(self, tmp_path: Path) -> None:
        """With max_connections=2, a third concurrent connection is refused with 503."""
        settings = ListenerSettings(port=0, max_connections=2, header_timeout_seconds=5,
                                    keepalive_timeout_seconds=5)
        async for running in start(tmp_path, listener=settings):
            first = await anyio.connect_tcp("127.0.0.1", running.port)
            second = await anyio.connect_tcp("127.0.0.1", running.port)
            await anyio.sleep(0.1)
            third = await anyio.connect_tcp("127.0.0.1", running.port)
            with anyio.fail_after(5):
                reply = await third.receive()
            assert reply.startswith(b"HTTP/1.1 503")
            for stream in (first, second, third):
                await stream.aclose()


class TestPathToken:
    async def test_path_token_mode(self, tmp_path: Path) -> None:
        """In path-token mode the right token is accepted, a wrong or missing one refused."""
        nue = NueSettings(api_key="k", webhook_auth=WebhookAuth.PATH_TOKEN, webhook_path_token=TOKEN)
        async for running in start(tmp_path, nue=nue):
            body = notification()
            json_only = {"content-type": "application/json"}
            assert (await post(f"{running.url}/webhooks/nue/{TOKEN}", body, json_only)).status_code == 202
            assert (await post(f"{running.url}/webhooks/nue/wrong-token-0000000", body, json_only)).status_code == 401
            assert (await post(f"{running.url}/webhooks/nue", body, json_only)).status_code == 401
