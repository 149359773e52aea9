"""Every case of tests/corpus/webhooks/ against the real listener over a real loopback socket.

One YAML file per case (see tests/corpus/README.md): what is sent, and what must come back. A refused
request is answered with its status and an error that names what is wrong, and leaves the inbox exactly as
it was; an accepted one is stored once, as sent. A case with `lie:` also hands the stored event to the flow
that would plan it, with what Nue really says, to show that the body was taken as a hint only.
"""

from __future__ import annotations

import json
import time
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
              "{length}": str(len(body)), "{length_minus_10}": str(len(body) - 10),
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
