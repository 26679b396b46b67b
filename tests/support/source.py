"""An in-memory stand-in for the worker's Kafka consumer and producer, for unit tests
of the loop itself (``consumers.source.RecordSource``): partitions of records fetched in
order, pauses, rebalances and commits recorded, deliveries acknowledged at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from consumers.outcomes import Msg
from tests.support.records import consumer_record

Revoke = Callable[[set[TopicPartition]], Awaitable[None]]


@dataclass
class MemorySource:
    logs: dict[TopicPartition, list[Msg]] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=set)
    paused: set[TopicPartition] = field(default_factory=set)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    fetches: int = 0
    on_commit: Callable[[dict[TopicPartition, int]], None] | None = None
    _revoke: tuple[set[TopicPartition], Revoke] | None = None

    def append(self, tp: TopicPartition, value: bytes, key: bytes) -> Msg:
        log = self.logs.setdefault(tp, [])
        msg = consumer_record(
            value, key, offset=len(log), topic=tp.topic, partition=tp.partition
        )
        log.append(msg)
        return msg

    def revoke_at_next_fetch(self, tps: set[TopicPartition], revoke: Revoke) -> None:
        """As aiokafka does: the listener runs inside the next ``getmany``."""
        self._revoke = (tps, revoke)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def getmany(
        self,
        *partitions: TopicPartition,
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[Msg]]:
        self.fetches += 1
        if self._revoke is not None:
            (tps, revoke), self._revoke = self._revoke, None
            await revoke(tps)
            self.assigned -= tps
            return {}
        left = max_records if max_records is not None else 1 << 30
        batch: dict[TopicPartition, list[Msg]] = {}
        for tp in sorted(self.assigned - self.paused):
            start = self.positions.get(tp, 0)
            taken = self.logs.get(tp, [])[start : start + left]
            if taken:
                batch[tp] = taken
                self.positions[tp] = start + len(taken)
                left -= len(taken)
        if not batch:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        if self.on_commit is not None:
            self.on_commit(dict(offsets))

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    async def end_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {tp: len(self.logs.get(tp, [])) for tp in partitions}

    async def position(self, partition: TopicPartition) -> int:
        return self.positions.get(partition, 0)

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.logs.get(partition, []))

    async def topics(self) -> set[str]:
        return {tp.topic for tp in self.logs}

    async def seek_to_beginning(self, *partitions: TopicPartition) -> bool:
        for tp in partitions:
            self.positions[tp] = 0
        return True

    async def seek_to_end(self, *partitions: TopicPartition) -> bool:
        for tp in partitions:
            self.positions[tp] = len(self.logs.get(tp, []))
        return True


@dataclass
class MemoryProducer:
    """What ``ResultPublisher`` needs of a producer: every send acknowledged at once."""

    sent: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None
    ) -> asyncio.Future[None]:
        self.sent.append((topic, value, key))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
