"""Field specs: how config.yaml says what a Salesforce field gets. Pure.

A spec is one string, checked when the configuration loads:

    path:customer.billingCity          the value at a dotted path of the flow's source record
    const:Self-serve                   a constant text
    lookup:TABLE:status                the path's value looked up in mapping.lookups.TABLE
    money:mrr                          the path's value as a Decimal rounded to cents
    date:subscriptionEndDate           the path's value as an ISO date (YYYY-MM-DD)
    percent:discount                   the path's value as a Decimal percentage

Each flow documents its source record (e.g. flow 2: `customer`, `status`, `mrr`, `arr`,
`next_renewal`); a field added here is written with the flow's own write, compared like its own
fields, and checked against Salesforce's describe at start like every mapped field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from revdaemon.domain.money import PricingError, cents, to_decimal

KINDS = ("path", "const", "lookup", "money", "date", "percent")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class MappingError(ValueError):
    """A value could not be produced as the spec says (reported with the field and the record)."""


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    kind: str
    path: str | None = None
    constant: str | None = None
    table: str | None = None

    def describe(self) -> str:
        if self.kind == "const":
            return f"const:{self.constant}"
        if self.kind == "lookup":
            return f"lookup:{self.table}:{self.path}"
        return f"{self.kind}:{self.path}"


def parse_spec(text: str) -> FieldSpec:
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(f"{text!r}: a spec is one of {', '.join(k + ':...' for k in KINDS)}")
    if kind == "const":
        return FieldSpec(kind=kind, constant=rest)
    if kind == "lookup":
        table, sep, path = rest.partition(":")
        if not sep or not table or not _PATH.match(path):
            raise ValueError(f"{text!r}: lookup needs a table and a path, lookup:TABLE:path.to.value")
        return FieldSpec(kind=kind, table=table, path=path)
    if not _PATH.match(rest):
        raise ValueError(f"{text!r}: {rest!r} is not a dotted path (name or name.child)")
    return FieldSpec(kind=kind, path=rest)


def value_at(source: Mapping[str, Any], path: str) -> Any:
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def render(specs: Mapping[str, FieldSpec], source: Mapping[str, Any],
           lookups: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The values the specs give for `source`; MappingError names the field that could not be made."""
    out: dict[str, Any] = {}
    for field_name, spec in specs.items():
        try:
            out[field_name] = _one(spec, source, lookups)
        except (MappingError, PricingError, ValueError) as exc:
            raise MappingError(f"{field_name} <- {spec.describe()}: {exc}") from None
    return out


def _one(spec: FieldSpec, source: Mapping[str, Any], lookups: Mapping[str, Mapping[str, str]]) -> Any:
    if spec.kind == "const":
        return spec.constant
    assert spec.path is not None
    value = value_at(source, spec.path)
    if value is None:
        return None
    if spec.kind == "path":
        return value
    if spec.kind == "lookup":
        assert spec.table is not None
        table = lookups.get(spec.table)
        if table is None:
            raise MappingError(f"no lookup table {spec.table!r}")
        if str(value) not in table:
            raise MappingError(f"{value!r} is not in lookup table {spec.table!r}")
        return table[str(value)]
    if spec.kind == "money":
        return cents(to_decimal(value))
    if spec.kind == "percent":
        return to_decimal(value)
    if isinstance(value, datetime | date):
        return value.isoformat()[:10]
    return date.fromisoformat(str(value)[:10]).isoformat()


