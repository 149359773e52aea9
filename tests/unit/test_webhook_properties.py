"""Properties of the webhook handler under arbitrary input (hypothesis), in process: the ListenerApp with a
real SQLite store and group committer, without sockets (the corpus covers those).

- no input makes it answer 5xx;
- nothing is stored unless the request is a validly signed, well-formed JSON envelope;
- a validly signed envelope with arbitrary unicode in its fields is stored exactly once, as sent;
- a body in any encoding but UTF-8 is refused with 400, whatever it says.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revdaemon.config import NueSettings
from revdaemon.listener.app import ListenerApp
from revdaemon.listener.group_commit import GroupCommitter
from revdaemon.listener.http import Request, Response
from revdaemon.listener.signature import sign
from revdaemon.ops.health import Health
from revdaemon.store import Store, open_store

pytestmark = pytest.mark.anyio

SECRET = "whsec-property-secret"
PATH = "/webhooks/nue"
# One store and committer serve every example of a test (each example compares counts before and after),
# hence the function-scoped fixture under @given.
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text that is a valid key part: printable (str.isprintable) and without surrogates.
KEY_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"),
                                 include_characters=" "), min_size=1, max_size=60)
# Any text at all, with the characters that break things drawn often: unpaired surrogates, NUL and other
# controls, a bidi override, a dot, non-BMP and combining characters.
EDGE_CHARACTERS = st.sampled_from(["\ud800", "\udfff", "\udc80", "\x00", "\n", "\x7f", "\u202e", "\u200b", ".", "é",
                                   "\u0301", "🚀", "株", "\uffff"])
ANY_TEXT = st.text(EDGE_CHARACTERS | st.characters(codec=None, exclude_categories=()), max_size=40)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12)
ENVELOPE_KEYS = st.sampled_from(["id", "type", "data", "createdDate"]) | ANY_TEXT
DATA_KEYS = st.sampled_from(["id", "lastModifiedDate", "customerId"]) | ANY_TEXT
ENVELOPE_LIKE = st.dictionaries(ENVELOPE_KEYS, JSON_VALUES | st.dictionaries(DATA_KEYS, JSON_VALUES, max_size=4),
                                max_size=5)


@dataclass
class Handler:
    app: ListenerApp
    store: Store

    async def post(self, body: bytes, headers: dict[str, str], path: str = PATH, method: str = "POST") -> Response:
        return await self.app(Request(method=method, path=path, query="", headers=headers, body=body))

    async def count(self) -> int:
        return sum((await self.store.queue_depths()).values())


@pytest.fixture
async def handler(tmp_path: Path) -> AsyncIterator[Handler]:
    store = await open_store(tmp_path / "db.sqlite3")
    committer = GroupCommitter(store)
    app = ListenerApp(NueSettings(api_key="k", webhook_secret=SECRET), committer, store, Health())
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(committer.run)
            yield Handler(app=app, store=store)
            tg.cancel_scope.cancel()
    finally:
        await store.close()


def signed(body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "nue-signature": sign(body, SECRET, int(time.time()))}


def looks_like_envelope(body: bytes) -> bool:
    """A necessary condition for storing, written independently of the parser: UTF-8 text (after an optional
    byte order mark) of a JSON object with a dotted string type and an object `data` whose `id` is a
    non-empty string."""
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return False
    if not isinstance(document, dict):
        return False
    data = document.get("data")
    return (isinstance(document.get("type"), str) and "." in document["type"] and isinstance(data, dict)
            and isinstance(data.get("id"), str) and bool(data["id"]))


async def check(handler: Handler, body: bytes, headers: dict[str, str], *, signed_validly: bool,
                path: str = PATH, method: str = "POST") -> Response:
    before = await handler.count()
    response = await handler.post(body, headers, path, method)
    after = await handler.count()
    assert response.status < 500, (response.status, response.body)
    document = json.loads(response.body)
    if response.status >= 400:
        assert isinstance(document["error"], str) and document["error"], "a refusal says why"
    stored = after - before
    assert stored == (1 if response.status == 202 else 0), (response.status, stored)
    if stored:
        assert signed_validly and looks_like_envelope(body), body
    return response


@FAST
@given(body=st.binary(max_size=300), sign_it=st.booleans())
async def test_arbitrary_bytes(handler: Handler, body: bytes, sign_it: bool) -> None:
    """Random bytes, signed or not: refused with a reason, never a 5xx, never stored."""
    headers = signed(body) if sign_it else {"content-type": "application/json"}
    await check(handler, body, headers, signed_validly=sign_it)


@FAST
@given(document=JSON_VALUES | ENVELOPE_LIKE, sign_it=st.booleans(), ascii_only=st.booleans())
async def test_arbitrary_json(handler: Handler, document: Any, sign_it: bool, ascii_only: bool) -> None:
    """Arbitrary JSON documents, most of them near-envelopes: stored only if signed and well-formed."""
    body = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    headers = signed(body) if sign_it else {"content-type": "application/json"}
    await check(handler, body, headers, signed_validly=sign_it)


VALID = {"id": "evt-1", "type": "order.activated", "createdDate": "2026-01-01T00:00:00Z",
         "data": {"id": "o-1", "lastModifiedDate": "2026-01-01T00:00:00Z", "customerId": "c-1"}}
# Mostly strings (the fields are strings): dotted like a type, long like no key may be, or anything.
STRINGS = (st.builds("{}.{}{}".format, ANY_TEXT, ANY_TEXT, st.sampled_from(["", "\ud800", "\x00", "\u202e"]))
           | ANY_TEXT | st.text(EDGE_CHARACTERS | st.characters(codec=None, exclude_categories=()), min_size=190,
                                max_size=210))
FIELDS = ["id", "type", "data", "createdDate", "data.id", "data.lastModifiedDate"]


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with one field (sometimes two) deleted or replaced: by a string of anything most of
    the time, else by any JSON value. Its id is unique, so that no example's event is another's duplicate."""
    document: dict[str, Any] = json.loads(json.dumps(VALID))
    document["id"] = f"evt-{uuid.uuid4()}"
    for path in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True)):
        parent, _, name = path.rpartition(".")
        target = document.get(parent) if parent else document
        if not isinstance(target, dict):
            continue
        how = draw(st.sampled_from(["delete", "string", "string", "string", "json"]))
        if how == "delete":
            target.pop(name, None)
        else:
            target[name] = draw(STRINGS if how == "string" else JSON_VALUES)
    return document


