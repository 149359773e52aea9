"""A SOQL subset: parser, type checks and evaluator over the in-memory store.

Supported (salesforce-api.md §2.1, §4.1): SELECT fields (parent paths like Account.Name, Owner.Email) or
COUNT(); FROM; WHERE with = != <> < > <= >= IN / NOT IN, LIKE, AND / OR / NOT and parentheses (mixing AND
and OR without parentheses is rejected, as in SOQL); string, number, boolean, null, date, datetime literals
and TODAY / YESTERDAY / TOMORROW / LAST_N_DAYS:n / NEXT_N_DAYS:n; ORDER BY with ASC/DESC and NULLS
FIRST/LAST; LIMIT; OFFSET. Errors carry Salesforce's "ERROR at Row:r:Column:c" prefix and wording.
Compiled queries are cached per (text, schema version) so the hot path does not re-parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from revdaemon.sandbox.salesforce.errors import SfError, bad_request
from revdaemon.sandbox.salesforce.schema import NUMBER_TYPES, TEXT_TYPES, FieldDef, ObjectDef, Schema
from revdaemon.sandbox.salesforce.store import Record, normalize_id
from revdaemon.sandbox.salesforce.values import parse_datetime

Lookup = Callable[[str | None], Record | None]
Getter = Callable[[Record, Lookup], Any]
Predicate = Callable[[Record, Lookup, date], bool]
# Rows a WHERE can only match if one of these holds: (field, normalizer, values), the field's normalized value
# being one of the values; the store reads them from its value indexes instead of scanning the table.
Narrowing = tuple[tuple[str, Callable[[Any], Any], frozenset[Any]], ...]
RowsWhereAny = Callable[[str, Narrowing], list[Record]]

TOKEN_RE = re.compile(r"""
 (?P<ws>\s+)
|(?P<string>'(?:[^'\\]|\\.)*')
|(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
|(?P<date>\d{4}-\d{2}-\d{2})
|(?P<number>[-+]?\d+(?:\.\d+)?)
|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
|(?P<op><=|>=|!=|<>|=|<|>)
|(?P<punct>[(),:])
""", re.VERBOSE)
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}
INVALID_FIELD_TAIL = ("If you are attempting to use a custom field, be sure to append the '__c' after the custom "
                      "field name. Please reference your WSDL or the describe call for the appropriate names.")
INVALID_RELATION_TAIL = ("If you are attempting to use a custom relationship, be sure to append the '__r' after "
                         "the custom relationship name. Please reference your WSDL or the describe call for the "
                         "appropriate names.")
INVALID_TYPE_TAIL = ("If you are attempting to use a custom object, be sure to append the '__c' after the entity "
                     "name. Please reference your WSDL or the describe call for the appropriate names.")
DATE_FUNCTIONS = {"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}
RANGE_FUNCTIONS = frozenset({"LAST_N_DAYS", "NEXT_N_DAYS"})
MAX_OFFSET = 2_000  # SOQL OFFSET ceiling


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


@dataclass(frozen=True, kw_only=True)
class Path:
    """A resolved field path; `relations` are (reference field, target object or None if polymorphic)."""

    relations: tuple[tuple[FieldDef, str | None], ...]
    field: FieldDef
    get: Getter


@dataclass(frozen=True, kw_only=True)
class Compiled:
    object: ObjectDef
    count: bool
    select: tuple[Path, ...]
    where: Predicate | None
    order: tuple[tuple[Path, bool, bool], ...]  # (path, descending, nulls_first)
    limit: int | None
    offset: int
    narrow: Narrowing | None = None


def positioned(query: str, pos: int, detail: str) -> str:
    """Salesforce's message layout: the offending line, a caret, then Row/Column and the detail."""
    row = query.count("\n", 0, pos) + 1
    start = query.rfind("\n", 0, pos) + 1
    end = query.find("\n", pos)
    line = query[start:] if end < 0 else query[start:end]
    column = pos - start + 1
    return f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{detail}"


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        match = TOKEN_RE.match(query, pos)
        if match is None:
            message = f"line {query.count(chr(10), 0, pos) + 1}:{pos} no viable alternative at character '{query[pos]}'"
            raise bad_request("MALFORMED_QUERY", message)
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(query)))
    return tokens


