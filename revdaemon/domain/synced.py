"""Last synced values of a Salesforce record: what tells a person's edit there from a value revdaemon wrote."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SyncedRecord:
    """What revdaemon last wrote to (or a person accepted on) a Salesforce record, per field; and the Nue
    values a person declined there by keeping Salesforce's, which are not written while Nue still has them."""

    values: Mapping[str, Any] = field(default_factory=dict)
    declined: Mapping[str, Any] = field(default_factory=dict)
