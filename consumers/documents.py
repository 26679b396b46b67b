"""One consumed record in, one outcome out: a result, and a dead letter when it failed.

The path of a record: decode and check the request (``intake``), read its bytes, open
the scan and size every page from its headers, then decode the pages one at a time,
each after taking its place in the page budget, and hand each to the engine as soon as
it is decoded. Kafka offsets, publishing and commits are the worker's business.

Whatever goes wrong while handling the record ends the record, never the worker:
``classify(exc, Scope.RECORD)`` turns even an unexpected exception into a FAILED
outcome (``INTERNAL_ERROR``). Only what ``classify`` calls fatal leaves ``recognize``:
the engine died, transient errors outlasted their retries, or the task was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from consumers.budget import PagePlaces
from consumers.engines import OcrEngine, PageRequest
from consumers.errors import (
    Action,
    DecodeTimeoutError,
    EngineDeadError,
    InvalidRequestError,
    PipelineError,
    Scope,
    classify,
    error_code,
)
from consumers.inputs import DecodedDocument, ImageLimits, Page, open_document
from consumers.intake import RequestLimits, check_request, decode_request, echoable
from consumers.metrics import WorkerMetrics
from consumers.outcomes import Msg, Outcome, OutcomeBuilder, page_text, where
from consumers.retry import RetryPolicy, retry_transient
from consumers.state import WorkerState
from consumers.storage import read_uri_within
from consumers.threads import run_abandonable
from schemas import OcrPage, OcrRequest, PageStatus
from schemas.content_types import sniff_content_type

log = logging.getLogger(__name__)
T = TypeVar("T")

# Pages are decoded this many at a time across the worker (and within a pixel bound).
# Everything decoding at once would share the cores evenly, so every page would be
# ready late; in turns, the first pages reach the engine early (an idle GPU starts on
# the first page it gets) and later ones follow at the same rate.
DECODE_CONCURRENCY = 4

# A file:// read, and a document's decoding, that take longer are abandoned.
URI_READ_TIMEOUT_S = 10.0
DECODE_TIMEOUT_S = 60.0

PageCallback = Callable[[OcrRequest, OcrPage, int], Awaitable[None]]
DocumentOpener = Callable[[bytes, ImageLimits], DecodedDocument]  # INPUTS.open


@dataclass(frozen=True)
class RecognizerOptions:
    limits: ImageLimits
    uri_roots: tuple[str, ...]
    default_prompt: str
    default_max_tokens: int
    retry: RetryPolicy
    request_limits: RequestLimits = field(default_factory=RequestLimits)
    uri_read_timeout_s: float = URI_READ_TIMEOUT_S
    decode_timeout_s: float = DECODE_TIMEOUT_S


@dataclass
class _Known:
    """What is known of the record so far: a failure still reports it."""

    request: OcrRequest | None = None
    digest: str | None = None


class _DecodeClock:
    """Seconds spent decoding one document, against its limit; waits do not count."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.spent_s = 0.0

    async def run(self, decode: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return await run_abandonable(
                decode, timeout_s=max(self.limit_s - self.spent_s, 0.0), name="decode"
            )
        except TimeoutError:
            raise DecodeTimeoutError(
                f"decoding took longer than {self.limit_s:g} s (OCR_DECODE_TIMEOUT_S)"
            ) from None
        finally:
            self.spent_s += time.monotonic() - started


class _DecodeTurns:
    """Decodes in flight across the worker: at most ``DECODE_CONCURRENCY`` at once, and
    at most ``max_pixels`` pixels being decoded together (one page at the per-page
    limit, or several ordinary ones), so a batch of large documents cannot decode its
    way out of memory. A decode's share comes back when its thread ends, not when its
    caller gives up on it: an abandoned decode still counts while it runs."""

    def __init__(self, max_pixels: int) -> None:
        self._max_pixels = max_pixels
        self._count = 0
        self._pixels = 0
        self._changed = asyncio.Condition()
        self._notifying: set[asyncio.Task[None]] = set()

    async def run(self, pixels: int, clock: _DecodeClock, decode: Callable[[], T]) -> T:
        share = min(pixels, self._max_pixels)
        async with self._changed:
            await self._changed.wait_for(
                lambda: (
                    self._count < DECODE_CONCURRENCY
                    and self._pixels + share <= self._max_pixels
                )
            )
            self._count += 1
            self._pixels += share
        loop = asyncio.get_running_loop()

        def in_thread() -> T:
            try:
                return decode()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be closed
                    loop.call_soon_threadsafe(self._give_back, share)

        return await clock.run(in_thread)

    def _give_back(self, share: int) -> None:
        self._count -= 1
        self._pixels -= share
        task = asyncio.ensure_future(self._notify())
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class DocumentRecognizer:
    def __init__(
        self,
        engine: OcrEngine,
        metrics: WorkerMetrics,
        options: RecognizerOptions,
        outcomes: OutcomeBuilder,
        *,
        state: WorkerState | None = None,
        on_page: PageCallback | None = None,
        opener: DocumentOpener = open_document,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._options = options
        self._outcomes = outcomes
        self._state = state
        self._on_page = on_page
        self._open = opener
        self._decode_turns = _DecodeTurns(options.limits.max_pixels)

    async def recognize(self, msg: Msg, places: PagePlaces) -> Outcome:
        """The outcome of one record, which arrives holding its first budget place.

        Every place the record holds is given back before this returns or raises.
        """
        started = time.monotonic()
        known = _Known()
        try:
            return await self._recognize(msg, places, known, started)
        except Exception as exc:
            if classify(exc, Scope.RECORD) is not Action.DEAD_LETTER:
                raise
            self._log_failure(msg, exc)
            return self._outcomes.failed(msg, known.request, known.digest, exc, started)
        finally:
            places.give_all()

    async def _recognize(
        self, msg: Msg, places: PagePlaces, known: _Known, started: float
    ) -> Outcome:
        request = decode_request(msg)
        known.request = echoable(request, self._options.request_limits)
        check_request(request, self._options.request_limits)
        raw = await self._read(request)
        clock = _DecodeClock(self._options.decode_timeout_s)
        known.digest, document = await self._decode_turns.run(
            0, clock, lambda: (sha256_hex(raw), self._open(raw, self._options.limits))
        )
        texts = await self._pages(msg, request, document, places, clock)
        return self._outcomes.finished(msg, request, known.digest, texts, started)

    async def _read(self, request: OcrRequest) -> bytes:
        if request.image is not None:
            raw = request.image
        else:
            uri = request.image_uri or ""  # check_request made sure one of them is set
            raw = await read_uri_within(
                uri,
                self._options.uri_roots,
                self._options.limits.max_document_bytes,
                self._options.uri_read_timeout_s,
            )
        sniffed = sniff_content_type(raw) if raw else None
        if sniffed is not None and sniffed != request.content_type:
            raise InvalidRequestError(
                f"content_type says {request.content_type} but the bytes are {sniffed}"
            )
        return raw

    async def _pages(
        self,
        msg: Msg,
        request: OcrRequest,
        document: DecodedDocument,
        places: PagePlaces,
        clock: _DecodeClock,
    ) -> list[OcrPage]:
        """Decode page after page, each in its own budget place, into the engine."""
        count = document.page_count
        tasks: list[asyncio.Task[OcrPage]] = []
        try:
            for index in range(count):
                if index:  # the first page takes the place the record came with
                    await places.take()
                if any(task.done() and task.exception() for task in tasks):
                    break  # a page failed fatally: gather raises it below
                width, height = document.sizes[index]
                page = await self._decode_turns.run(
                    width * height, clock, partial(document.page, index)
                )
                tasks.append(
                    asyncio.create_task(self._page(msg, request, page, count, places))
                )
                del page
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _page(
        self,
        msg: Msg,
        request: OcrRequest,
        decoded: Page,
        count: int,
        places: PagePlaces,
    ) -> OcrPage:
        number = decoded.number
        page = PageRequest(
            document_id=request.document_id,
            page_number=number,
            image=decoded.image,
            prompt=request.prompt or self._options.default_prompt,
            max_tokens=request.max_tokens or self._options.default_max_tokens,
            temperature=request.temperature,
            dpi=decoded.dpi,
        )
        del decoded  # the request holds the image now
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
        except Exception as exc:  # noqa: BLE001 - classify() decides, in _failed_page
            text = self._failed_page(msg, number, exc)
        finally:
            places.give()
        self._metrics.pages.labels(status=text.status.value).inc()
        if text.status is not PageStatus.FAILED:
            self._metrics.page_seconds.observe(text.processing_time_ms / 1000)
        if self._state is not None:
            self._state.progressed()
        await self._progress(msg, request, text, count)
        return text

    def _failed_page(self, msg: Msg, number: int, exc: Exception) -> OcrPage:
        """A page the engine could not read fails alone, while the engine is healthy."""
        scope = Scope.RECORD if self._engine.health().loaded else Scope.SHARED
        if classify(exc, scope) is not Action.DEAD_LETTER:
            if scope is Scope.SHARED and not isinstance(exc, PipelineError):
                raise EngineDeadError(
                    f"the engine failed ({type(exc).__name__}) and is not healthy"
                ) from exc
            raise exc
        self._log_failure(msg, exc, f"page {number}")
        return OcrPage(number, PageStatus.FAILED, error_code=error_code(exc))

    async def _progress(
        self, msg: Msg, request: OcrRequest, text: OcrPage, count: int
    ) -> None:
        """Progress events are best effort: a failed one never fails the page."""
        if self._on_page is None:
            return
        try:
            await self._on_page(request, text, count)
        except Exception as exc:  # noqa: BLE001 - a side channel; the result follows
            log.warning(
                "%s page %d: progress event not sent (%s)",
                where(msg),
                text.page_number,
                type(exc).__name__,
            )

    @staticmethod
    def _log_failure(msg: Msg, exc: BaseException, what: str = "record") -> None:
        code = error_code(exc)
        if classify(exc) is not Action.CRASH:  # a poison record, as designed
            log.warning("%s %s failed: %s", where(msg), what, code)
            return
        # A bug contained to one record: loud, with the frames but not the message,
        # which may quote the record's content (PHI).
        frames = " <- ".join(
            f"{frame.filename}:{frame.lineno} {frame.name}"
            for frame in reversed(traceback.extract_tb(exc.__traceback__))
        )
        log.error(
            "%s %s failed: %s (%s), dead-lettered; at %s",
            where(msg),
            what,
            code,
            type(exc).__name__,
            frames,
        )


def sha256_hex(raw: bytes) -> str | None:
    return hashlib.sha256(raw).hexdigest() if raw else None
