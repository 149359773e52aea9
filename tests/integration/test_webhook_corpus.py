"""Every case of tests/corpus/webhooks/ and tests/corpus/http/ against the real listener over a real
loopback socket.

One YAML file per case (see tests/corpus/README.md): what is sent, and what must come back. A refused
request is answered with its status and an error that names what is wrong, and leaves the inbox exactly as
it was; an accepted one is stored once, as sent. After every case the listener still stores a good
request. A case with `lie:` also hands the stored event to the flow that would plan it, with what Nue really
says, to show that the body was taken as a hint only. The http/ cases are bytes on the wire (malformed
request lines and framing, slow or cut-off senders, pipelining): each gets exactly its answers, in order,
and the listener closes the connection once the sender is done or too slow.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from revdaemon.config import ListenerSettings, NueSettings, WebhookAuth
from revdaemon.flows.base import FlowEvent, Found
from revdaemon.flows.billing_events import BillingEventsFlow
from revdaemon.flows.onboarding import OnboardingFlow
from revdaemon.listener.signature import sign
from revdaemon.store import Store
from tests.integration.test_listener import SECRET, TOKEN, Running, start

pytestmark = pytest.mark.anyio

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "webhooks"
CASES = sorted(CORPUS.glob("*.yaml"))
WIRE_CASES = sorted((CORPUS.parent / "http").glob("*.yaml"))
DEFAULT_HEADERS = {"content-type": "application/json"}
FLOWS = {"billing_events": BillingEventsFlow, "onboarding": OnboardingFlow}
ENVELOPE = {"id": "evt-gen", "type": "order.activated", "data": {"id": "o-1"}}


def load(path: Path) -> dict[str, Any]:
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict) and case.get("description"), f"{path.name}: a case needs a description"
    return case


def body_of(spec: Mapping[str, Any]) -> bytes:
    if "body" in spec:
        return str(spec["body"]).encode("utf-8", "surrogatepass")
    if "body_json" in spec:
        return json.dumps(spec["body_json"], ensure_ascii=False).encode()
    generator = spec.get("body_generator")
    if generator is None:
        return b""
    kind = generator["kind"]
    if kind == "hex":
        return bytes.fromhex(generator["hex"])
    if kind == "encoded":
        return bytes.fromhex(generator.get("bom", "")) + json.dumps(ENVELOPE).encode(generator["encoding"])
    if kind == "huge":
        return json.dumps({**ENVELOPE, "data": {"id": "o-1", "padding": "x" * generator["size"]}}).encode()
    if kind == "deep":
        depth = generator["depth"]
        return b'{"id": "evt-deep", "type": "order.activated", "data": {"id": "o-1", "nested": ' + \
            b"[" * depth + b"]" * depth + b"}}"
    if kind == "big_number":
        return b'{"id": "evt-big", "type": "order.activated", "data": {"id": "o-1", "amount": ' + \
            b"9" * generator["digits"] + b"}}"
    if kind == "long_type":
        return json.dumps({**ENVELOPE, "type": "order." + "a" * generator["length"]}).encode()
    if kind == "long_id":
        return json.dumps({**ENVELOPE, "id": "e" * generator["length"]}).encode()
    if kind == "long_data_id":
        return json.dumps({**ENVELOPE, "data": {"id": "o" * generator["length"]}}).encode()
    if kind == "chunked":
        chunk = b"%x\r\n" % generator["size"] + b"x" * generator["size"] + b"\r\n"
        return chunk * generator["chunks"]
    raise AssertionError(f"unknown body_generator kind {kind!r}")


def signature_header(spec: Mapping[str, Any], body: bytes) -> str | None:
    """The Nue-Signature value a delivery sends: valid by default, or as the case describes it."""
    how = spec.get("signature", "valid")
    now = int(time.time())
    if how == "none":
        return None
    if how == "valid":
        how = {}
    if "literal" in how:
        v1 = sign(body, SECRET, now).split("v1=", 1)[1]
        return str(how["literal"]).replace("{now}", str(now)).replace("{v1}", v1)
    signed_body = body_of({"body_json": how["over_json"]}) if "over_json" in how else body
    return sign(signed_body, how.get("secret", SECRET), now - int(how.get("age_seconds", 0)))


def fill(template: str, spec: Mapping[str, Any], body: bytes) -> str:
    values = {"{token}": TOKEN, "{token_prefix}": TOKEN[: len(TOKEN) // 2], "{now}": str(int(time.time())),
              "{length}": str(len(body)), "{length_hex}": f"{len(body):x}", "{length_minus_10}": str(len(body) - 10),
              "{length_plus_500}": str(len(body) + 500), "{signature}": signature_header(spec, body) or ""}
    for name, value in values.items():
        template = template.replace(name, value)
    return template


async def deliver(running: Running, spec: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """Send one delivery; the status and the JSON body of the answer."""
    body = body_of(spec)
    if "raw_head" in spec:
        return await deliver_raw(running.port, fill(spec["raw_head"], spec, body).encode("latin-1") + body)
    headers = {**DEFAULT_HEADERS, **spec.get("headers", {})}
    headers = {name: value for name, value in headers.items() if value is not None}
    signature = signature_header(spec, body)
    if signature is not None:
        headers["nue-signature"] = signature
    path = fill(spec.get("path", "/webhooks/nue"), spec, body)
    async with httpx.AsyncClient() as client:
        response = await client.request(spec.get("method", "POST"), running.url + path, content=body,
                                         headers=headers)
    return response.status_code, response.json()


async def deliver_raw(port: int, data: bytes) -> tuple[int, dict[str, Any]]:
    """Bytes as they are, for requests no HTTP client would send; reads the first final answer."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send(data)
        with anyio.fail_after(10):
            while True:
                head, sep, rest = received.partition(b"\r\n\r\n")
                if sep and not head.startswith(b"HTTP/1.1 1"):
                    lines = head.decode("latin-1").split("\r\n")
                    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
                    if len(rest) >= int(fields["content-length"]):
                        status = int(lines[0].split()[1])
                        return status, json.loads(rest[: int(fields["content-length"])])
                elif sep:
                    received = rest  # a 100 Continue: the final answer follows
                    continue
                try:
                    received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    raise AssertionError(f"connection closed without an answer: {received!r}") from None


