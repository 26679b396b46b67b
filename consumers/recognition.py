"""One decoded page through the engine: retries, a page that fails alone, its metrics.

``PageRecognizer.recognize`` hands a page to the engine and retries what ``classify``
calls transient (``consumers.retry``). A page the engine cannot read, or a bug while
the engine stays healthy, fails that page alone (a FAILED ``OcrPage``); what is fatal
leaves. Either way the page gives back its budget place as soon as the engine is done
with it, is counted, and the progress callback hears of it (best effort).

Engine events (text as it is generated, a restart) reach ``on_event`` with the request
and the page number, for requests that ask to stream (``OcrRequest.stream``) only: for
any other request, or without that hook, the engine is asked for no stream at all.
``stream_hook`` makes that hook of a ``TextStream`` (``producers.progress``).
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from consumers.budget import PagePlaces
from consumers.engines import (
    OcrEngine,
    PageEvent,
    PageListener,
    PageRequest,
    StreamRestarted,
    TextDelta,
)
from consumers.errors import (
    Action,
    EngineDeadError,
    PipelineError,
    Scope,
    classify,
    error_code,
)
from consumers.inputs import Page
from consumers.metrics import WorkerMetrics
from consumers.outcomes import Msg, page_text, where
from consumers.retry import RetryPolicy, retry_transient
from consumers.state import WorkerState
from schemas import OcrPage, OcrRequest, PageStatus, TextSource

log = logging.getLogger(__name__)

PageCallback = Callable[[OcrRequest, OcrPage, int], Awaitable[None]]
# (request, page number, event); called on the loop, so it must not block
PageEventHook = Callable[[OcrRequest, int, PageEvent], None]


class TextStream(Protocol):
    """Where a streaming request's text goes as it is generated; must not block."""

    def delta(
        self, request: OcrRequest, page_number: int, text: str, attempt: int
    ) -> None: ...

    def restart(
        self, request: OcrRequest, page_number: int, attempt: int, reason: str
    ) -> None: ...


def stream_hook(stream: TextStream) -> PageEventHook:
    """The page event hook that tells ``stream`` the engine's events."""

    def hook(request: OcrRequest, number: int, event: PageEvent) -> None:
        if isinstance(event, TextDelta):
            stream.delta(request, number, event.text, event.attempt)
        else:
            stream.restart(request, number, event.attempt, event.reason)

    return hook


@dataclass(frozen=True)
class PageOptions:
    default_prompt: str
    default_max_tokens: int
    retry: RetryPolicy


class PageRecognizer:
    def __init__(
        self,
        engine: OcrEngine,
        metrics: WorkerMetrics,
        options: PageOptions,
        *,
        state: WorkerState | None = None,
        on_page: PageCallback | None = None,
        on_event: PageEventHook | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._options = options
        self._state = state
        self._on_page = on_page
        self._on_event = on_event

    async def recognize(
        self,
        msg: Msg,
        request: OcrRequest,
        decoded: Page,
        count: int,
        places: PagePlaces,
    ) -> OcrPage:
        """Page ``decoded`` of ``count``, which holds one of the record's places."""
        number = decoded.number
        source_page = decoded.source_index or number
        page = self._page_request(request, decoded)
        del decoded  # the request holds the image now
        listener = self._listener(msg, request, number)
        try:
            result = await retry_transient(
                lambda: self._engine.recognize(page, listener),
                self._options.retry,
                what=f"{where(msg)} page {number}",
                on_retry=lambda exc: self._retried(exc, listener),
            )
            text = page_text(number, result)
        except Exception as exc:  # noqa: BLE001 - classify() decides, in _failed
            text = self._failed(msg, number, exc)
        finally:
            places.give()
        text = dataclasses.replace(text, source_page=source_page)
        return await self._finished(msg, request, text, count)

    async def take_text(
        self,
        msg: Msg,
        request: OcrRequest,
        number: int,
        text: str | PipelineError,
        count: int,
        places: PagePlaces,
    ) -> OcrPage:
        """Page ``number`` of ``count`` from the document's own text layer (no engine),
        or failed with the error that says why it has none to take."""
        try:
            if isinstance(text, PipelineError):
                page = self._failed(msg, number, text)
            else:
                page = OcrPage(number, PageStatus.OK, text=text)
                listener = self._listener(msg, request, number)
                if listener is not None and text:
                    listener(TextDelta(text, attempt=1))
        finally:
            places.give()
        page = dataclasses.replace(
            page, source_page=number, text_source=TextSource.TEXT_LAYER
        )
        return await self._finished(msg, request, page, count)

    async def _finished(
        self, msg: Msg, request: OcrRequest, text: OcrPage, count: int
    ) -> OcrPage:
        """A page is done: counted, the worker is moving, progress is sent."""
        self._metrics.pages.labels(status=text.status.value).inc()
        if text.status is not PageStatus.FAILED and text.text_source is TextSource.OCR:
            self._metrics.page_seconds.observe(text.processing_time_ms / 1000)
        if self._state is not None:
            self._state.progressed()
        await self._progress(msg, request, text, count)
        return text

    def _page_request(self, request: OcrRequest, decoded: Page) -> PageRequest:
        return PageRequest(
            document_id=request.document_id,
            page_number=decoded.number,
            image=decoded.image,
            prompt=request.prompt or self._options.default_prompt,
            max_tokens=request.max_tokens or self._options.default_max_tokens,
            temperature=request.temperature,
            dpi=decoded.dpi,
        )

    def _listener(
        self, msg: Msg, request: OcrRequest, number: int
    ) -> PageListener | None:
        """The page's events for the hook, which can never fail the page; none (and
        so no stream from the engine) unless the request asks to stream."""
        hook = self._on_event
        if hook is None or not request.stream:
            return None
        failed = False

        def listen(event: PageEvent) -> None:
            nonlocal failed
            try:
                hook(request, number, event)
            except Exception as exc:  # noqa: BLE001 - a side channel; the page goes on
                if not failed:
                    log.warning(
                        "%s page %d: page event not delivered (%s)",
                        where(msg),
                        number,
                        type(exc).__name__,
                    )
                failed = True

        return listen

    def _retried(self, exc: BaseException, listener: PageListener | None) -> None:
        self._metrics.retries.labels(reason="transient").inc()
        if listener is not None:  # the engine starts the page over
            listener(StreamRestarted(attempt=1, reason=error_code(exc)))

    def _failed(self, msg: Msg, number: int, exc: Exception) -> OcrPage:
        """A page the engine could not read fails alone, while the engine is healthy."""
        scope = Scope.RECORD if self._engine.health().loaded else Scope.SHARED
        if classify(exc, scope) is not Action.DEAD_LETTER:
            if scope is Scope.SHARED and not isinstance(exc, PipelineError):
                raise EngineDeadError(
                    f"the engine failed ({type(exc).__name__}) and is not healthy"
                ) from exc
            raise exc
        log_failure(msg, exc, f"page {number}")
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


def log_failure(msg: Msg, exc: BaseException, what: str = "record") -> None:
    """A dead-lettered failure: a warning when poison, loud with frames when a bug."""
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
