"""Statements written once for both databases, and how each database's driver is handed them.

The store writes its SQL with named parameters (`:name`) in the syntax both databases share. Each dialect compiles
a statement once (cached by its text) into its driver's form:

- SQLite: `?` per occurrence, so a name used twice is passed twice; `IN :names` (a list) becomes `IN (?, ?, ...)`
  with one `?` per element, made per call; row locks (`FOR UPDATE`) are dropped, since the one writer's
  `BEGIN IMMEDIATE` already holds the whole file; `ILIKE` is `LIKE` (which ignores ASCII case in SQLite) and
  `GREATEST(a, b)` is SQLite's two-argument `MAX(a, b)`.
- PostgreSQL: `$n` per distinct name, so a name used twice is one parameter; `IN :names` becomes `= ANY($n)`,
  one array parameter whatever the list's length.

Write `CAST(x AS t)`, never `x::t`, and no `:` inside SQL comments; text in single quotes is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# A quoted literal (skipped), `IN :name` (a list), or `:name` (not the second colon of a `::` cast).
_TOKEN = re.compile(r"'[^']*'|\bIN\s+:([A-Za-z_]\w*)|(?<![:\w]):([A-Za-z_]\w*)")
_ROW_LOCK = re.compile(r"\s+FOR\s+(UPDATE|SHARE)\b")
_STATEMENT_CACHE = 1024  # distinct statement texts: the store's own, and the variants of its built conditions


@dataclass(frozen=True)
class Slot:
    name: str
    is_list: bool


@dataclass(frozen=True)
class Statement:
    """A statement split at its parameters: `pieces[i]` comes before `slots[i]`, the last piece after all."""

    pieces: tuple[str, ...]
    slots: tuple[Slot, ...]


def split(text: str) -> Statement:
    pieces: list[str] = []
    slots: list[Slot] = []
    at = 0
    for match in _TOKEN.finditer(text):
        list_name, name = match.group(1), match.group(2)
        if list_name is None and name is None:
            continue  # a quoted literal
        pieces.append(text[at:match.start()] + ("IN " if list_name is not None else ""))
        slots.append(Slot(list_name or name, list_name is not None))
        at = match.end()
    pieces.append(text[at:])
    return Statement(tuple(pieces), tuple(slots))


def _missing(name: str) -> KeyError:
    return KeyError(f"the statement takes a parameter :{name} that was not given")


@dataclass(frozen=True)
class SqliteStatement:
    statement: Statement
    text: str | None  # the whole text when no parameter is a list (then it never changes)

    def bind(self, params: Mapping[str, Any], convert: Callable[[Any], Any]) -> tuple[str, list[Any]]:
        values: list[Any] = []
        parts: list[str] = []
        try:
            for piece, slot in zip(self.statement.pieces, self.statement.slots, strict=False):
                value = params[slot.name]
                if slot.is_list:
                    items = list(value)
                    # An empty list matches nothing, as `= ANY('{}')` does on PostgreSQL.
                    parts.append(piece + ("(" + ", ".join("?" * len(items)) + ")" if items else "(NULL)"))
                    values.extend(convert(item) for item in items)
                else:
                    parts.append(piece + "?")
                    values.append(convert(value))
        except KeyError as exc:
            raise _missing(str(exc.args[0])) from None
        if self.text is not None:
            return self.text, values
        parts.append(self.statement.pieces[-1])
        return "".join(parts), values


@lru_cache(maxsize=_STATEMENT_CACHE)
def for_sqlite(text: str) -> SqliteStatement:
    text = _ROW_LOCK.sub("", text).replace(" ILIKE ", " LIKE ").replace("GREATEST(", "MAX(")
    statement = split(text)
    whole = None
    if not any(slot.is_list for slot in statement.slots):
        whole = "?".join(statement.pieces)
    return SqliteStatement(statement, whole)


@dataclass(frozen=True)
class PostgresStatement:
    text: str
    names: tuple[str, ...]  # the parameter of each $n, in order

    def bind(self, params: Mapping[str, Any]) -> list[Any]:
        try:
            return [params[name] for name in self.names]
        except KeyError as exc:
            raise _missing(str(exc.args[0])) from None


@lru_cache(maxsize=_STATEMENT_CACHE)
def for_postgres(text: str) -> PostgresStatement:
    statement = split(text)
    numbers: dict[str, int] = {}
    parts: list[str] = []
    for piece, slot in zip(statement.pieces, statement.slots, strict=False):
        number = numbers.setdefault(slot.name, len(numbers) + 1)
        if slot.is_list:
            parts.append(piece.removesuffix("IN ").rstrip() + f" = ANY(${number})")
        else:
            parts.append(f"{piece}${number}")
    parts.append(statement.pieces[-1])
    return PostgresStatement("".join(parts), tuple(numbers))


def in_list(values: Sequence[Any]) -> list[Any]:
    """A list parameter (`IN :name`) without repeats, in a stable order: locks taken in one order cannot deadlock."""
    return sorted(set(values))
