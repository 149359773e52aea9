"""Properties of the listener under random mutations of a valid signed request, as bytes on a real socket
(hypothesis; tests/corpus/http/ holds the hand-picked cases, test_webhook_properties.py the in-process ones).

For every mutation, sent on its own connection which the client then ends:
- the listener answers every request it read and closes the connection (it never hangs on one);
- no answer is a 5xx, except 501 for a transfer coding it does not know (RFC 9112 §6.1 asks for that one);
- nothing is stored but the very notification that was signed, once, and only when answered 202;
- the listener still stores a good request afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from revdaemon.listener.signature import sign
from tests.integration.test_listener import SECRET, Running, start
from tests.integration.test_webhook_corpus import answers, exchange, serves_a_good_request

pytestmark = pytest.mark.anyio

# One listener serves every example (each example's event has an id of its own), hence the function-scoped
# fixture under @given. A few seconds in all: CI runs it every time.
WIRE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NOT_IMPLEMENTED = 501  # an unknown Transfer-Encoding (RFC 9112 §6.1): the one 5xx a request may earn

# Bytes that mean something to an HTTP/1.1 parser, drawn more often than chance would.
SIGNIFICANT = st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b",", b";", b"-", b"0", b"9", b"f",
                               b"\xff", b"\x80", b"\r\n\r\n", b"chunked", b"content-length: ", b"HTTP/1.1",
                               b"transfer-encoding: chunked\r\n", b"content-length: 0\r\n", b"{", b"}", b'"'])
SOME_BYTES = SIGNIFICANT | st.binary(min_size=1, max_size=8)
# Whole header lines that change how a request is framed, routed or read.
HEADER_LINES = [b"transfer-encoding: chunked", b"transfer-encoding: gzip", b"content-length: 0",
                b"content-length: 9999", b"expect: 100-continue", b"connection: close", b"content-type: text/plain",
                b"host: y", b"nue-signature: t=1,v1=00", b"content-type: application/json; charset=utf-16",
                b"upgrade: h2c", b"x: \xff"]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async for value in start(tmp_path):
        yield value


def signed_request(event_id: str) -> tuple[bytes, dict[str, object]]:
    """A notification as Nue sends it: the request's bytes and the document it carries."""
    document: dict[str, object] = {"id": event_id, "type": "order.activated", "createdDate": "2026-01-01T00:00:00Z",
                                   "data": {"id": "o-1", "customerId": "c-1"}}
    body = json.dumps(document).encode()
    head = (f"POST /webhooks/nue HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"nue-signature: {sign(body, SECRET, int(time.time()))}\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body, document


# An edit: what to do, where (taken modulo the length), how much, the bytes it puts in, and for "lines" which
# of the head's lines to keep, in what order (indices modulo their number: reordered, repeated or dropped).
# Drawn whole by @given, apart from the request it is applied to (whose signature is made at run time).
Edit = tuple[str, int, int, bytes, list[int]]
EDITS = st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete", "repeat", "lines", "header", "truncate"]),
                           st.integers(min_value=0, max_value=4096), st.integers(min_value=1, max_value=24), SOME_BYTES,
                           st.lists(st.integers(min_value=0, max_value=15), max_size=9)),
                 min_size=1, max_size=4)


def mutated(data: bytes, edits: list[Edit]) -> bytes:
    """`data` with the edits applied in turn: bytes replaced, inserted or deleted, a stretch repeated, the
    head's lines shuffled, repeated or dropped, a header line added, or the request cut short."""
    for how, where, span, some, picks in edits:
        at = where % (len(data) + 1)
        if how == "replace":
            data = data[:at] + some + data[at + span:]
        elif how == "insert":
            data = data[:at] + some + data[at:]
        elif how == "delete":
            data = data[:at] + data[at + span:]
        elif how == "repeat":
            data = data[:at + span] + data[at:at + span] + data[at + span:]
        elif how == "lines":
            head, sep, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            data = b"\r\n".join(lines[pick % len(lines)] for pick in picks) + sep + body
        elif how == "header":
            line, _, rest = data.partition(b"\r\n")
            data = line + b"\r\n" + HEADER_LINES[where % len(HEADER_LINES)] + b"\r\n" + rest
        else:
            data = data[:at]
    return data


@WIRE
@given(edits=EDITS)
async def test_mutated_requests(running: Running, edits: list[Edit]) -> None:
    """A signed request mutated at random: answered without a 5xx, the connection closed, stored only if it is
    still the notification that was signed, and the listener serves on."""
    event_id = f"evt-{uuid.uuid4()}"
    original, document = signed_request(event_id)
    before = {e.key for e in await running.store.list_events(limit=10_000)}
    received, closed = await exchange(running.port, mutated(original, edits), trickle=None, hold=False)
    assert closed, f"the connection was left open: {received!r}"
    got = answers(received)
    event(f"answered {[status for status, _ in got]}")  # --hypothesis-show-statistics shows the spread
    assert all(status < 500 or status == NOT_IMPLEMENTED for status, _ in got), got
    new = [e for e in await running.store.list_events(limit=10_000) if e.key not in before]
    if new:
        [stored] = new
        assert stored.key == f"nue:{event_id}" and stored.payload == document and stored.source == "nue_webhook"
        assert any(status == 202 and answer.get("key") == stored.key for status, answer in got), got
    else:
        assert all(status != 202 for status, _ in got), got
    await serves_a_good_request(running, {})
