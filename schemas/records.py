"""Typed records for the four schemas: plain data, and their Avro mapping.

Field names match the ``.avsc`` files one to one; ``to_avro``/``from_avro`` map a record
to and from the plain values fastavro writes and reads. Turning them into bytes is
``schemas.serde.AvroSerde``'s business.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

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


class ProgressKind(enum.Enum):
    PAGE = "PAGE"  # a page finished: its status and whole text
    DELTA = "DELTA"  # more of a page's text, as generated (a request with stream=true)
    RESTART = "RESTART"  # the page starts over: drop its text so far


class TextSource(enum.Enum):
    OCR = "OCR"  # recognised by the engine
    TEXT_LAYER = "TEXT_LAYER"  # the PDF page's own text layer


class _Avro:
    """The schema's full name and the default mapping: fields as they are."""

    SCHEMA: ClassVar[str]

    def to_avro(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        return cls(**record)


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
    stream: bool = False  # publish the text as it is generated, as progress events
    # where the result and progress go (the sender reads it); None: the key's partition
    reply_partition: int | None = None


@dataclass(frozen=True)
class OcrPage:
    """One page of an ``OcrResult`` (a record nested in it, never sent alone)."""

    page_number: int
    status: PageStatus
    text: str = ""
    error_code: str | None = None
    token_count: int = 0  # generated tokens
    prompt_token_count: int = 0  # the prompt's tokens, image included; 0: not counted
    finish_reason: str | None = None  # the engine's: "stop", "length", ...
    processing_time_ms: int = 0
    attempts: int = 1
    source_page: int | None = None  # 1-based page (PDF) or frame (DICOM) of the source
    text_source: TextSource = TextSource.OCR


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
    prompt_token_count: int = 0  # the pages' sum
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
    source_format: str = ""  # the scan's content type
    source_attributes: dict[str, str] = field(default_factory=dict)  # DICOM ids: PHI
    omitted_fields: list[str] = field(default_factory=list)

    def to_avro(self) -> dict[str, Any]:
        record = asdict(self)
        record["status"] = self.status.value
        for page in record["pages"]:
            page["status"] = page["status"].value
            page["text_source"] = page["text_source"].value
        return record

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        fields = dict(record)
        fields["status"] = DocumentStatus(fields["status"])
        fields["pages"] = [
            OcrPage(
                **{
                    **page,
                    "status": PageStatus(page["status"]),
                    "text_source": TextSource(page.get("text_source", "OCR")),
                }
            )
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
    """A page finished (PAGE), or, while it is read, more of its text (DELTA) or its
    start over (RESTART); ``sequence`` orders one document's events (0: unnumbered)."""

    SCHEMA: ClassVar[str] = "medocr.OcrProgress"

    document_id: str
    page_number: int
    page_count: int  # 0 on DELTA and RESTART
    status: PageStatus  # OK on DELTA and RESTART
    emitted_at: datetime
    text: str = ""
    kind: ProgressKind = ProgressKind.PAGE
    attempt: int = 1
    sequence: int = 0
    reason: str | None = None  # RESTART: the dropped attempt's status or error code

    def to_avro(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "status": self.status.value,
            "kind": self.kind.value,
        }

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        return cls(
            **{
                **record,
                "status": PageStatus(record["status"]),
                "kind": ProgressKind(record.get("kind", "PAGE")),
            }
        )
