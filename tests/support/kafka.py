"""Publishing requests and reading topics back in tests, against a real broker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.settings import KafkaSettings, Settings
from producers.kafka import build_producer
from schemas import OcrDeadLetter, OcrRequest, OcrResult
from tests.support.records import decode_record, encode_record


def kafka_env(kafka: KafkaSettings) -> dict[str, str]:
    """The environment variables a ``medocr`` child process reads ``kafka`` from:
    broker, idempotence, fetch wait, topics and consumer group."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": str(kafka.enable_idempotence).lower(),
        "KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
        "OCR_INPUT_TOPIC": kafka.input_topic,
        "OCR_RESULT_TOPIC": kafka.result_topic,
        "OCR_DLQ_TOPIC": kafka.dlq_topic,
        "OCR_PROGRESS_TOPIC": kafka.progress_topic,
        "OCR_CONSUMER_GROUP": kafka.consumer_group,
    }


async def publish_raw(
    settings: Settings,
    records: Iterable[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
) -> None:
    producer: AIOKafkaProducer = build_producer(
        settings.kafka.client_kwargs(), settings.producer_options()
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.kafka.input_topic, value, key=key, partition=partition
            )
            for key, value in records
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def publish_requests(settings: Settings, requests: Iterable[OcrRequest]) -> None:
    topic = settings.kafka.input_topic
    await publish_raw(
        settings,
        ((r.document_id.encode(), encode_record(r, topic)) for r in requests),
    )


@asynccontextmanager
async def from_the_beginning(
    settings: Settings, topic: str
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of no group, committing nothing, assigned every partition of
    ``topic`` at its beginning."""
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_kwargs(), enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer
    finally:
        await consumer.stop()


async def read_topic(
    settings: Settings, topic: str, count: int, timeout_s: float = 60
) -> list[bytes]:
    """Every value on ``topic`` from the beginning, until ``count`` arrived or time is up."""
    async with from_the_beginning(settings, topic) as consumer:
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            values.extend(m.value for msgs in batch.values() for m in msgs if m.value)
        return values


@dataclass
class Outputs:
    results: list[OcrResult]
    dead_letters: list[OcrDeadLetter]

    def by_id(self) -> dict[str, OcrResult]:
        return {r.document_id: r for r in self.results}


async def read_outputs(
    settings: Settings, results: int, dead_letters: int = 0, timeout_s: float = 60
) -> Outputs:
    kafka = settings.kafka
    return Outputs(
        [
            decode_record(OcrResult, v, kafka.result_topic)
            for v in await read_topic(settings, kafka.result_topic, results, timeout_s)
        ],
        [
            decode_record(OcrDeadLetter, v, kafka.dlq_topic)
            for v in await read_topic(
                settings,
                kafka.dlq_topic,
                dead_letters,
                5 if not dead_letters else timeout_s,
            )
        ],
    )
