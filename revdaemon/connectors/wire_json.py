"""Field values as JSON on the wire, for both APIs. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any


def jsonable(value: Any) -> Any:
    """Field values as JSON: Decimal money as a JSON number, dates as ISO text (the wire formats)."""
    if isinstance(value, Decimal):
        return float(value)  # 2-decimal currency fits a double exactly enough for Salesforce's 18,2 fields
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
