"""Wait for the results (and optional page progress) of documents one published.

The waiter reads the result topic from its current end, without a consumer group, so
it sees exactly the results produced after it started.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import CodecError, OcrResult, PageProgress

ResultCallback = Callable[[OcrResult], None]
ProgressCallback = Callable[[PageProgress], None]


class ResultWaiter:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        result_topic: str,
        progress_topic: str | None = None,
    ) -> None:
        self._consumer = consumer
        self._result_topic = result_topic
        self._progress_topic = progress_topic

    async def start(self) -> None:
        """Assign every partition and move to its end; call before publishing."""
        await self._consumer.start()
        topics = [self._result_topic] + (
            [self._progress_topic] if self._progress_topic else []
        )
        tps: list[TopicPartition] = []
        for topic in topics:
            partitions = self._consumer.partitions_for_topic(topic)
            if partitions is None:
                await self._consumer._client.force_metadata_update()
                partitions = self._consumer.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        if not tps:
            raise RuntimeError(f"topic {self._result_topic} does not exist")
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is published
            await self._consumer.position(tp)

    async def wait(
        self,
        document_ids: Collection[str],
        timeout_s: float,
        on_result: ResultCallback,
        on_progress: ProgressCallback | None = None,
    ) -> set[str]:
        """Call ``on_result`` once per awaited document; returns the ids still missing."""
        missing = set(document_ids)
        deadline = time.monotonic() + timeout_s
        while missing and time.monotonic() < deadline:
            for record in await self._poll():
                if record.document_id not in missing:
                    continue
                if isinstance(record, OcrResult):
                    missing.discard(record.document_id)
                    on_result(record)
                elif on_progress is not None:
                    on_progress(record)
        return missing

    async def stream(self) -> AsyncIterator[OcrResult]:
        """Every result that arrives from now on."""
        while True:
            for record in await self._poll():
                if isinstance(record, OcrResult):
                    yield record

    async def _poll(self) -> list[OcrResult | PageProgress]:
        """The records of one fetch, decoded; foreign records on the topics are skipped."""
        batch = await self._consumer.getmany(timeout_ms=500)
        records: list[OcrResult | PageProgress] = []
        for tp, msgs in batch.items():
            kind = OcrResult if tp.topic == self._result_topic else PageProgress
            for msg in msgs:
                if msg.value is None:
                    continue
                with contextlib.suppress(CodecError):
                    records.append(kind.decode(msg.value))
        return records

    async def stop(self) -> None:
        await self._consumer.stop()
