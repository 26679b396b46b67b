"""Publishing what the worker produces: results, dead letters and page progress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from producers.kafka import Topics
from schemas import AvroSerde, OcrDeadLetter, OcrProgress, OcrResult, SerdeContext

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

    async def send_result(self, result: OcrResult) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self.encoder.result_topic,
            self.encoder.result(result),
            key=result_key(result),
        )
        return future

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
        self, progress: OcrProgress
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self.encoder.progress_topic,
            self.encoder.progress(progress),
            key=progress.document_id.encode(),
        )
        return future
