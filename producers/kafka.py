"""The one place producer options live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

# Scans are inlined up to the document cap; the envelope adds a few hundred bytes.
ENVELOPE_BYTES = 1024 * 1024


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
