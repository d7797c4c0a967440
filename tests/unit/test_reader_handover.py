"""How the projector takes what its reading process handed over (over a real pipe)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection

import pytest

from hookline.log.reader import OffsetGap
from hookline.log.reader_process import take

SENDERS: list[Connection] = []  # the reading process's ends, open as a live child's would be


def handed_over(*batches: list[int]) -> Connection:
    receiving, sending = multiprocessing.Pipe(duplex=False)
    for offsets in batches:
        sending.send(("batch", [(offset, b"r%d" % offset) for offset in offsets]))
    SENDERS.append(sending)
    return receiving


def test_handovers_of_a_record_or_two_are_taken_as_one_batch() -> None:
    pipe = handed_over([0], [1, 2], [3], [4])
    records = take(pipe, batch_size=100, wait=0.1)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert [r.body for r in records] == [b"r0", b"r1", b"r2", b"r3", b"r4"]


def test_a_batch_stops_growing_once_it_reaches_the_batch_size() -> None:
    pipe = handed_over([0, 1, 2], [3, 4, 5], [6, 7, 8])
    assert [r.offset for r in take(pipe, batch_size=4, wait=0.1)] == [0, 1, 2, 3, 4, 5]
    assert [r.offset for r in take(pipe, batch_size=4, wait=0.1)] == [6, 7, 8]


def test_nothing_handed_over_is_an_empty_take_after_the_wait() -> None:
    assert take(handed_over(), batch_size=10, wait=0.05) == []


def test_an_error_handed_over_is_raised_in_the_projector() -> None:
    receiving = handed_over([0])
    SENDERS[-1].send(("error", OffsetGap("stream s starts at offset 9 but offset 1 was expected")))
    with pytest.raises(OffsetGap, match="starts at offset 9"):
        take(receiving, batch_size=10, wait=0.1)


def test_a_reading_process_that_died_is_an_eoferror_once_its_records_are_taken() -> None:
    receiving = handed_over([0, 1])
    SENDERS.pop().close()
    assert [r.offset for r in take(receiving, batch_size=2, wait=0.1)] == [0, 1]
    with pytest.raises(EOFError):
        take(receiving, batch_size=2, wait=0.1)
