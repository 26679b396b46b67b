"""Commit bookkeeping: out-of-order completion never commits past unfinished work."""

from __future__ import annotations

import random

import pytest
from aiokafka import TopicPartition

from consumers.offsets import OffsetTracker

TP0 = TopicPartition("ocr.requests", 0)
TP1 = TopicPartition("ocr.requests", 1)
OTHER = TopicPartition("other", 0)


def tracker_with(tp: TopicPartition, offsets: range | list[int]) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.admit(tp, offset)
    return tracker


@pytest.mark.parametrize(
    ("finished", "expected"),
    [
        ([], None),
        ([11], None),
        ([10], 11),
        ([11, 12], None),
        ([12, 10], 11),
        ([12, 11, 10], 13),
        ([10, 12], 11),
        ([13, 12, 11], None),
        ([10, 11, 12, 13], 14),
        ([13, 11, 12, 10], 14),
    ],
)
def test_commits_only_up_to_the_first_unfinished(
    finished: list[int], expected: int | None
) -> None:
    tracker = tracker_with(TP0, range(10, 14))
    for offset in finished:
        tracker.finish(TP0, offset)
    assert tracker.ready().get(TP0) == expected
    unfinished = [o for o in range(10, 14) if o not in finished]
    assert tracker.first_unfinished(TP0) == (unfinished[0] if unfinished else None)
    # pending() counts what cannot be committed yet: from the first unfinished on.
    assert tracker.pending(TP0) == (14 - unfinished[0] if unfinished else 0)


def test_gaps_between_admitted_offsets_are_fine() -> None:
    """Compacted topics and transaction markers leave holes in the offsets."""
    tracker = tracker_with(TP0, [3, 7, 20])
    tracker.finish(TP0, 7)
    assert tracker.ready() == {}
    tracker.finish(TP0, 3)
    assert tracker.ready() == {TP0: 8}
    tracker.finish(TP0, 20)
    assert tracker.ready() == {TP0: 21}


def test_random_completion_order_never_commits_past_unfinished() -> None:
    rng = random.Random(7)
    offsets = list(range(100))
    tracker = tracker_with(TP0, offsets)
    order = offsets[:]
    rng.shuffle(order)
    done: set[int] = set()
    last = None
    for offset in order:
        tracker.finish(TP0, offset)
        done.add(offset)
        ready = tracker.ready().get(TP0)
        if ready is not None:
            assert all(o in done for o in range(ready))
            assert ready not in done
            assert last is None or ready >= last
            tracker.committed({TP0: ready})
            last = ready
    assert last == 100


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.admit(TP0, offset)
        tracker.admit(TP1, offset + 100)
        tracker.admit(OTHER, offset)
    tracker.finish(TP1, 100)
    tracker.finish(TP1, 101)
    tracker.finish(TP0, 1)
    tracker.finish(OTHER, 0)
    assert tracker.ready() == {TP1: 102, OTHER: 1}
    assert tracker.pending() == 5 + 3 + 4
    assert tracker.pending(TP0) == 5


def test_ready_only_returns_offsets_that_moved_since_the_commit() -> None:
    tracker = tracker_with(TP0, range(3))
    tracker.admit(TP1, 0)
    tracker.finish(TP0, 0)
    tracker.finish(TP1, 0)
    assert tracker.ready() == {TP0: 1, TP1: 1}
    tracker.committed({TP0: 1})
    assert tracker.ready() == {TP1: 1}
    tracker.committed({TP1: 1})
    assert tracker.ready() == {}
    tracker.finish(TP0, 2)  # 1 is still running
    assert tracker.ready() == {}
    tracker.finish(TP0, 1)
    assert tracker.ready() == {TP0: 3}
    tracker.committed({TP0: 3})
    assert tracker.ready() == {}


def test_ready_is_repeated_until_committed() -> None:
    """A failed commit is retried: the offset stays ready until it is acknowledged."""
    tracker = tracker_with(TP0, [0])
    tracker.finish(TP0, 0)
    assert tracker.ready() == {TP0: 1}
    assert tracker.ready() == {TP0: 1}


def test_forget_on_revoke_drops_the_partition() -> None:
    tracker = tracker_with(TP0, range(3))
    tracker.admit(TP1, 0)
    tracker.finish(TP0, 0)
    tracker.forget(TP0)
    assert tracker.ready() == {}
    assert tracker.pending() == 1
    assert tracker.first_unfinished(TP0) is None
    # A task of the revoked partition that finishes late changes nothing.
    tracker.finish(TP0, 1)
    tracker.finish(TP0, 2)
    assert tracker.ready() == {}
    tracker.committed({TP0: 3})
    assert tracker.ready() == {}


def test_reassigned_partition_starts_fresh_after_forget() -> None:
    tracker = tracker_with(TP0, range(5, 8))
    tracker.finish(TP0, 5)
    tracker.committed({TP0: 6})
    tracker.forget(TP0)
    # The new owner's view: replay from the committed offset.
    tracker.admit(TP0, 6)
    tracker.finish(TP0, 6)
    assert tracker.ready() == {TP0: 7}


def test_forget_of_an_unknown_partition_is_harmless() -> None:
    tracker = OffsetTracker()
    tracker.forget(TP0)
    tracker.finish(TP0, 3)
    assert tracker.ready() == {}
    assert tracker.pending() == 0


@pytest.mark.parametrize("offset", [4, 5, 0])
def test_admit_out_of_order_raises(offset: int) -> None:
    tracker = tracker_with(TP0, [3, 5])
    with pytest.raises(ValueError, match="out of order"):
        tracker.admit(TP0, offset)


def test_admit_after_everything_finished_continues() -> None:
    tracker = tracker_with(TP0, [3])
    tracker.finish(TP0, 3)
    tracker.admit(TP0, 4)
    assert tracker.ready() == {TP0: 4}
    tracker.finish(TP0, 4)
    assert tracker.ready() == {TP0: 5}


@pytest.mark.parametrize("offset", [3, 2])
def test_admit_out_of_order_raises_when_nothing_is_in_flight(offset: int) -> None:
    """Once 3 has finished, admitting 3 or 2 again would move the commit backwards."""
    tracker = tracker_with(TP0, [3])
    tracker.finish(TP0, 3)
    with pytest.raises(ValueError, match="out of order"):
        tracker.admit(TP0, offset)