@FAST
@given(document=mutated_envelopes(), ascii_only=st.booleans())
async def test_mutated_envelopes(handler: Handler, document: dict[str, Any], ascii_only: bool) -> None:
    """Signed envelopes with fields missing or of any type or content: stored only if still well-formed,
    refused with a reason otherwise, never a 5xx."""
    try:
        body = json.dumps(document, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:
        body = json.dumps(document).encode()
    await check(handler, body, signed(body), signed_validly=True)


# Text with at least one of the edge characters in it, sometimes longer than a key may be.
EDGY_TEXT = (st.builds("{}{}{}".format, ANY_TEXT, EDGE_CHARACTERS, ANY_TEXT)
             | st.text(EDGE_CHARACTERS | st.characters(codec=None, exclude_categories=()), min_size=160, max_size=170))


def valid_key_part(text: str) -> bool:
    """The listener's rule for text that becomes part of an event key or the type column (envelope.py)."""
    return len(text) <= 200 and text.isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@FAST
@given(field=st.sampled_from(["id", "type", "data.id", "data.lastModifiedDate"]), text=EDGY_TEXT,
       ascii_only=st.booleans())
async def test_key_fields_take_any_text(handler: Handler, field: str, text: str, ascii_only: bool) -> None:
    """Any text in a field that becomes a key or a column (the envelope id, the type, the resource id, the
    date keying an envelope without id): stored when the text is printable and short, else a 400, never a
    5xx. Stored or not, the store's own encoding never gets to refuse it."""
    unique = str(uuid.uuid4())
    document: dict[str, Any] = {"id": f"evt-{unique}", "type": "order.activated",
                                "data": {"id": f"o-{unique}", "lastModifiedDate": "2026-01-01T00:00:00Z"}}
    if field == "id":
        document["id"] = value = f"{unique}{text}"
    elif field == "type":
        document["type"] = value = f"order.{text}"
    elif field == "data.id":
        document["data"]["id"] = value = f"{unique}{text}"
    else:
        del document["id"]
        document["data"]["lastModifiedDate"] = value = text
    try:
        body = json.dumps(document, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:
        body = json.dumps(document).encode()
    response = await check(handler, body, signed(body), signed_validly=True)
    assert response.status == (202 if valid_key_part(value) else 400), (response.status, response.body)


OTHER_ENCODINGS = st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])


@FAST
@given(document=mutated_envelopes() | st.builds(lambda: {**VALID, "id": f"evt-{uuid.uuid4()}"}),
       encoding=OTHER_ENCODINGS, ascii_only=st.booleans())
async def test_a_body_not_utf8_is_refused(handler: Handler, document: dict[str, Any], encoding: str,
                                          ascii_only: bool) -> None:
    """A signed envelope, well-formed or not, in UTF-16 or UTF-32 (with a byte order mark or without): a 400
    saying the body must be UTF-8, never stored, though json.loads would read it."""
    text = json.dumps(document, ensure_ascii=ascii_only)
    try:
        body = text.encode(encoding)
    except UnicodeEncodeError:  # an unpaired surrogate only travels as a JSON escape
        body = json.dumps(document).encode(encoding)
    response = await check(handler, body, signed(body), signed_validly=True)
    assert response.status == 400 and "must be UTF-8" in json.loads(response.body)["error"], response.body


