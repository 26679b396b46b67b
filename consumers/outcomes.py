"""What one record ends as: an ``OcrResult``, plus a dead letter when it failed.

Every outcome the worker publishes is built here, from whatever is known of the record
when it ends: a request that never decoded still gets a result keyed by a usable id.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from aiokafka.structs import ConsumerRecord

from consumers.engines import PageResult, PageStatus
from consumers.errors import PageFailedError, PipelineError, error_code
from schemas import DeadLetter, DocumentStatus, OcrRequest, OcrResult, PageText
from schemas.records import FORM_FEED, RecordHeader, utc_now

# aiokafka ships no type information: a consumed record is typed by hand here.
Msg: TypeAlias = ConsumerRecord


@dataclass(frozen=True)
class Outcome:
    result: OcrResult
    dead_letter: DeadLetter | None = None


def where(msg: Msg) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


@dataclass(frozen=True)
class OutcomeBuilder:
    """Builds results and dead letters stamped with this worker's engine and id."""

    engine: str
    model: str
    worker_id: str

    def failed(
        self,
        msg: Msg,
        request: OcrRequest | None,
        digest: str | None,
        exc: BaseException,
        started: float,
    ) -> Outcome:
        """The whole record failed before any page was read."""
        result = self._result(
            msg,
            request,
            digest,
            started,
            status=DocumentStatus.FAILED,
            pages=[],
            error_code=error_code(exc),
            error_message=describe(exc),
        )
        return Outcome(result, self._dead_letter(msg, exc, request))

    def finished(
        self,
        msg: Msg,
        request: OcrRequest,
        digest: str | None,
        pages: list[PageText],
        started: float,
    ) -> Outcome:
        """Every page was tried; the record failed if any page did."""
        failed = [p for p in pages if p.status == "FAILED"]
        if not failed:
            return Outcome(
                self._result(
                    msg,
                    request,
                    digest,
                    started,
                    status=DocumentStatus.OK,
                    pages=pages,
                    error_code=None,
                    error_message=None,
                )
            )
        message = f"pages {', '.join(str(p.page_number) for p in failed)} failed"
        result = self._result(
            msg,
            request,
            digest,
            started,
            status=DocumentStatus.FAILED,
            pages=pages,
            error_code=PageFailedError.error_code,
            error_message=message,
        )
        letter = self._dead_letter(msg, PageFailedError(message), request)
        return Outcome(result, letter)

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
            model=self.model,
            engine=self.engine,
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
            worker_id=self.worker_id,
        )

    def _dead_letter(
        self, msg: Msg, exc: BaseException, request: OcrRequest | None
    ) -> DeadLetter:
        return DeadLetter(
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            error_class=type(exc).__name__,
            error_code=error_code(exc),
            error_message=describe(exc),
            failed_at=utc_now(),
            key=msg.key,
            value=msg.value,
            headers=[RecordHeader(k, v) for k, v in (msg.headers or ())],
            document_id=document_id_of(msg, request),
            worker_id=self.worker_id,
        )


def describe(exc: BaseException) -> str:
    """What a result may say about an error: our own messages; for a foreign
    exception (a bug) only its class, since its text may quote the record's content."""
    if isinstance(exc, PipelineError):
        return str(exc)
    return f"internal error while handling the record ({type(exc).__name__})"


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


def millis_between(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else round((end - start).total_seconds() * 1000)
