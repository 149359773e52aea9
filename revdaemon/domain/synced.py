"""Last synced values of a Salesforce record: what tells a person's edit there from a value revdaemon wrote."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SyncedRecord:
    """What revdaemon last wrote to (or a person accepted on) a Salesforce record, per field; and the Nue
    values a person declined there by keeping Salesforce's, which are not written while Nue still has them.

    `recent`: per field, the other values revdaemon wrote (or is writing) there around the time the record was
    read. Another worker's or replica's write can land between the read of the record and the read of `values`,
    so a record showing one of these shows revdaemon's own write, not a person's edit."""

    values: Mapping[str, Any] = field(default_factory=dict)
    declined: Mapping[str, Any] = field(default_factory=dict)
    recent: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