async def count(store: Store) -> int:
    return sum((await store.queue_depths()).values())


def nue_settings(case: Mapping[str, Any]) -> NueSettings:
    if case.get("auth") == "path_token":
        return NueSettings(api_key="k", webhook_auth=WebhookAuth.PATH_TOKEN, webhook_path_token=TOKEN)
    return NueSettings(api_key="k", webhook_secret=SECRET)


def listener_settings(case: Mapping[str, Any]) -> ListenerSettings:
    """The test listener of test_listener.py (a 2,048-byte body cap), with the case's overrides."""
    return ListenerSettings(**{"port": 0, "header_timeout_seconds": 0.5, "body_timeout_seconds": 0.5,
                               "keepalive_timeout_seconds": 5, "max_body_bytes": 2048, **case.get("listener", {})})


def test_the_corpus_is_there() -> None:
    """The corpus is found (a wrong path would make the parametrized test below collect nothing)."""
    assert len(CASES) >= 60


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
async def test_webhook_case(path: Path, tmp_path: Path) -> None:
    """Each corpus case gets its status and its named error; the inbox changes only as the case says."""
    case = load(path)
    async for running in start(tmp_path, nue=nue_settings(case), listener=listener_settings(case)):
        before = await count(running.store)
        accepted: list[str] = []
        for delivery in case.get("deliveries") or [{}]:
            spec = {**case, **delivery}
            status, answer = await deliver(running, spec)
            expect = spec["expect"]
            assert status == expect["status"], f"{path.name}: {status} {answer}"
            if status >= 400:
                # a clear refusal names what is wrong
                assert expect["error"] in answer["error"], f"{path.name}: {answer}"
                continue
            assert answer["key"] == expect.get("key", answer["key"]), answer
            assert answer.get("duplicate", False) is expect.get("duplicate", False), answer
            if status == 202:
                accepted.append(answer["key"])
        after = await count(running.store)
        assert after - before == case.get("stored", 0), f"{path.name}: the inbox went from {before} to {after}"
        await serves_a_good_request(running, case)
        for key in accepted:
            stored = await running.store.find_event(key)
            assert stored is not None and stored.source == "nue_webhook"
            assert stored.payload == json.loads(body_of(case)), "stored exactly as sent"
        if "lie" in case:
            assert len(accepted) == 1
            event = await running.store.find_event(accepted[0])
            assert event is not None
            check_taken_as_hint(case["lie"], FlowEvent(key=event.key, type=event.type, source=event.source,
                                                       payload=event.payload))


def check_taken_as_hint(lie: Mapping[str, Any], event: FlowEvent) -> None:
    """The flow asks Nue for the resource the event names and plans from Nue's answer, never the body's."""
    flow = FLOWS[lie["flow"]]()
    assert event.type in flow.event_types
    truth = Found(**lie["truth"])
    needs = flow.needs(event, truth)
    for name, wanted in lie["needs"].items():
        assert set(wanted) <= set(getattr(needs, name)), f"{name}: {getattr(needs, name)}"
    plan = flow.plan(event, truth)
    assert not plan.writes and plan.skip_reason is not None and lie["skip"] in plan.skip_reason, plan


