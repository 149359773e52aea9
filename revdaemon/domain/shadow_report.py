"""The shadow report: what shadow mode would have written, per flow and object, and what a person should look at
before going live (issue 29). Pure: built from the entries the store kept (engine/shadow.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("create", "update", "activate", "delete")


@dataclass(frozen=True, kw_only=True)
class ShadowLine:
    """A shadow entry as the report reads it (the store's ShadowEntry has these fields)."""

    event_key: str
    flow: str
    outcome: str  # "write" | "conflict" | "error" | "nothing"
    system: str | None = None
    action: str | None = None
    target: str | None = None
    warnings: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    note: str | None = None
    changes: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, kw_only=True)
class ShadowReport:
    events: int = 0
    counts: dict[tuple[str, str, str], Counter[str]] = field(default_factory=dict)  # (flow, system, object) -> action
    left_alone: Counter[str] = field(default_factory=Counter)  # flow -> events it would have written nothing for
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "writes": self.writes,
                "counts": [{"flow": flow, "system": system, "object": obj, **{a: n.get(a, 0) for a in ACTIONS}}
                           for (flow, system, obj), n in sorted(self.counts.items())],
                "left_alone": dict(sorted(self.left_alone.items())), "conflicts": self.conflicts,
                "dead_letters": self.dead_letters, "flags": self.flags}


def object_of(target: str | None) -> str:
    """The object a write's target names: 'Account 001…' -> Account, 'Order for opportunity 006…' -> Order."""
    return (target or "?").split(" ", 1)[0]


def action_of(action: str | None) -> str:
    """'create (unless found)' -> create: the report counts what would be sent, whatever it is matched by."""
    return (action or "?").split(" ", 1)[0]


def build_report(lines: Iterable[ShadowLine]) -> ShadowReport:
    counts: dict[tuple[str, str, str], Counter[str]] = {}
    left_alone: Counter[str] = Counter()
    events: set[str] = set()
    written: set[tuple[str, str]] = set()  # (event, flow) that would write: "nothing" is only for the others
    conflicts: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    nothing: list[ShadowLine] = []
    for line in lines:
        events.add(line.event_key)
        where = {"event_key": line.event_key, "flow": line.flow}
        if line.outcome == "write":
            written.add((line.event_key, line.flow))
            key = (line.flow, line.system or "?", object_of(line.target))
            counts.setdefault(key, Counter())[action_of(line.action)] += 1
            # The write's system beside its target: a page names the record by it (record_names.target_ref).
            if line.warnings:
                dead.append({**where, "system": line.system, "target": line.target, "why": "; ".join(line.warnings)})
            flags += [{**where, "system": line.system, "target": line.target, "flag": flag} for flag in line.flags]
        elif line.outcome == "conflict":
            conflicts.append({**where, "reason": line.note})
        elif line.outcome == "error":
            dead.append({**where, "system": None, "target": None, "why": line.note})
        else:
            nothing.append(line)
    for line in nothing:
        if (line.event_key, line.flow) not in written:
            left_alone[line.flow] += 1
    return ShadowReport(events=len(events), counts=counts, left_alone=left_alone, conflicts=conflicts,
                        dead_letters=dead, flags=flags)
