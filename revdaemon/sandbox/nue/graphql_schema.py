"""The GraphQL subset used for polling [assumed, Hasura-style]: `Customer`, `Order`, `Subscription`,
`Invoice`, `Quote` with `where` (`_eq _neq _gt _gte _lt _lte _in`, `_and`/`_or`), `order_by` (several
fields, asc/desc, as one object in the written order or a list of objects), `limit`, `offset`.

Built with graphql-core: a schema, one resolver per root field, parsed/validated documents cached by text.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from graphql import (
    ExecutionResult,
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    ListValueNode,
    ObjectValueNode,
    VariableNode,
    execute,
    parse,
    validate,
)
from graphql.error import GraphQLError

from revdaemon.sandbox.nue.graphql_fields import DERIVED, FIELDS, B, F, N, S

Row = dict[str, Any]

OPERATORS = ("_eq", "_neq", "_gt", "_gte", "_lt", "_lte", "_in")

ORDER_BY = GraphQLEnumType("order_by", {"asc": "asc", "desc": "desc"})


def _comparison(scalar: GraphQLScalarType) -> GraphQLInputObjectType:
    fields = {op: GraphQLInputField(scalar) for op in OPERATORS if op != "_in"}
    fields["_in"] = GraphQLInputField(GraphQLList(GraphQLNonNull(scalar)))
    return GraphQLInputObjectType(f"{scalar.name}_comparison_exp", fields)


COMPARISONS = {scalar.name: _comparison(scalar) for scalar in (S, F, N, B)}


def _bool_exp(type_name: str) -> GraphQLInputObjectType:
    def fields() -> dict[str, GraphQLInputField]:
        out = {name: GraphQLInputField(COMPARISONS[scalar.name]) for name, scalar in FIELDS[type_name].items()
               if isinstance(scalar, GraphQLScalarType)}  # list fields are selected, not filtered
        out["_and"] = GraphQLInputField(GraphQLList(GraphQLNonNull(expression)))
        out["_or"] = GraphQLInputField(GraphQLList(GraphQLNonNull(expression)))
        return out

    expression = GraphQLInputObjectType(f"{type_name}_bool_exp", fields)
    return expression


def _order_by(type_name: str) -> GraphQLInputObjectType:
    return GraphQLInputObjectType(f"{type_name}_order_by",
                                  {name: GraphQLInputField(ORDER_BY) for name, kind in FIELDS[type_name].items()
                                   if isinstance(kind, GraphQLScalarType)})


# --- filtering and sorting ------------------------------------------------------------------------------
def _matches(row: Row, where: dict[str, Any]) -> bool:
    for key, condition in where.items():
        if key == "_and":
            if not all(_matches(row, sub) for sub in condition):
                return False
            continue
        if key == "_or":
            if not any(_matches(row, sub) for sub in condition):
                return False
            continue
        value = row.get(key)
        for op, operand in condition.items():
            if not _compare(value, op, operand):
                return False
    return True


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "_in":
        return operand is not None and value in operand
    if operand is None:
        return True  # Hasura ignores a null comparison
    if value is None:
        return op == "_neq"
    if op == "_eq":
        return bool(value == operand)
    if op == "_neq":
        return bool(value != operand)
    if op == "_gt":
        return bool(value > operand)
    if op == "_gte":
        return bool(value >= operand)
    if op == "_lt":
        return bool(value < operand)
    return bool(value <= operand)


def _written(node: Any, raw_variables: dict[str, Any]) -> Any:
    """The order_by argument as written: field names in the query's order (values are not needed)."""
    if isinstance(node, VariableNode):
        return raw_variables.get(node.name.value)
    if isinstance(node, ObjectValueNode):
        return {f.name.value: None for f in node.fields}
    if isinstance(node, ListValueNode):
        return [_written(v, raw_variables) for v in node.values]
    return None


def _order_keys(info: GraphQLResolveInfo[Any], raw_variables: dict[str, Any], coerced: list[dict[str, str]]
                ) -> list[tuple[str, str]]:
    """Sort keys in the order the query wrote them (coercion reorders an object's fields to the schema's)."""
    node = next((a.value for a in info.field_nodes[0].arguments or [] if a.name.value == "order_by"), None)
    written = _written(node, raw_variables)
    items = written if isinstance(written, list) else [written]
    keys: list[tuple[str, str]] = []
    for index, coerced_item in enumerate(coerced):
        item = items[index] if index < len(items) else None
        order = list(item) if isinstance(item, dict) else list(coerced_item)
        keys.extend((name, coerced_item[name]) for name in order if name in coerced_item)
    return keys


