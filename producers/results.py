"""Publishing what the worker produces: results, dead letters and page progress."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from schemas import OcrDeadLetter, OcrProgress, OcrResult


def result_key(result: OcrResult) -> bytes:
    """The Kafka key of a result: its document id (bounded where the result is built)."""
    return result.document_id.encode()


def dead_letter_key(letter: OcrDeadLetter) -> bytes | None:
    """The Kafka key of a dead letter: the original key, or none where it was left out."""
    return letter.key


class ResultPublisher:
    """Sends results keyed by document id; each ``send_*`` returns the delivery future."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        result_topic: str,
        dlq_topic: str,
        progress_topic: str,
    ) -> None:
        self._producer = producer
        self._result_topic = result_topic
        self._dlq_topic = dlq_topic
        self._progress_topic = progress_topic

    async def send_result(self, result: OcrResult) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._result_topic, result.encode(), key=result_key(result)
        )
        return future

    async def send_dead_letter(
        self, letter: OcrDeadLetter
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._dlq_topic, letter.encode(), key=dead_letter_key(letter)
        )
        return future

    async def send_progress(
        self, progress: OcrProgress
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._progress_topic, progress.encode(), key=progress.document_id.encode()
        )
        return future