class Parser:
    def __init__(self, query: str, schema: Schema) -> None:
        self.query = query
        self.schema = schema
        self.tokens = tokenize(query)
        self.i = 0
        self.narrowing: dict[Predicate, Narrowing] = {}

    # ---- token helpers -----------------------------------------------------------------------------

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, token: Token, detail: str, code: str = "MALFORMED_QUERY") -> SfError:
        return bad_request(code, positioned(self.query, token.pos, detail))

    def unexpected(self, token: Token) -> SfError:
        return self.error(token, f"unexpected token: '{token.text}'")

    def expect_word(self, word: str) -> Token:
        token = self.next()
        if token.upper != word:
            raise self.unexpected(token)
        return token

    def expect_punct(self, text: str) -> Token:
        token = self.next()
        if token.text != text:
            raise self.unexpected(token)
        return token

    def accept_word(self, word: str) -> bool:
        if self.peek().upper == word:
            self.i += 1
            return True
        return False

    # ---- grammar -----------------------------------------------------------------------------------

    def parse(self) -> Compiled:
        self.expect_word("SELECT")
        count = False
        raw_fields: list[Token] = []
        if self.peek().upper == "COUNT" and self.tokens[self.i + 1].text == "(":
            self.i += 2
            self.expect_punct(")")
            count = True
        else:
            while True:
                token = self.next()
                if token.kind != "ident" or token.upper in ("FROM", "SELECT"):
                    raise self.unexpected(token)
                raw_fields.append(token)
                if self.peek().text != ",":
                    break
                self.i += 1
        self.expect_word("FROM")
        obj_token = self.next()
        if obj_token.kind != "ident":
            raise self.unexpected(obj_token)
        od = self.schema.get(obj_token.text)
        if od is None:
            raise self.error(obj_token, f"sObject type '{obj_token.text}' is not supported. {INVALID_TYPE_TAIL}",
                             "INVALID_TYPE")
        self.od = od
        select: list[Path] = []
        seen: set[str] = set()
        for token in raw_fields:
            path = self.resolve(token)
            key = token.text.lower()
            if key in seen:
                raise self.error(token, f"duplicate field selected: {token.text}")
            seen.add(key)
            select.append(path)
        where = None
        if self.accept_word("WHERE"):
            where = self.condition()
        order: list[tuple[Path, bool, bool]] = []
        if self.peek().upper == "ORDER":
            self.i += 1
            self.expect_word("BY")
            while True:
                token = self.next()
                if token.kind != "ident":
                    raise self.unexpected(token)
                path = self.resolve(token)
                descending = self.accept_word("DESC")
                if not descending:
                    self.accept_word("ASC")
                nulls_first = not descending
                if self.accept_word("NULLS"):
                    which = self.next()
                    if which.upper not in ("FIRST", "LAST"):
                        raise self.unexpected(which)
                    nulls_first = which.upper == "FIRST"
                order.append((path, descending, nulls_first))
                if self.peek().text != ",":
                    break
                self.i += 1
        limit = self.integer_clause("LIMIT")
        offset = self.integer_clause("OFFSET") or 0
        if offset > MAX_OFFSET:
            raise bad_request("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        token = self.peek()
        if token.kind != "eof":
            raise self.unexpected(token)
        return Compiled(object=od, count=count, select=tuple(select), where=where, order=tuple(order),
                        limit=limit, offset=offset, narrow=self.narrowing.get(where) if where else None)

    def integer_clause(self, word: str) -> int | None:
        if not self.accept_word(word):
            return None
        token = self.next()
        if token.kind != "number" or not token.text.isdigit():
            raise self.unexpected(token)
        return int(token.text)

    def resolve(self, token: Token) -> Path:
        parts = token.text.split(".")
        od: ObjectDef | None = self.od
        relations: list[tuple[FieldDef, str | None]] = []
        for part in parts[:-1]:
            ref = od.relationship(part) if od else None
            if ref is None:
                raise self.error(token, f"Didn't understand relationship '{part}' in field path. "
                                        f"{INVALID_RELATION_TAIL}", "INVALID_FIELD")
            target = ref.reference_to[0] if len(ref.reference_to) == 1 else None
            relations.append((ref, target))
            od = self.schema.get(target) if target else None
        last = parts[-1]
        if od is not None:
            field = od.field(last)
            entity = od.name
        else:  # polymorphic parent: the field must exist on one of the targets
            candidates = [self.schema.get(t) for t in relations[-1][0].reference_to]
            found = [c.field(last) for c in candidates if c and c.field(last)]
            field = found[0] if found else None
            entity = "Name"
        if field is None:
            raise self.error(token, f"No such column '{last}' on entity '{entity}'. {INVALID_FIELD_TAIL}",
                             "INVALID_FIELD")
        return Path(relations=tuple(relations), field=field, get=_getter(tuple(r[0].name for r in relations),
                                                                          field.name))

    def condition(self) -> Predicate:
        first = self.unary()
        joiner = self.peek().upper
        if joiner not in ("AND", "OR"):
            return first
        parts = [first]
        while self.peek().upper in ("AND", "OR"):
            token = self.next()
            if token.upper != joiner:
                raise self.unexpected(token)  # SOQL needs parentheses to mix AND and OR
            parts.append(self.unary())
        narrowed = [self.narrowing.get(p) for p in parts]
        predicate: Predicate
        if joiner == "AND":
            predicate = lambda r, lk, today: all(p(r, lk, today) for p in parts)  # noqa: E731
            narrowest = next((n for n in narrowed if n is not None), None)
            if narrowest is not None:
                self.narrowing[predicate] = narrowest  # a row must pass every part, so any one part's narrowing
        else:
            predicate = lambda r, lk, today: any(p(r, lk, today) for p in parts)  # noqa: E731
            if all(n is not None for n in narrowed):
                self.narrowing[predicate] = tuple(a for n in narrowed if n is not None for a in n)
        return predicate

    def unary(self) -> Predicate:
        if self.accept_word("NOT"):
            inner = self.unary()
            return lambda r, lk, today: not inner(r, lk, today)
        if self.peek().text == "(":
            self.i += 1
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        token = self.next()
        if token.kind != "ident" or token.upper in ("AND", "OR", "NOT"):
            raise self.unexpected(token)
        path = self.resolve(token)
        op_token = self.next()
        op = op_token.text if op_token.kind == "op" else op_token.upper
        if op == "NOT":
            self.expect_word("IN")
            op = "NOT IN"
        if op in ("IN", "NOT IN"):
            self.expect_punct("(")
            values = [self.literal(path.field)]
            while self.peek().text == ",":
                self.i += 1
                values.append(self.literal(path.field))
            self.expect_punct(")")
            membership = _membership(path, values, negate=op == "NOT IN")
            if op == "IN":
                self.narrow(membership, path, values)
            return membership
        if op == "LIKE":
            literal = self.next()
            if literal.kind != "string":
                raise self.unexpected(literal)
            return _like(path, _unquote(literal.text))
        if op_token.kind != "op":
            raise self.unexpected(op_token)
        literal = self.literal(path.field)
        compared = _compare(path, "!=" if op == "<>" else op, literal)
        if op == "=" and literal is not None:
            self.narrow(compared, path, [literal])
        return compared

    def narrow(self, predicate: Predicate, path: Path, values: list[Any]) -> None:
        """Notes that `predicate` holds only for rows whose field is one of `values` (normalized), for a field
        of the queried object whose values are ids or text (hashable, compared as lowered strings)."""
        field = path.field
        if path.relations or not (field.type in TEXT_TYPES or field.type in ("id", "reference")):
            return
        if any(isinstance(v, DayRange) for v in values):
            return
        self.narrowing[predicate] = ((field.name, _normalizer(field), frozenset(values)),)

    def literal(self, field: FieldDef) -> Any:
        """Reads one literal and checks it against the field's type, as SOQL does."""
        token = self.next()
        kind, ftype = token.kind, field.type
        if token.upper == "NULL":
            return None
        if ftype in ("id", "reference"):
            if kind != "string":
                raise self.type_error(token, field, "id", quoted=True)
            value = normalize_id(_unquote(token.text))
            if value is None:
                raise self.error(token, f"invalid ID field: {_unquote(token.text)}",
                                 "INVALID_QUERY_FILTER_OPERATOR")
            return value.lower()
        if ftype in TEXT_TYPES:
            if kind != "string":
                raise self.type_error(token, field, "string", quoted=True)
            return _unquote(token.text).lower()
        if ftype == "boolean":
            if token.upper not in ("TRUE", "FALSE"):
                raise self.type_error(token, field, "boolean")
            return token.upper == "TRUE"
        if ftype in NUMBER_TYPES:
            if kind != "number":
                raise self.type_error(token, field, "integer" if ftype == "int" else "double")
            return float(token.text)
        if ftype in ("date", "datetime"):
            if token.upper in DATE_FUNCTIONS:
                offset = DATE_FUNCTIONS[token.upper]
                return DayRange(offset, offset + 1)
            if token.upper in RANGE_FUNCTIONS:
                self.expect_punct(":")
                n_token = self.next()
                if n_token.kind != "number" or not n_token.text.isdigit():
                    raise self.unexpected(n_token)
                n = int(n_token.text)
                return DayRange(-n, 1) if token.upper == "LAST_N_DAYS" else DayRange(1, n + 1)
            if ftype == "date" and kind == "date":
                return token.text
            if ftype == "datetime" and kind == "datetime":
                try:
                    return parse_datetime(token.text).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
                except ValueError as exc:
                    raise self.unexpected(token) from exc
            raise self.type_error(token, field, "date" if ftype == "date" else "dateTime")
        raise self.unexpected(token)

    def type_error(self, token: Token, field: FieldDef, kind: str, quoted: bool = False) -> SfError:
        quotes = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
        return self.error(token, f"value of filter criterion for field '{field.name}' must be of type {kind} and "
                                 f"{quotes}", "INVALID_FIELD")


@dataclass(frozen=True, slots=True)
class DayRange:
    """A relative date literal: days [start, end) counted from today (UTC)."""

    start: int
    end: int

    def bounds(self, today: date) -> tuple[str, str]:
        return (today + timedelta(days=self.start)).isoformat(), (today + timedelta(days=self.end)).isoformat()


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(1)), body) if "\\" in body else body


