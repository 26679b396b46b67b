"""Which offset each partition may commit, given that records finish out of order.

A partition commits only up to its first unfinished record: work that completes early
never pushes the committed offset past work still in flight (at-least-once).

The tracker knows offsets, not records in flight: an offset stays pending from its
admission until it and every offset before it finished, so a record finished out of
order is still pending here, and one that failed fatally or was cancelled never
finishes. The records in flight are the worker's tasks (``consumers.worker``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from aiokafka import TopicPartition


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # not yet safe, ascending
    last_admitted: int | None = None
    done: set[int] = field(default_factory=set)
    next_offset: int | None = None  # first offset not yet safe to commit
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}

    def admit(self, tp: TopicPartition, offset: int) -> None:
        part = self._partitions.setdefault(tp, _Partition())
        if part.last_admitted is not None and offset <= part.last_admitted:
            raise ValueError(
                f"{tp.topic}[{tp.partition}]@{offset} admitted out of order"
            )
        part.last_admitted = offset
        part.pending.append(offset)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        part = self._partitions.get(tp)
        if part is None:
            return  # the partition was revoked meanwhile; nothing to commit for it
        part.done.add(offset)
        while part.pending and part.pending[0] in part.done:
            part.done.discard(part.pending[0])
            part.next_offset = part.pending.popleft() + 1

    def ready(self) -> dict[TopicPartition, int]:
        """Offsets to commit now: partitions whose safe offset moved since the last commit."""
        return {
            tp: part.next_offset
            for tp, part in self._partitions.items()
            if part.next_offset is not None and part.next_offset != part.committed
        }

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._partitions:
                self._partitions[tp].committed = offset

    def first_unfinished(self, tp: TopicPartition) -> int | None:
        part = self._partitions.get(tp)
        return part.pending[0] if part is not None and part.pending else None

    def pending(self, tp: TopicPartition | None = None) -> int:
        """Offsets admitted and not yet safe to commit (of ``tp``, or of all)."""
        parts = [self._partitions.get(tp)] if tp else list(self._partitions.values())
        return sum(len(p.pending) for p in parts if p is not None)

    def forget(self, tp: TopicPartition) -> None:
        self._partitions.pop(tp, None)
