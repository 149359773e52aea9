"""How the backends write values: JSON text for payloads, fixed-width UTC text for timestamps, LIKE patterns.

Both backends keep JSON as the same compact, key-sorted text, so a search for a fragment of a payload finds
the same events on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def ts_text(value: datetime) -> str:
    # Fixed-width UTC text sorts in time order, so indexes on it work for "due before now".
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return ts_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True, separators=(",", ":"))


def loads(value: str | None) -> Any:
    return json.loads(value) if value is not None else None


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
