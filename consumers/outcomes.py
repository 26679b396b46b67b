"""What one record ends as: an ``OcrResult``, plus a dead letter when it failed.

Every outcome the worker publishes is built here, from whatever is known of the record
when it ends: a request that never decoded still gets a result keyed by a usable id.

No outcome exceeds the producer's size limit (``max_record_bytes``, its
``max_request_size``), whatever the record carried:

- ids are bounded: a ``document_id`` or key that is blank, longer than ``max_id_chars``
  or not printable text is not used; the record's position ``topic-partition-offset`` is;
- error messages are cut to ``MAX_ERROR_MESSAGE_CHARS``;
- a result too large drops the fields it echoes from the request (``RESULT_ECHOES``, in
  order); if the recognised text alone is too large the document FAILS with
  ``RESULT_TOO_LARGE`` and a dead letter (text cut short would pass for the whole);
- a dead letter too large drops the original value, then headers, then key; its source
  topic, partition and offset still locate the original. A key longer than an id may
  be (``max_id_chars`` UTF-8 characters) is never sent.

Each record lists what it left out in ``omitted_fields``, in the order dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

from aiokafka.structs import ConsumerRecord

from consumers.engines import PageResult, PageStatus
from consumers.errors import (
    PageFailedError,
    PipelineError,
    ResultTooLargeError,
    error_code,
)
from producers.kafka import MAX_DOCUMENT_BYTES, max_record_bytes
from producers.results import ResultEncoder, dead_letter_key, result_key
from schemas import DocumentStatus, OcrDeadLetter, OcrPage, OcrRequest, OcrResult
from schemas.records import FORM_FEED, RecordHeader, utc_now

# aiokafka ships no type information: a consumed record is typed by hand here.
Msg: TypeAlias = ConsumerRecord

# What the worker's producer accepts by default (producers.kafka.build_producer).
DEFAULT_MAX_RECORD_BYTES = max_record_bytes(MAX_DOCUMENT_BYTES)
# Kafka's framing of one record, which the producer counts against its limit: aiokafka
# estimates a 61-byte batch header plus at most 21 bytes a record (results and dead
# letters carry no headers); 1 KiB leaves room for any change there.
RECORD_OVERHEAD_BYTES = 1024
# Below this even a record with every echoed field dropped might not fit.
MIN_RECORD_BYTES = 64 * 1024
MAX_ID_CHARS = 256  # OCR_MAX_ID_CHARS' default
UTF8_MAX_BYTES_PER_CHAR = 4
MAX_ERROR_MESSAGE_CHARS = 1024

# What a too-large record leaves out, in this order, until it fits.
RESULT_ECHOES = ("attributes", "source_attributes", "correlation_id", "source_system")
DEAD_LETTER_DROPS = ("value", "headers", "key")


@dataclass(frozen=True)
class DocumentSource:
    """What the scan was: its content type and (DICOM) its allow-listed identifiers."""

    format: str = ""
    attributes: dict[str, str] = field(default_factory=dict)  # PHI: the result only


@dataclass(frozen=True)
class Outcome:
    result: OcrResult
    dead_letter: OcrDeadLetter | None = None
    reply_partition: int | None = None  # the request's: where the result goes


def where(msg: Msg) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


@dataclass(frozen=True)
class OutcomeBuilder:
    """Builds results and dead letters stamped with this worker's engine and id, each
    under ``max_record_bytes`` (the producer's ``max_request_size``) as ``encoder``
    writes them: the publisher's (``ResultPublisher.encoder``)."""

    engine: str
    model: str
    worker_id: str
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_id_chars: int = MAX_ID_CHARS
    encoder: ResultEncoder = field(default_factory=ResultEncoder)

    def __post_init__(self) -> None:
        if self.max_record_bytes < MIN_RECORD_BYTES:
            raise ValueError(
                f"max_record_bytes is {self.max_record_bytes}; "
                f"at least {MIN_RECORD_BYTES} is needed"
            )
        if self.max_id_chars < 1:
            raise ValueError(f"max_id_chars is {self.max_id_chars}; at least 1")

    def failed(
        self,
        msg: Msg,
        request: OcrRequest | None,
        digest: str | None,
        exc: BaseException,
        started: float,
        source: DocumentSource | None = None,
    ) -> Outcome:
        """The whole record failed before any page was read."""
        return self._failure(msg, request, digest, started, exc, [], source)

    def finished(
        self,
        msg: Msg,
        request: OcrRequest,
        digest: str | None,
        pages: list[OcrPage],
        started: float,
        source: DocumentSource | None = None,
    ) -> Outcome:
        """Every page was tried; the record failed if any page did."""
        failed = [p for p in pages if p.status is PageStatus.FAILED]
        if failed:
            numbers = ", ".join(str(p.page_number) for p in failed)
            exc = PageFailedError(f"pages {numbers} failed")
            return self._failure(msg, request, digest, started, exc, pages, source)
        result = self._result(msg, request, digest, started, pages, None, source)
        fitted, fits = self._fit_result(result)
        if fits:
            return Outcome(fitted, reply_partition=request.reply_partition)
        return self._too_large(msg, request, digest, result, started)

    def _failure(
        self,
        msg: Msg,
        request: OcrRequest | None,
        digest: str | None,
        started: float,
        exc: BaseException,
        pages: list[OcrPage],
        source: DocumentSource | None = None,
    ) -> Outcome:
        """A FAILED result and the dead letter that goes with it."""
        result = self._result(msg, request, digest, started, pages, exc, source)
        fitted, fits = self._fit_result(result)
        if not fits and request is not None:  # without pages it always fits
            return self._too_large(msg, request, digest, result, started)
        return Outcome(
            fitted,
            self._dead_letter(msg, exc, request),
            request.reply_partition if request is not None else None,
        )

    def _too_large(
        self,
        msg: Msg,
        request: OcrRequest,
        digest: str | None,
        whole: OcrResult,
        started: float,
    ) -> Outcome:
        """The text does not fit: a FAILED result without it, and a dead letter."""
        exc = ResultTooLargeError(
            f"the text of {whole.page_count} pages is {len(whole.text.encode())} bytes;"
            f" a result may be {self.max_record_bytes} bytes with everything else"
        )
        result = self._result(msg, request, digest, started, [], exc)
        result = dataclasses.replace(
            result,
            page_count=whole.page_count,
            token_count=whole.token_count,
            prompt_token_count=whole.prompt_token_count,
            source_format=whole.source_format,
            source_attributes=whole.source_attributes,
            omitted_fields=[*result.omitted_fields, "text", "pages"],
        )
        fitted, _ = self._fit_result(result)
        return Outcome(
            fitted,
            self._dead_letter(msg, exc, request),
            request.reply_partition,
        )

    def _result(
        self,
        msg: Msg,
        request: OcrRequest | None,
        digest: str | None,
        started: float,
        pages: list[OcrPage],
        error: BaseException | None,
        source: DocumentSource | None = None,
    ) -> OcrResult:
        """The result of the record: OK without ``error``, else FAILED with it."""
        source = source or DocumentSource()
        completed = utc_now()
        submitted = request.submitted_at if request else None
        document_id, omitted = self._document_id(msg, request)
        return OcrResult(
            document_id=document_id,
            status=DocumentStatus.OK if error is None else DocumentStatus.FAILED,
            completed_at=completed,
            text=FORM_FEED.join(p.text for p in pages),
            pages=pages,
            page_count=len(pages),
            error_code=None if error is None else error_code(error),
            error_message=None if error is None else bounded(describe(error)),
            model=self.model,
            engine=self.engine,
            processing_time_ms=round((time.monotonic() - started) * 1000),
            token_count=sum(p.token_count for p in pages),
            prompt_token_count=sum(p.prompt_token_count for p in pages),
            submitted_at=submitted,
            end_to_end_ms=millis_between(submitted, completed),
            content_sha256=digest,
            source_system=request.source_system if request else None,
            correlation_id=request.correlation_id if request else None,
            attributes=dict(request.attributes) if request else {},
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            worker_id=self.worker_id,
            source_format=source.format,
            source_attributes=dict(source.attributes),
            omitted_fields=omitted,
        )

    def _dead_letter(
        self, msg: Msg, exc: BaseException, request: OcrRequest | None
    ) -> OcrDeadLetter:
        document_id, omitted = self._document_id(msg, request)
        letter = OcrDeadLetter(
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            error_class=type(exc).__name__,
            error_code=error_code(exc),
            error_message=bounded(describe(exc)),
            failed_at=utc_now(),
            key=msg.key,
            value=msg.value,
            headers=[RecordHeader(k, v) for k, v in (msg.headers or ())],
            document_id=document_id,
            worker_id=self.worker_id,
            omitted_fields=omitted,
        )
        if (
            msg.key is not None
            and len(msg.key) > self.max_id_chars * UTF8_MAX_BYTES_PER_CHAR
        ):
            letter = omit(letter, "key")
        for name in DEAD_LETTER_DROPS:
            if self._fits(self.encoder.dead_letter(letter), dead_letter_key(letter)):
                break
            letter = omit(letter, name)
        return letter

    def _document_id(
        self, msg: Msg, request: OcrRequest | None
    ) -> tuple[str, list[str]]:
        """The id to use, and ``["document_id"]`` when the request's own was refused."""
        document_id = document_id_of(msg, request, self.max_id_chars)
        refused = (
            request is not None
            and bool(request.document_id.strip())
            and document_id != request.document_id
        )
        return document_id, ["document_id"] if refused else []

    def _fit_result(self, result: OcrResult) -> tuple[OcrResult, bool]:
        """``result`` with echoed fields dropped in order until it fits, and whether
        it does (one encode when it fits as it is)."""
        fits = self._fits_result(result)
        for name in RESULT_ECHOES:
            if fits:
                break
            result = omit(result, name)
            fits = self._fits_result(result)
        return result, fits

    def _fits_result(self, result: OcrResult) -> bool:
        return self._fits(self.encoder.result(result), result_key(result))

    def _fits(self, value: bytes, key: bytes | None) -> bool:
        size = len(value) + len(key or b"") + RECORD_OVERHEAD_BYTES
        return size <= self.max_record_bytes


_Omittable = TypeVar("_Omittable", OcrResult, OcrDeadLetter)


def omit(record: _Omittable, name: str) -> _Omittable:
    """``record`` with field ``name`` at its default, listed in ``omitted_fields``;
    unchanged (and not listed) when it is at its default already."""
    spec = next(f for f in dataclasses.fields(record) if f.name == name)
    empty: Any = (
        spec.default_factory()
        if spec.default_factory is not dataclasses.MISSING
        else spec.default
    )
    if getattr(record, name) == empty:
        return record
    changes: dict[str, Any] = {
        name: empty,
        "omitted_fields": [*record.omitted_fields, name],
    }
    return dataclasses.replace(record, **changes)


def bounded(message: str) -> str:
    """An error message cut to ``MAX_ERROR_MESSAGE_CHARS`` (it may quote the request)."""
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"


def describe(exc: BaseException) -> str:
    """What a result may say about an error: our own messages; for a foreign
    exception (a bug) only its class, since its text may quote the record's content."""
    if isinstance(exc, PipelineError):
        return str(exc)
    return f"internal error while handling the record ({type(exc).__name__})"


def page_text(number: int, result: PageResult) -> OcrPage:
    return OcrPage(
        page_number=number,
        status=result.status,
        text=result.text,
        error_code=None if result.status is PageStatus.OK else result.status.value,
        token_count=result.token_count,
        prompt_token_count=result.prompt_tokens,
        finish_reason=result.finish_reason,
        processing_time_ms=round(result.engine_s * 1000),
        attempts=result.attempts,
    )


def usable_id(text: str, max_chars: int = MAX_ID_CHARS) -> bool:
    """An id a result can be keyed by: not blank, at most ``max_chars``, printable."""
    return bool(text.strip()) and len(text) <= max_chars and text.isprintable()


def document_id_of(
    msg: Msg, request: OcrRequest | None, max_chars: int = MAX_ID_CHARS
) -> str:
    """The request's id; without a usable one, the record key, else its position."""
    if request is not None and usable_id(request.document_id, max_chars):
        return request.document_id
    return fallback_document_id(msg, max_chars)


def fallback_document_id(msg: Msg, max_chars: int = MAX_ID_CHARS) -> str:
    """The record key when it is a usable id in UTF-8, else the record's position."""
    key: bytes | None = msg.key
    if key and len(key) <= max_chars * UTF8_MAX_BYTES_PER_CHAR:
        with contextlib.suppress(UnicodeDecodeError):
            text = key.decode("utf-8")
            if usable_id(text, max_chars):
                return text
    return f"{msg.topic}-{msg.partition}-{msg.offset}"


def millis_between(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else round((end - start).total_seconds() * 1000)
