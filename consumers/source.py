"""The worker's view of its Kafka consumer: the one seam between the loop and Kafka.

aiokafka ships no type information, so the calls the loop makes are typed here, once.
``AIOKafkaConsumer`` satisfies ``RecordSource`` as it is; the unit tests drive the
worker through an in-memory source instead (``tests/support/source.py``).
"""

from __future__ import annotations

from typing import Protocol

from aiokafka import TopicPartition

from consumers.outcomes import Msg


class RecordSource(Protocol):
    def assignment(self) -> set[TopicPartition]: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None
    ) -> dict[TopicPartition, list[Msg]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    async def end_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    async def position(self, partition: TopicPartition) -> int: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def topics(self) -> set[str]: ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> bool: ...

    async def seek_to_end(self, *partitions: TopicPartition) -> bool: ...