def _sort(rows: list[Row], keys: list[tuple[str, str]]) -> list[Row]:
    # Stable sorts from the last key to the first; None sorts last ascending, first descending.
    for name, direction in reversed(keys):
        present = [r for r in rows if r.get(name) is not None]
        missing = [r for r in rows if r.get(name) is None]
        present.sort(key=lambda r, n=name: r[n], reverse=direction == "desc")  # type: ignore[misc]
        rows = present + missing if direction == "asc" else missing + present
    return rows


def _floaty(row: Row) -> Row:
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()}


# A constraint every row of the answer meets: (field, strings), the row's field being one of the strings.
Constraint = tuple[str, frozenset[str]]
# type name, constraints -> rendered rows (a snapshot) in the table's order: every row meeting all the
# constraints, and possibly others (the resolver still filters on the whole `where`).
Source = Callable[[str, list[Constraint]], list[Row]]


def constraints(type_name: str, where: dict[str, Any] | None) -> list[Constraint]:
    """What `where` requires of a row through `_eq` / `_in` on a string (top level or under `_and`), so the
    source can read only the rows named (by id, through an index, or by one cheap look at the stored field
    instead of rendering every row: a read cost in proportion to the whole table; issue 30). Derived fields are
    left out: their value is not the stored one."""
    found: list[Constraint] = []
    derived = DERIVED.get(type_name, {})
    for key, condition in (where or {}).items():
        if key == "_and":
            for sub in condition or []:
                found += constraints(type_name, sub)
            continue
        if key == "_or" or key in derived or not isinstance(condition, dict):
            continue
        listed = condition.get("_in")
        if isinstance(listed, list) and all(isinstance(v, str) for v in listed):
            found.append((key, frozenset(listed)))
        equal = condition.get("_eq")
        if isinstance(equal, str):
            found.append((key, frozenset((equal,))))
    return found


def build_schema(source: Source) -> GraphQLSchema:
    def resolver(type_name: str) -> Callable[..., list[Row]]:
        def resolve(_root: Any, info: GraphQLResolveInfo[Any], where: dict[str, Any] | None = None,
                    order_by: Any = None, limit: int | None = None, offset: int | None = None) -> list[Row]:
            if (limit is not None and limit < 0) or (offset is not None and offset < 0):
                raise GraphQLError("limit and offset must not be negative")
            derive = DERIVED.get(type_name, {})
            rows = [_floaty({**r, **{k: f(r) for k, f in derive.items()}})
                    for r in source(type_name, constraints(type_name, where))]
            if where:
                rows = [r for r in rows if _matches(r, where)]
            if order_by:
                rows = _sort(rows, _order_keys(info, info.context.get("variables", {}), order_by))
            start = offset or 0
            return rows[start:start + limit] if limit is not None else rows[start:]

        return resolve

    query_fields = {}
    for type_name, fields in FIELDS.items():
        object_type = GraphQLObjectType(type_name, {name: GraphQLField(scalar) for name, scalar in fields.items()})
        order_by = _order_by(type_name)
        query_fields[type_name] = GraphQLField(
            GraphQLNonNull(GraphQLList(GraphQLNonNull(object_type))),
            args={
                "where": GraphQLArgument(_bool_exp(type_name)),
                "order_by": GraphQLArgument(GraphQLList(GraphQLNonNull(order_by))),
                "limit": GraphQLArgument(N),
                "offset": GraphQLArgument(N),
            },
            resolve=resolver(type_name),
        )
    return GraphQLSchema(GraphQLObjectType("query_root", query_fields))


class GraphQLEndpoint:
    """Runs queries against the schema; parsed and validated documents are cached by their text."""

    def __init__(self, source: Source, cache_size: int = 256) -> None:
        self.schema = build_schema(source)
        self._cache: dict[str, Any] = {}
        self._cache_size = cache_size

    def run(self, query: str, variables: dict[str, Any] | None,
            operation_name: str | None) -> tuple[dict[str, Any], bool]:
        """The response body and whether the request itself was invalid."""
        document = self._cache.get(query)
        if document is None:
            try:
                document = parse(query)
            except GraphQLError as error:
                return {"errors": [error.formatted]}, True
            errors = validate(self.schema, document)
            if errors:
                return {"errors": [e.formatted for e in errors]}, True
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[query] = document
        result = execute(self.schema, document, variable_values=variables, operation_name=operation_name,
                         context_value={"variables": variables or {}})
        assert isinstance(result, ExecutionResult)  # every resolver is synchronous
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
        return body, False
