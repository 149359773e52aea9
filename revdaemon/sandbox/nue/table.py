"""A table of records by id that also knows each id's position and indexes records by chosen fields.

A plain dict answers "by id"; "the subscriptions of customer X" or "the assets of order Y" needed a pass over
the whole table, so a request cost in proportion to everything the simulator holds and a burst's setup and reads
grew quadratically (issue 30). A `Table` keeps, on every write through it:

- each id's insertion position, so a subset read through an index comes back in the table's own order (the order
  a full pass would have produced: a dict keeps first-insertion order, a popped and re-added id goes last);
- one index per name: `keys(record)` -> the values the record is found under (a customer id, the order ids a
  subscription belongs to). The values are taken when the record is stored; a field changed in place afterwards
  is re-read by `reindex(id)`, which whoever changes it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Record = dict[str, Any]
Keys = Callable[[Record], Iterable[Any]]


def field(name: str) -> Keys:
    """An index on one field's value; a value that cannot be a key (a JSON list or object a PATCH stored) is not
    filed: it never equals the ids and strings an index is asked for."""
    def keys(record: Record) -> tuple[Any, ...]:
        value = record.get(name)
        try:
            hash(value)
        except TypeError:
            return ()
        return (value,)

    return keys


class Table(dict[str, Record]):
    def __init__(self, **indexes: Keys) -> None:
        super().__init__()
        self._keys = indexes
        self._positions: dict[str, int] = {}
        self._next = 0
        self._indexes: dict[str, dict[Any, set[str]]] = {name: {} for name in indexes}
        self._filed: dict[str, dict[str, tuple[Any, ...]]] = {}  # id -> index name -> values filed under

    # --- writes ----------------------------------------------------------------------------------------
    def __setitem__(self, key: str, record: Record) -> None:
        if key in self:
            self._unfile(key)
        else:
            self._positions[key] = self._next
            self._next += 1
        super().__setitem__(key, record)
        self._file(key, record)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._unfile(key)
        del self._positions[key]

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            record = self[key]
            del self[key]
            return record
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key: str, default: Record | None = None) -> Record:
        if key not in self:
            self[key] = default if default is not None else {}
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, record in dict(*args, **kwargs).items():
            self[key] = record

    def __ior__(self, other: Any) -> Table:  # type: ignore[override,misc]
        self.update(other)
        return self

    def popitem(self) -> tuple[str, Record]:
        key = next(reversed(self))
        return key, self.pop(key)

    def clear(self) -> None:
        super().clear()
        self._positions.clear()
        self._filed.clear()
        for index in self._indexes.values():
            index.clear()

    def reindex(self, key: str) -> None:
        """Re-files a record whose indexed fields were changed in place."""
        if key in self:
            self._unfile(key)
            self._file(key, self[key])

    # --- reads -----------------------------------------------------------------------------------------
    def where(self, index: str, values: Iterable[Any]) -> list[Record]:
        """The records filed under any of `values` in `index`, in the table's order."""
        found: set[str] = set()
        entries = self._indexes[index]
        for value in values:
            found.update(entries.get(value, ()))
        return self.ordered(found)

    def ordered(self, keys: Iterable[str]) -> list[Record]:
        """The records of these ids (unknown ones skipped, each once), in the table's order."""
        present = {key for key in keys if key in self}
        return [self[key] for key in sorted(present, key=self._positions.__getitem__)]

    def indexed(self, index: str) -> bool:
        return index in self._indexes

    # --- bookkeeping -----------------------------------------------------------------------------------
    def _file(self, key: str, record: Record) -> None:
        filed: dict[str, tuple[Any, ...]] = {}
        for name, keys in self._keys.items():
            values = tuple(dict.fromkeys(keys(record)))
            entries = self._indexes[name]
            for value in values:
                entries.setdefault(value, set()).add(key)
            filed[name] = values
        self._filed[key] = filed

    def _unfile(self, key: str) -> None:
        for name, values in self._filed.pop(key, {}).items():
            entries = self._indexes[name]
            for value in values:
                ids = entries.get(value)
                if ids is not None:
                    ids.discard(key)
                    if not ids:
                        del entries[value]