def _getter(relations: tuple[str, ...], name: str) -> Getter:
    if not relations:
        return lambda record, lookup: record.get(name)

    def get(record: Record, lookup: Lookup) -> Any:
        current: Record | None = record
        for ref in relations:
            current = lookup(current.get(ref)) if current is not None else None
        return current.get(name) if current is not None else None

    return get


def _lowered(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def _to_seconds(v: Any) -> Any:
    return v[:19] if isinstance(v, str) else v  # comparisons ignore milliseconds (§4.1)


def _to_float(v: Any) -> Any:
    return float(v) if v is not None else None


def _as_is(v: Any) -> Any:
    return v


def _normalizer(field: FieldDef) -> Callable[[Any], Any]:
    """Record value -> comparable form matching what `Parser.literal` produced (one function per kind, so the
    store's value indexes are keyed by it)."""
    if field.type in TEXT_TYPES or field.type in ("id", "reference"):
        return _lowered
    if field.type == "datetime":
        return _to_seconds
    if field.type in NUMBER_TYPES:
        return _to_float
    return _as_is


def _compare(path: Path, op: str, literal: Any) -> Predicate:
    get, norm = path.get, _normalizer(path.field)
    is_datetime = path.field.type == "datetime"
    if literal is None:
        if op == "=":
            return lambda r, lk, today: get(r, lk) is None
        if op == "!=":
            return lambda r, lk, today: get(r, lk) is not None
        return lambda r, lk, today: False
    if isinstance(literal, DayRange):
        day_range = literal

        def in_range(r: Record, lk: Lookup, today: date) -> bool:
            value = get(r, lk)
            if value is None:
                return op == "!="
            day = str(value)[:10] if is_datetime else str(value)
            start, end = day_range.bounds(today)
            return {"=": start <= day < end, "!=": not start <= day < end, "<": day < start, "<=": day < end,
                    ">": day >= end, ">=": day >= start}[op]

        return in_range
    if op == "=":
        return lambda r, lk, today: norm(get(r, lk)) == literal
    if op == "!=":
        return lambda r, lk, today: norm(get(r, lk)) != literal
    compare: Callable[[Any, Any], bool] = {
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    }[op]

    def ordered(r: Record, lk: Lookup, today: date) -> bool:
        value = norm(get(r, lk))
        return value is not None and compare(value, literal)

    return ordered


def _membership(path: Path, values: list[Any], *, negate: bool) -> Predicate:
    get, norm = path.get, _normalizer(path.field)
    allowed = frozenset(v for v in values if not isinstance(v, DayRange))
    if negate:
        return lambda r, lk, today: norm(get(r, lk)) not in allowed
    return lambda r, lk, today: norm(get(r, lk)) in allowed


def _like(path: Path, pattern: str) -> Predicate:
    regex_text = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    regex = re.compile(regex_text, re.IGNORECASE | re.DOTALL)
    get = path.get
    return lambda r, lk, today: isinstance(v := get(r, lk), str) and regex.fullmatch(v) is not None


class QueryEngine:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._cache: dict[tuple[str, int], Compiled] = {}

    def compile(self, query: str, schema: Schema | None = None) -> Compiled:
        """Compiles against `schema` (a user's view, permissions.py) or the engine's own."""
        schema = schema or self.schema
        key = (query, schema.version)
        compiled = self._cache.get(key)
        if compiled is None:
            if not query.strip():
                raise bad_request("MALFORMED_QUERY", "A query string has to be specified")
            compiled = Parser(query, schema).parse()
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[key] = compiled
        return compiled

    def run(self, compiled: Compiled, table: dict[str, Record], lookup: Lookup, *, include_deleted: bool,
            now: float, rows_where_any: RowsWhereAny | None = None) -> list[Record]:
        """The matching rows in the table's order, then sorted. With `rows_where_any` (the store's) and a WHERE
        that names the values a row must have (`Id IN (...)`, `A = 'x' OR B IN (...)`), only those rows are read
        and tested, so a query costs what it touches, not the table's size (issue 30)."""
        today = datetime.fromtimestamp(now, UTC).date()
        where = compiled.where
        scanned = (rows_where_any(compiled.object.name, compiled.narrow)
                   if rows_where_any is not None and compiled.narrow is not None else table.values())
        rows = [r for r in scanned
                if (include_deleted or not r["IsDeleted"]) and (where is None or where(r, lookup, today))]
        for path, descending, nulls_first in reversed(compiled.order):
            get, norm = path.get, _normalizer(path.field)
            null_rank = 0 if nulls_first != descending else 1

            def key(r: Record, get: Getter = get, norm: Callable[[Any], Any] = norm,
                    null_rank: int = null_rank) -> tuple[Any, ...]:
                value = norm(get(r, lookup))
                return (null_rank,) if value is None else (1 - null_rank, value)

            rows.sort(key=key, reverse=descending)
        rows = rows[compiled.offset:]
        if compiled.limit is not None:
            rows = rows[:compiled.limit]
        return rows


def project(compiled: Compiled, record: Record, lookup: Lookup, version: str,
            object_of: Callable[[str], str | None]) -> dict[str, Any]:
    """A query result record: attributes plus the selected fields, parents nested by relationship name."""
    out: dict[str, Any] = {"attributes": {"type": compiled.object.name,
                                          "url": f"/services/data/v{version}/sobjects/{compiled.object.name}/"
                                                 f"{record['Id']}"}}
    for path in compiled.select:
        if not path.relations:
            out[path.field.name] = record.get(path.field.name)
            continue
        node: dict[str, Any] = out
        current: Record | None = record
        for ref, _target in path.relations:
            name = ref.relationship_name or ref.name
            parent = lookup(current.get(ref.name)) if current is not None else None
            if parent is None:
                node[name] = None
                current = None
                break
            child = node.get(name)
            if not isinstance(child, dict):
                kind = object_of(parent["Id"]) or ""
                child = {"attributes": {"type": kind, "url": f"/services/data/v{version}/sobjects/{kind}/"
                                                             f"{parent['Id']}"}}
                node[name] = child
            node, current = child, parent
        if current is not None:
            node[path.field.name] = current.get(path.field.name)
    return out
