"""The one place Kafka client options live (producers, and what consumers fetch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

# Scans are inlined up to the document cap; the envelope adds a few hundred bytes.
ENVELOPE_BYTES = 1024 * 1024

# Longest a fetch waits at the broker while there is nothing new (aiokafka: 500 ms).
# Apache Kafka answers a waiting fetch as soon as a record arrives; a broker that wakes
# waiting fetches on its own schedule (the embedded tansu does) adds up to this much
# delay before the first record of a burst. An idle consumer asks 10 times a second.
FETCH_MAX_WAIT_MS = 100


@dataclass(frozen=True)
class Topics:
    """The topic names a sender needs: where requests go, where answers come back."""

    requests: str = "ocr.requests"
    results: str = "ocr.results"
    progress: str = "ocr.progress"


@dataclass(frozen=True)
class ProducerOptions:
    enable_idempotence: bool = True
    max_document_bytes: int = 20 * 1024 * 1024
    linger_ms: int = 5


def build_producer(
    client_kwargs: Mapping[str, object], options: ProducerOptions
) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas: a result counts once acknowledged."""
    return AIOKafkaProducer(
        **client_kwargs,
        acks="all",
        enable_idempotence=options.enable_idempotence,
        linger_ms=options.linger_ms,
        max_request_size=options.max_document_bytes + ENVELOPE_BYTES,
        request_timeout_ms=30_000,
    )


def fetch_bytes_for(max_document_bytes: int) -> int:
    """Consumer fetch size that always fits one inlined scan."""
    return max_document_bytes + ENVELOPE_BYTES


def fetch_options(max_document_bytes: int) -> dict[str, object]:
    """What every consumer of medocr topics fetches: any one record, without delay."""
    return {
        "max_partition_fetch_bytes": fetch_bytes_for(max_document_bytes),
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
    }


def build_waiter_consumer(
    client_kwargs: Mapping[str, object], max_document_bytes: int
) -> AIOKafkaConsumer:
    """A consumer without a group for a sender reading its answers (``ResultWaiter``)."""
    return AIOKafkaConsumer(
        **client_kwargs,
        enable_auto_commit=False,
        **fetch_options(max_document_bytes),
    )
