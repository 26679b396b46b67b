"""Requests and consumed records built in memory for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from aiokafka.structs import ConsumerRecord
from PIL import Image

from schemas import AvroRecord, AvroSerde, OcrRequest, SerdeContext
from schemas.records import utc_now
from tests.support.scans import encode

SUBMITTED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
SERDE = AvroSerde()
R = TypeVar("R", bound=AvroRecord)


def encode_record(record: AvroRecord, topic: str = "ocr.requests") -> bytes:
    """``record``'s bytes as the project's serde writes them to ``topic``."""
    return SERDE.serialize(record, SerdeContext(topic))


def decode_record(record_type: type[R], raw: bytes, topic: str = "ocr.results") -> R:
    """The ``record_type`` in ``raw`` as read from ``topic``."""
    return SERDE.deserialize(record_type, raw, SerdeContext(topic))


def scan_request(
    document_id: str,
    image: bytes | None,
    content_type: str = "image/png",
    **fields: object,
) -> OcrRequest:
    """A request for ``image`` submitted now; ``fields`` set the rest."""
    return OcrRequest(
        document_id=document_id,
        content_type=content_type,
        submitted_at=utc_now(),
        image=image,
        **fields,  # type: ignore[arg-type]
    )


def png_request(document_id: str) -> OcrRequest:
    """A blank 64 x 32 PNG page."""
    return scan_request(document_id, encode(Image.new("L", (64, 32), 255), "PNG"))


def sender_request(**fields: object) -> OcrRequest:
    """``doc-1`` as an EMR would send it: source, correlation and attributes set."""
    values: dict[str, object] = {
        "document_id": "doc-1",
        "content_type": "image/png",
        "submitted_at": SUBMITTED,
        "image": b"\x89PNG\r\n\x1a\n",
        "source_system": "emr-test",
        "correlation_id": "acc-1",
        "attributes": {"ward": "7"},
    }
    values.update(fields)
    return OcrRequest(**values)  # type: ignore[arg-type]


def consumer_record(
    value: bytes | None,
    key: bytes | None = b"doc-1",
    offset: int = 42,
    headers: tuple[tuple[str, bytes], ...] = (),
    topic: str = "ocr.requests",
    partition: int = 3,
) -> ConsumerRecord:
    """A record as the consumer hands it over: ``ocr.requests[3]@42`` by default."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers,
    )
