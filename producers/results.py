"""Publishing what the worker produces: results, dead letters and page progress.

Results and progress go to the partition of their key (the document id), unless the
request named a ``reply_partition``: the partition its sender reads (a gateway
replica's). One the topic does not have falls back to the key's partition, with a
warning for a result (its progress events follow it quietly): a request never fails
for where its answer goes. Dead letters always go by their key.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from producers.kafka import Topics
from schemas import AvroSerde, OcrDeadLetter, OcrProgress, OcrResult, SerdeContext

log = logging.getLogger(__name__)

_TOPICS = Topics()


def result_key(result: OcrResult) -> bytes:
    """The Kafka key of a result: its document id (bounded where the result is built)."""
    return result.document_id.encode()


def dead_letter_key(letter: OcrDeadLetter) -> bytes | None:
    """The Kafka key of a dead letter: the original key, or none where it was left out."""
    return letter.key


@dataclass(frozen=True)
class ResultEncoder:
    """The values the worker sends, each serialised for the topic it goes to.

    ``ResultPublisher`` sends these bytes and ``consumers.outcomes`` sizes them, so a
    record that fits there is the record sent. The default topics are the settings'.
    """

    result_topic: str = _TOPICS.results
    dlq_topic: str = _TOPICS.dead_letters
    progress_topic: str = _TOPICS.progress
    serde: AvroSerde = field(default_factory=AvroSerde)

    def result(self, result: OcrResult) -> bytes:
        return self.serde.serialize(result, SerdeContext(self.result_topic))

    def dead_letter(self, letter: OcrDeadLetter) -> bytes:
        return self.serde.serialize(letter, SerdeContext(self.dlq_topic))

    def progress(self, progress: OcrProgress) -> bytes:
        return self.serde.serialize(progress, SerdeContext(self.progress_topic))


class ResultPublisher:
    """Sends results keyed by document id; each ``send_*`` returns the delivery future."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        result_topic: str,
        dlq_topic: str,
        progress_topic: str,
        serde: AvroSerde | None = None,
    ) -> None:
        self._producer = producer
        self.encoder = ResultEncoder(
            result_topic, dlq_topic, progress_topic, serde or AvroSerde()
        )

    async def send_result(
        self, result: OcrResult, *, partition: int | None = None
    ) -> asyncio.Future[RecordMetadata]:
        """``partition``: the request's ``reply_partition`` (None: the key's)."""
        topic = self.encoder.result_topic
        routed = await self._reply_partition(topic, partition)
        if routed is None and partition is not None:
            log.warning(
                "reply partition %d of document %s is not a partition of %s;"
                " its result goes to the partition of its key",
                partition,
                result.document_id,
                topic,
            )
        return await self._send(
            topic, self.encoder.result(result), result_key(result), routed
        )

    async def send_dead_letter(
        self, letter: OcrDeadLetter
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self.encoder.dlq_topic,
            self.encoder.dead_letter(letter),
            key=dead_letter_key(letter),
        )
        return future

    async def send_progress(
        self, progress: OcrProgress, *, partition: int | None = None
    ) -> asyncio.Future[RecordMetadata]:
        """``partition``: the request's ``reply_partition`` (None: the key's)."""
        topic = self.encoder.progress_topic
        return await self._send(
            topic,
            self.encoder.progress(progress),
            progress.document_id.encode(),
            await self._reply_partition(topic, partition),
        )

    async def _reply_partition(self, topic: str, partition: int | None) -> int | None:
        """``partition`` if ``topic`` has it, else None (the key's partition)."""
        if partition is None:
            return None
        partitions = await self._producer.partitions_for(topic)
        return partition if partition in partitions else None

    async def _send(
        self, topic: str, value: bytes, key: bytes, partition: int | None
    ) -> asyncio.Future[RecordMetadata]:
        # ``partition`` only when routed: a producer that never routes (the in-memory
        # ones of tests) need not take it
        routed = {} if partition is None else {"partition": partition}
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            topic, value, key=key, **routed
        )
        return future