@FAST
@given(name=KEY_TEXT, ascii_only=st.booleans())
async def test_a_utf8_byte_order_mark_is_dropped(handler: Handler, name: str, ascii_only: bool) -> None:
    """A UTF-8 envelope after a UTF-8 byte order mark is stored as the same envelope without one."""
    document = {**VALID, "id": f"evt-{uuid.uuid4()}", "data": {**VALID["data"], "name": name}}
    body = b"\xef\xbb\xbf" + json.dumps(document, ensure_ascii=ascii_only).encode()
    response = await check(handler, body, signed(body), signed_validly=True)
    assert response.status == 202
    stored = await handler.store.find_event(f"nue:{document['id']}")
    assert stored is not None and stored.payload == document


HEADER_NAMES = st.sampled_from(["nue-signature", "content-type", "content-length", "x-other"])
# Signature headers of the right shape with arbitrary parts: timestamps far outside a float, odd v1 values.
TIMESTAMPS = (st.integers(min_value=-(10**400), max_value=10**400) | st.integers(min_value=10**308, max_value=10**400)
              | st.just(int(time.time())) | ANY_TEXT)
SIGNATURE_SHAPED = st.builds("t={},v1={}".format, TIMESTAMPS,
                             st.text("0123456789abcdefABCDEF", min_size=63, max_size=65) | ANY_TEXT)


@FAST
@given(header=SIGNATURE_SHAPED | ANY_TEXT | st.lists(SIGNATURE_SHAPED, min_size=2, max_size=3).map(",".join))
async def test_arbitrary_signature_headers(handler: Handler, header: str) -> None:
    """A well-formed body with a signature header of any shape or content: a 401 naming the reason."""
    body = json.dumps({"id": f"evt-{uuid.uuid4()}", "type": "order.activated", "data": {"id": "o-1"}}).encode()
    response = await check(handler, body, {"content-type": "application/json", "nue-signature": header},
                           signed_validly=False)
    assert response.status == 401


@FAST
@given(extra=st.dictionaries(HEADER_NAMES, ANY_TEXT | SIGNATURE_SHAPED
                             | st.sampled_from(["t=1,v1=", "application/json", ""]), max_size=4),
       keep_signature=st.booleans(), suffix=st.sampled_from(["", "/", "/x", "/a/b", "/\x00", "/é"]),
       method=st.sampled_from(["POST", "GET", "PUT", "DELETE"]))
async def test_arbitrary_headers_and_paths(handler: Handler, extra: dict[str, str], keep_signature: bool,
                                           suffix: str, method: str) -> None:
    """A well-formed body under arbitrary header values, paths and methods: stored only when the valid
    signature, a JSON content type, the webhook path and POST all came together."""
    body = json.dumps({"id": f"evt-{uuid.uuid4()}", "type": "order.activated", "data": {"id": "o-1"}}).encode()
    headers = {**signed(body), **extra}
    if keep_signature:
        headers["nue-signature"] = signed(body)["nue-signature"]
    response = await check(handler, body, headers, signed_validly=headers["nue-signature"] ==
                           signed(body)["nue-signature"], path=PATH + suffix, method=method)
    if response.status == 202:
        assert suffix in ("", "/") and method == "POST"  # a trailing slash is the same path
        assert headers["content-type"].split(";")[0].strip().lower() == "application/json"


@FAST
@given(event_id=st.none() | KEY_TEXT, event_type=st.tuples(KEY_TEXT, KEY_TEXT).map(".".join),
       resource_id=KEY_TEXT, modified=KEY_TEXT, fields=st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=5),
       ascii_only=st.booleans())
async def test_valid_envelopes_are_stored_exactly_once(handler: Handler, event_id: str | None, event_type: str,
                                                       resource_id: str, modified: str, fields: dict[str, Any],
                                                       ascii_only: bool) -> None:
    """A signed envelope with arbitrary unicode fields, delivered twice at once: one 202, one duplicate 200,
    one event, its payload exactly what was sent."""
    unique = uuid.uuid4().hex[:12]  # examples repeat values; each must be a new event
    resource_id = f"{unique}{resource_id}"
    if event_id is not None:
        event_id = f"{unique}{event_id}"
    document: dict[str, Any] = {"type": event_type, "data": {**fields, "id": resource_id, "lastModifiedDate": modified}}
    if event_id is not None:
        document["id"] = event_id
    try:
        body = json.dumps(document, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # an unpaired surrogate only travels as a JSON escape
        body = json.dumps(document).encode()
    before = await handler.count()
    responses: list[Response] = []

    async def one() -> None:
        responses.append(await handler.post(body, signed(body)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    assert sorted(r.status for r in responses) == [200, 202], [r.body for r in responses]
    assert await handler.count() == before + 1
    key = json.loads(responses[0].body)["key"]
    assert key == (f"nue:{event_id}" if event_id is not None else f"nue:{event_type}:{resource_id}:{modified}")
    stored = await handler.store.find_event(key)
    assert stored is not None and stored.type == event_type and stored.payload == document
