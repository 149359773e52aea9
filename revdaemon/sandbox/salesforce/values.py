"""Field values on the wire: datetime/date formats and the coercion of JSON input to a field's type.

Stored values are already in wire form (datetimes as `2013-05-07T22:07:19.000+0000`, §5), so reads need no
conversion and same-format datetimes compare correctly as strings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from revdaemon.sandbox.salesforce.errors import SfError, bad_request
from revdaemon.sandbox.salesforce.schema import TEXT_TYPES, FieldDef


def wire_datetime(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}+0000"


def wire_from_datetime(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return wire_datetime(dt.timestamp())


def parse_datetime(text: str) -> datetime:
    """ISO 8601 with `Z`, `+00:00` or `+0000`; naive values are UTC. Raises ValueError."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _parser_error(kind: str, value: Any) -> SfError:
    # Wording of the JSON deserializer errors the REST API gives for mistyped values [unverified detail].
    token = "VALUE_STRING" if isinstance(value, str) else "VALUE_NUMBER_INT" if isinstance(value, int) else "VALUE"
    return bad_request("JSON_PARSER_ERROR",
                       f"Cannot deserialize instance of {kind} from {token} value {value} "
                       "or request may be missing a required field")


def coerce(field: FieldDef, value: Any) -> Any:
    """JSON input -> stored value for `field`; raises SfError like the REST API's deserializer."""
    if value is None:
        return None
    kind = field.type
    if kind in TEXT_TYPES or kind in ("id", "reference"):
        if isinstance(value, dict | list):
            return _raise(_parser_error("string", value))
        text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
        if kind in TEXT_TYPES and field.length and len(text) > field.length:
            raise bad_request("STRING_TOO_LONG",
                              f"{field.label}: data value too large: {text[:20]}... (max length={field.length})",
                              [field.name])
        if field.restricted and text != "" and text not in field.picklist:
            # The value set is matched exactly; "" and null clear the field like on any picklist.
            raise bad_request("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                              f"{field.label}: bad value for restricted picklist field: {text}", [field.name])
        return text if text != "" or kind not in ("id", "reference") else None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return _raise(_parser_error("boolean", value))
    if kind in ("double", "currency", "percent", "int"):
        if isinstance(value, (bool, dict | list)):
            return _raise(_parser_error("double", value))
        try:
            number = float(value)
        except ValueError:
            return _raise(_parser_error("double", value))
        return int(number) if kind == "int" else number
    if kind == "date":
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10]).isoformat()
            except ValueError:
                pass
        return _raise(_parser_error("date", value))
    if kind == "datetime":
        if isinstance(value, str):
            try:
                return wire_from_datetime(parse_datetime(value))
            except ValueError:
                pass
        return _raise(_parser_error("datetime", value))
    return value


def _raise(error: SfError) -> Any:
    raise error
