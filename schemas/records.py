"""Typed records for the four schemas, with their Avro (de)serialisation.

Field names match the ``.avsc`` files one to one; ``encode``/``decode`` go through the
single-object codec of the record's schema.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from schemas.codec import CodecError, load_codec

FORM_FEED = "\f"


def utc_now() -> datetime:
    return datetime.now(UTC)


class DocumentStatus(enum.Enum):
    OK = "OK"
    FAILED = "FAILED"


class PageStatus(enum.Enum):
    OK = "OK"
    TRUNCATED = "TRUNCATED"  # the model stopped at max_tokens after all retries
    REPETITIVE = "REPETITIVE"  # the model looped after all retries
    FAILED = "FAILED"  # no text: the page failed (error_code says why)


class _Avro:
    SCHEMA: ClassVar[str]

    def to_avro(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    def encode(self) -> bytes:
        return load_codec(self.SCHEMA).encode(self.to_avro())

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        return cls(**record)

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        record = load_codec(cls.SCHEMA).decode(raw)
        try:
            return cls.from_avro(record)
        except (TypeError, ValueError) as exc:
            raise CodecError(
                f"{cls.SCHEMA} record does not fit {cls.__name__}: {exc}"
            ) from exc


@dataclass(frozen=True)
class OcrRequest(_Avro):
    SCHEMA: ClassVar[str] = "medocr.OcrRequest"

    document_id: str
    content_type: str
    submitted_at: datetime
    image: bytes | None = None
    image_uri: str | None = None
    prompt: str | None = None
    max_tokens: int = 4096
    temperature: float = 0.0
    source_system: str | None = None
    correlation_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OcrPage:
    """One page of an ``OcrResult`` (a record nested in it, never sent alone)."""

    page_number: int
    status: PageStatus
    text: str = ""
    error_code: str | None = None
    token_count: int = 0
    processing_time_ms: int = 0
    attempts: int = 1


@dataclass(frozen=True)
class OcrResult(_Avro):
    SCHEMA: ClassVar[str] = "medocr.OcrResult"

    document_id: str
    status: DocumentStatus
    completed_at: datetime
    text: str = ""
    pages: list[OcrPage] = field(default_factory=list)
    page_count: int = 0
    error_code: str | None = None
    error_message: str | None = None
    model: str = ""
    engine: str = ""
    processing_time_ms: int = 0
    token_count: int = 0
    submitted_at: datetime | None = None
    end_to_end_ms: int | None = None
    content_sha256: str | None = None
    source_system: str | None = None
    correlation_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    worker_id: str = ""
    omitted_fields: list[str] = field(default_factory=list)

    def to_avro(self) -> dict[str, Any]:
        record = asdict(self)
        record["status"] = self.status.value
        for page in record["pages"]:
            page["status"] = page["status"].value
        return record

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        fields = dict(record)
        fields["status"] = DocumentStatus(fields["status"])
        fields["pages"] = [
            OcrPage(**{**page, "status": PageStatus(page["status"])})
            for page in fields.get("pages", [])
        ]
        return cls(**fields)


@dataclass(frozen=True)
class RecordHeader:
    key: str
    value: bytes | None


@dataclass(frozen=True)
class OcrDeadLetter(_Avro):
    SCHEMA: ClassVar[str] = "medocr.OcrDeadLetter"

    source_topic: str
    source_partition: int
    source_offset: int
    error_class: str
    error_code: str
    error_message: str
    failed_at: datetime
    key: bytes | None = None
    value: bytes | None = None
    headers: list[RecordHeader] = field(default_factory=list)
    document_id: str | None = None
    attempts: int = 1
    worker_id: str = ""
    omitted_fields: list[str] = field(default_factory=list)

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        fields = dict(record)
        fields["headers"] = [RecordHeader(**h) for h in fields.get("headers", [])]
        return cls(**fields)


@dataclass(frozen=True)
class OcrProgress(_Avro):
    SCHEMA: ClassVar[str] = "medocr.OcrProgress"

    document_id: str
    page_number: int
    page_count: int
    status: PageStatus
    emitted_at: datetime
    text: str = ""

    def to_avro(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        return cls(**{**record, "status": PageStatus(record["status"])})
