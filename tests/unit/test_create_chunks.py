"""How the executor cuts batched creates: 200 records a Collections call, fewer when the lookup's text is long."""

from __future__ import annotations

from revdaemon.engine.executor import LOOKUP_TEXT_MAX, PendingWrite, _lookup_chunks, _match_key
from revdaemon.flows.plan import SfCreate

NAMES = ("Subject", "WhatId")


def pair(index: int, subject_length: int = 20) -> tuple[tuple[str, ...], list[PendingWrite]]:
    subject = f"{index:05d}".ljust(subject_length, "x")
    write = SfCreate(sobject="Task", fields={"WhatId": "001000000000001AAA", "Subject": subject},
                     match={"WhatId": "001000000000001AAA", "Subject": subject}, idem_key=f"k{index}")
    return _match_key(write.match, NAMES), [PendingWrite(write=write, event_id=None)]


def test_at_most_200_records_a_chunk() -> None:
    chunks = _lookup_chunks([pair(i, subject_length=5) for i in range(450)], NAMES)
    assert [len(c) for c in chunks] == [200, 200, 50]


def test_long_match_values_make_smaller_chunks_under_the_text_limit() -> None:
    chunks = _lookup_chunks([pair(i, subject_length=255) for i in range(200)], NAMES)
    assert len(chunks) > 1 and sum(len(c) for c in chunks) == 200
    for chunk in chunks:
        text = sum(len(p[1][0].write.match["Subject"]) + len(p[1][0].write.match["WhatId"]) for p in chunk)
        assert text <= LOOKUP_TEXT_MAX


def test_ids_compare_by_15_characters_and_text_without_case() -> None:
    assert _match_key({"WhatId": "001000000000001", "Subject": "Kick-Off"}, NAMES) == \
        _match_key({"WhatId": "001000000000001AAA", "Subject": "kick-off"}, NAMES)
    assert _match_key({"WhatId": "001000000000001", "Subject": "a"}, NAMES) != \
        _match_key({"WhatId": "001000000000002", "Subject": "a"}, NAMES)
