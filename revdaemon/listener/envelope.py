"""Reading a Nue webhook body into an inbox event. Pure.

Envelope [assumed, nue-api.md]: {"id", "type", "createdDate", "data": {...resource}}. The event key is the
envelope id; without one, (type, resource id, lastModifiedDate), so that a redelivery dedupes and a later
real change of the same resource does not.

Event types (flows/registry.py): a type some flow takes from a webhook is stored; a type no flow handles is
stored too, and the worker finishes it with a log line: Nue adds event types, and a 4xx for one would have
it redelivered for ever. A type only revdaemon's own sources carry (renewal.due, opportunity.closed_won) is
refused: Nue never sends one, so the refusal costs no real delivery and tells the sender at once that it
tried to reach internal work (the worker would ignore the event anyway: flows.base.takes). A flag only an
internal source may set (`repair`) is stored as sent and not honoured (`internal_flags` names it for the
log): the notification itself is still a good hint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from revdaemon.flows import sources
from revdaemon.flows.registry import INTERNAL_FLAGS, INTERNAL_TYPES, WEBHOOK_TYPES
from revdaemon.store.records import NewEvent

SOURCE = sources.NUE_WEBHOOK
MAX_KEY_PART = 200
UTF8_BOM = "\ufeff"


class EnvelopeError(Exception):
    """The body is not a usable webhook notification (answered 400)."""


class InternalType(EnvelopeError):
    """The notification names an event type only revdaemon's own sources may store (answered 400, logged)."""


def parse_notification(body: bytes) -> NewEvent:
    text = _utf8_text(body)
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError):
        # a number of thousands of digits, or nesting deeper than the parser allows
        raise EnvelopeError("malformed JSON: a value too large or too deeply nested") from None
    if not isinstance(document, dict):
        raise EnvelopeError("the body must be a JSON object")
    event_type = document.get("type")
    if event_type is None:
        raise EnvelopeError("missing field: type (e.g. \"order.activated\")")
    if not isinstance(event_type, str):
        raise EnvelopeError(f"field type must be a string such as \"order.activated\" (got {_kind(event_type)})")
    if "." not in event_type:
        raise EnvelopeError("field type must be <resource>.<event>, such as \"order.activated\"")
    _part(event_type, "type")  # stored in a column of its own, unlike the rest of the payload
    if event_type in INTERNAL_TYPES:
        raise InternalType(f"event type {event_type!r} is revdaemon's own, never a Nue notification; "
                           f"the types taken from Nue are {', '.join(sorted(WEBHOOK_TYPES))} "
                           "(others are stored and ignored)")
    data = document.get("data")
    if data is None:
        raise EnvelopeError("missing field: data (the resource object)")
    if not isinstance(data, dict):
        raise EnvelopeError(f"field data must be an object, the resource (got {_kind(data)})")
    resource_id = data.get("id")
    if resource_id is None:
        raise EnvelopeError("missing field: data.id")
    if not isinstance(resource_id, str) or not resource_id:
        raise EnvelopeError(f"field data.id must be a non-empty string (got {_kind(resource_id)})")
    _part(resource_id, "data.id")  # the worker re-reads the resource by this id
    event_id = document.get("id")
    if event_id is not None and not isinstance(event_id, str):
        raise EnvelopeError(f"field id must be a string (got {_kind(event_id)})")
    if event_id:
        key = f"nue:{_part(event_id, 'id')}"
    else:
        modified = data.get("lastModifiedDate") or document.get("createdDate")
        if not isinstance(modified, str) or not modified:
            raise EnvelopeError("missing field: id, or data.lastModifiedDate to key the event by")
        key = f"nue:{event_type}:{resource_id}:{_part(modified, 'data.lastModifiedDate')}"
    return NewEvent(source=SOURCE, key=key, type=event_type, payload=document)


def _utf8_text(body: bytes) -> str:
    """The body as text: JSON between systems is UTF-8 (RFC 8259 §8.1). json.loads on bytes would guess
    UTF-16 or UTF-32 from the first bytes and take those too, so the bytes are decoded here, strictly.

    A leading UTF-8 byte order mark is accepted and dropped: §8.1 lets a parser ignore it, the signature
    covers the raw bytes either way, and json.loads on bytes always took it, so refusing it now could only
    start a redelivery loop for a sender that writes one. Any other byte order mark is refused."""
    guessed = json.detect_encoding(body)
    if guessed not in ("utf-8", "utf-8-sig"):
        # Checked before decoding: UTF-16 of ASCII text is valid UTF-8 (with NULs), and would be refused
        # as malformed JSON instead, which says less.
        raise EnvelopeError(f"the body must be UTF-8 JSON (RFC 8259 §8.1); it looks like {guessed.upper()}")
    try:
        return body.decode("utf-8").removeprefix(UTF8_BOM)
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"the body must be UTF-8 JSON (RFC 8259 §8.1): byte {exc.start} "
                            f"(0x{body[exc.start]:02x}) is not UTF-8") from None


def internal_flags(payload: Mapping[str, Any]) -> list[str]:
    """The top-level keys of a notification that only an internal source may set, sorted."""
    return sorted(INTERNAL_FLAGS & payload.keys())


def _part(value: str, name: str) -> str:
    if len(value) > MAX_KEY_PART:
        raise EnvelopeError(f"field {name} is too long (at most {MAX_KEY_PART} characters)")
    if not value.isprintable() or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise EnvelopeError(f"field {name} holds control or unpaired surrogate characters")
    return value


def _kind(value: object) -> str:
    """The JSON type of a value, to say what was sent instead."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    if isinstance(value, dict):
        return "an object"
    return "an array" if isinstance(value, list) else "null"
