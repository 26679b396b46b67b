"""One consumed record in, one outcome out: a result, and a dead letter when it failed.

Decoding, image checks and the engine calls for every page happen here; Kafka offsets,
publishing and commits are the worker's business. Only fatal errors leave ``recognize``:
a poison record or a page that cannot be read becomes a FAILED outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from aiokafka.structs import ConsumerRecord
from PIL import Image

from consumers.budget import PageBudget
from consumers.engines import OcrEngine, PageRequest, PageResult, PageStatus
from consumers.errors import (
    InvalidRequestError,
    PageFailedError,
    PoisonRecordError,
    UndecodableRecordError,
)
from consumers.images import ImageLimits, load_pages, read_image_uri
from consumers.metrics import WorkerMetrics
from consumers.retry import RetryPolicy, retry_transient
from schemas import (
    CodecError,
    DeadLetter,
    DocumentStatus,
    OcrRequest,
    OcrResult,
    PageText,
)
from schemas.content_types import SUPPORTED_TYPES, sniff_content_type
from schemas.records import FORM_FEED, RecordHeader, utc_now

log = logging.getLogger(__name__)

# Scans are hashed and decoded this many at a time, first come first served. A whole
# fetched batch decoding at once shares the cores evenly, so every page of the batch
# would be ready late; in turns, the first pages reach the engine early (an idle GPU
# starts on the first page it gets) and later ones follow at the same rate.
DECODE_CONCURRENCY = 4

# aiokafka ships no type information: a consumed record is typed by hand here.
Msg: TypeAlias = ConsumerRecord
PageCallback = Callable[[OcrRequest, PageText, int], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    result: OcrResult
    dead_letter: DeadLetter | None = None


@dataclass(frozen=True)
class RecognizerOptions:
    limits: ImageLimits
    uri_roots: tuple[str, ...]
    default_prompt: str
    default_max_tokens: int
    retry: RetryPolicy
    worker_id: str


def where(msg: Msg) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


class DocumentRecognizer:
    def __init__(
        self,
        engine: OcrEngine,
        budget: PageBudget,
        metrics: WorkerMetrics,
        options: RecognizerOptions,
        on_page: PageCallback | None = None,
    ) -> None:
        self._engine = engine
        self._budget = budget
        self._metrics = metrics
        self._options = options
        self._on_page = on_page
        self._decode_turns = asyncio.Semaphore(DECODE_CONCURRENCY)

    async def recognize(self, msg: Msg) -> Outcome:
        """The outcome of one record; its budget reservation of one page is kept as is."""
        started = time.monotonic()
        request: OcrRequest | None = None
        digest: str | None = None
        try:
            request = decode_request(msg)
            check_request(request)  # a FAILED result still carries what the sender sent
            raw = await self._read_image(request)
            # hashing and decoding megabytes of scan stay off the event loop, in turns
            async with self._decode_turns:
                digest = await asyncio.to_thread(sha256_hex, raw)
                pages = await asyncio.to_thread(load_pages, raw, self._options.limits)
        except PoisonRecordError as exc:
            return self._poison(msg, request, digest, exc, started)
        extra = len(pages) - 1
        self._budget.reserve(extra)
        self._metrics.inflight_pages.inc(extra)
        try:
            texts = await asyncio.gather(
                *(
                    self._page(request, number, page, len(pages), msg)
                    for number, page in enumerate(pages, start=1)
                )
            )
        finally:
            self._budget.release(extra)
            self._metrics.inflight_pages.dec(extra)
        return self._finish(msg, request, digest, texts, started)

    async def _read_image(self, request: OcrRequest) -> bytes:
        if request.image is not None:
            raw = request.image
        else:
            uri = request.image_uri or ""  # check_request made sure one of them is set
            raw = await asyncio.to_thread(
                read_image_uri, uri, self._options.uri_roots, self._options.limits
            )
        sniffed = sniff_content_type(raw) if raw else None
        if sniffed is not None and sniffed != request.content_type:
            raise InvalidRequestError(
                f"content_type says {request.content_type} but the bytes are {sniffed}"
            )
        return raw

    async def _page(
        self, request: OcrRequest, number: int, image: Image.Image, count: int, msg: Msg
    ) -> PageText:
        page = PageRequest(
            document_id=request.document_id,
            page_number=number,
            image=image,
            prompt=request.prompt or self._options.default_prompt,
            max_tokens=request.max_tokens or self._options.default_max_tokens,
            temperature=request.temperature,
        )
        try:
            result = await retry_transient(
                lambda: self._engine.recognize(page),
                self._options.retry,
                what=f"{where(msg)} page {number}",
                on_retry=lambda exc: self._metrics.retries.labels(
                    reason="transient"
                ).inc(),
            )
            text = page_text(number, result)
        except PageFailedError as exc:
            log.warning("%s page %d failed: %s", where(msg), number, exc.error_code)
            text = PageText(
                page_number=number, status="FAILED", error_code=exc.error_code
            )
        self._metrics.pages.labels(status=text.status).inc()
        if text.status != "FAILED":
            self._metrics.page_seconds.observe(text.processing_time_ms / 1000)
        if self._on_page is not None:
            await self._on_page(request, text, count)
        return text

    def _finish(
        self,
        msg: Msg,
        request: OcrRequest,
        digest: str | None,
        pages: list[PageText],
        started: float,
    ) -> Outcome:
        failed = [p for p in pages if p.status == "FAILED"]
        result = self._result(
            msg,
            request,
            digest,
            started,
            status=DocumentStatus.FAILED if failed else DocumentStatus.OK,
            pages=pages,
            error_code=PageFailedError.error_code if failed else None,
            error_message=(
                f"pages {', '.join(str(p.page_number) for p in failed)} failed"
                if failed
                else None
            ),
        )
        if not failed:
            return Outcome(result)
        letter = dead_letter(
            msg, PageFailedError(result.error_message), self._options.worker_id, request
        )
        return Outcome(result, letter)

    def _poison(
        self,
        msg: Msg,
        request: OcrRequest | None,
        digest: str | None,
        exc: PoisonRecordError,
        started: float,
    ) -> Outcome:
        log.warning("%s dead-lettered: %s", where(msg), exc.error_code)
        result = self._result(
            msg,
            request,
            digest,
            started,
            status=DocumentStatus.FAILED,
            pages=[],
            error_code=exc.error_code,
            error_message=str(exc),
        )
        return Outcome(result, dead_letter(msg, exc, self._options.worker_id, request))

    def _result(
        self,
        msg: Msg,
        request: OcrRequest | None,
        digest: str | None,
        started: float,
        *,
        status: DocumentStatus,
        pages: list[PageText],
        error_code: str | None,
        error_message: str | None,
    ) -> OcrResult:
        completed = utc_now()
        submitted = request.submitted_at if request else None
        return OcrResult(
            document_id=document_id_of(msg, request),
            status=status,
            completed_at=completed,
            text=FORM_FEED.join(p.text for p in pages),
            pages=pages,
            page_count=len(pages),
            error_code=error_code,
            error_message=error_message,
            model=self._engine.model,
            engine=self._engine.name,
            processing_time_ms=round((time.monotonic() - started) * 1000),
            token_count=sum(p.token_count for p in pages),
            submitted_at=submitted,
            end_to_end_ms=millis_between(submitted, completed),
            content_sha256=digest,
            source_system=request.source_system if request else None,
            correlation_id=request.correlation_id if request else None,
            attributes=dict(request.attributes) if request else {},
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            worker_id=self._options.worker_id,
        )


def decode_request(msg: Msg) -> OcrRequest:
    if msg.value is None:
        raise UndecodableRecordError("record has no value (tombstone)")
    try:
        return OcrRequest.decode(msg.value)
    except CodecError as exc:
        raise UndecodableRecordError(str(exc)) from exc


def check_request(request: OcrRequest) -> None:
    if not request.document_id.strip():
        raise InvalidRequestError("document_id is empty")
    if request.content_type not in SUPPORTED_TYPES:
        raise InvalidRequestError(
            f"content_type {request.content_type!r} is not one of {sorted(SUPPORTED_TYPES)}"
        )
    if (request.image is None) == (request.image_uri is None):
        raise InvalidRequestError("exactly one of image and image_uri must be set")
    if request.max_tokens < 0 or not 0.0 <= request.temperature <= 2.0:
        raise InvalidRequestError("max_tokens must be >= 0 and temperature within 0..2")


def page_text(number: int, result: PageResult) -> PageText:
    return PageText(
        page_number=number,
        status=result.status.value,
        text=result.text,
        error_code=None if result.status is PageStatus.OK else result.status.value,
        token_count=result.token_count,
        processing_time_ms=round(result.engine_s * 1000),
        attempts=result.attempts,
    )


def dead_letter(
    msg: Msg, exc: BaseException, worker_id: str, request: OcrRequest | None
) -> DeadLetter:
    return DeadLetter(
        source_topic=msg.topic,
        source_partition=msg.partition,
        source_offset=msg.offset,
        error_class=type(exc).__name__,
        error_code=getattr(exc, "error_code", "POISON_RECORD"),
        error_message=str(exc),
        failed_at=utc_now(),
        key=msg.key,
        value=msg.value,
        headers=[RecordHeader(k, v) for k, v in (msg.headers or ())],
        document_id=document_id_of(msg, request),
        worker_id=worker_id,
    )


def document_id_of(msg: Msg, request: OcrRequest | None) -> str:
    """The request's id; without a usable one, the record key, else its position."""
    if request is not None and request.document_id.strip():
        return request.document_id
    return fallback_document_id(msg)


def fallback_document_id(msg: Msg) -> str:
    """The record key when it is readable text, else the record's position."""
    if msg.key:
        with contextlib.suppress(UnicodeDecodeError):
            return str(msg.key.decode("utf-8"))
    return f"{msg.topic}-{msg.partition}-{msg.offset}"


def sha256_hex(raw: bytes) -> str | None:
    return hashlib.sha256(raw).hexdigest() if raw else None


def millis_between(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else round((end - start).total_seconds() * 1000)