async def serves_a_good_request(running: Running, case: Mapping[str, Any]) -> None:
    """Whatever the case did, the listener still takes a good notification on a new connection, and stores it."""
    body = json.dumps({"id": f"evt-after-{uuid.uuid4()}", "type": "order.activated", "data": {"id": "o-1"}}).encode()
    if case.get("auth") == "path_token":
        path, signature = f"/webhooks/nue/{TOKEN}", ""
    else:
        path, signature = "/webhooks/nue", f"nue-signature: {signature_header({}, body)}\r\n"
    # A raw socket rather than an httpx client: a client's setup costs more than this whole exchange.
    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{signature}"
            f"content-length: {len(body)}\r\n\r\n")
    received, _ = await exchange(running.port, head.encode() + body, trickle=None, hold=False)
    [(status, answer)] = answers(received)
    assert status == 202, f"the listener no longer serves: {status} {answer}"
    assert await running.store.find_event(answer["key"]) is not None


# --- tests/corpus/http/: bytes on the wire -------------------------------------------------------------------

# Longer than any case may take: the test listener's header and body timeouts are 0.5 s.
READ_CAP_SECONDS = 3.0
# {body}: the case's body; {chunked} / {chunked:N}: it as one chunk / chunks of N bytes, then the last chunk;
# {pad:N}: N letters, for heads of a given size.
BYTES_PLACEHOLDER = re.compile(r"\{(body|chunked(?::(\d+))?|pad:(\d+))\}")


def wire_bytes(case: Mapping[str, Any]) -> bytes:
    """The case's `wire` template as bytes: text as Latin-1 (so "\\xe9" is one byte), placeholders filled."""
    body = body_of(case)
    template = str(case["wire"])
    out, position = b"", 0
    for match in BYTES_PLACEHOLDER.finditer(template):
        out += fill(template[position:match.start()], case, body).encode("latin-1")
        name, size, pad = match.groups()
        if pad is not None:
            out += b"a" * int(pad)
        elif name == "body":
            out += body
        else:
            step = int(size) if size else max(len(body), 1)
            out += b"".join(b"%x\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n"
                            for i in range(0, len(body), step)) + b"0\r\n\r\n"
        position = match.end()
    return out + fill(template[position:], case, body).encode("latin-1")


async def exchange(port: int, data: bytes, *, trickle: float | None, hold: bool) -> tuple[bytes, bool]:
    """Send `data` (all at once, or a byte per `trickle` seconds), then end our side unless `hold`; read until
    the listener closes. Returns what came back, and whether the listener closed within the cap."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    received = b""
    gone = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError)
    async with stream:
        with contextlib.suppress(*gone):  # the listener may close while we still send (a cut-off)
            if trickle is None:
                await stream.send(data)
            else:
                for index in range(len(data)):
                    await stream.send(data[index:index + 1])
                    await anyio.sleep(trickle)
            if not hold:
                await stream.send_eof()
        with anyio.move_on_after(READ_CAP_SECONDS):
            while True:
                try:
                    received += await stream.receive()
                except gone:
                    return received, True
    return received, False


def answers(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """The responses in `data`, in order: status and JSON body (informational ones and a HEAD's have none)."""
    out: list[tuple[int, dict[str, Any]]] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"a response cut short: {data!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(fields.get("content-length", "0")) if status >= 200 else 0
        body, data = rest[:length], rest[length:]
        out.append((status, json.loads(body) if body else {}))
    return out


def test_the_wire_corpus_is_there() -> None:
    """The wire corpus is found (a wrong path would make the parametrized test below collect nothing)."""
    assert len(WIRE_CASES) >= 40


@pytest.mark.parametrize("path", WIRE_CASES, ids=[p.stem for p in WIRE_CASES])
async def test_wire_case(path: Path, tmp_path: Path) -> None:
    """Each wire case gets exactly its answers and the connection is closed; the inbox holds only what was
    accepted, as sent; a good request is served afterwards."""
    case = load(path)
    expect = case["expect"]
    async for running in start(tmp_path, nue=nue_settings(case), listener=listener_settings(case)):
        received, closed = await exchange(running.port, wire_bytes(case), trickle=case.get("trickle"),
                                          hold=bool(case.get("hold")))
        assert closed, f"{path.name}: the connection was still open after {READ_CAP_SECONDS} s: {received!r}"
        got = answers(received)
        wanted = [] if expect.get("closed") else expect.get("statuses", [expect.get("status")])
        assert [status for status, _ in got] == wanted, f"{path.name}: {got}"
        if "error" in expect:
            assert expect["error"] in got[-1][1]["error"], f"{path.name}: {got[-1]}"
        accepted = {answer["key"] for status, answer in got if status == 202}
        events = await running.store.list_events(limit=100)
        assert len(events) == case.get("stored", 0) and {e.key for e in events} == accepted, \
            f"{path.name}: stored {[e.key for e in events]}, accepted {accepted}"
        for event in events:
            assert event.source == "nue_webhook" and event.payload == json.loads(body_of(case)), "stored as sent"
        await serves_a_good_request(running, case)
