"""Progress events: finished pages and streamed text, best effort, in order per document.

What a worker publishes to the progress topic while a document is in flight:

- ``PAGE``: a page finished, with its status and whole text: each page of a multi-page
  document when ``publish_pages`` (``OCR_PUBLISH_PROGRESS=true``), and every page of a
  request with ``stream=true`` (a single page too: a reader needs each page's end);
- ``DELTA`` and ``RESTART``, for a request with ``stream=true`` only: the engine's text
  as it is generated, coalesced (``producers.streams``), and a page that starts over
  (its buffered text is dropped, the RESTART goes out at once).

Every event goes out through one queue and one sending task (started when there is
something to send, gone when idle), keyed by document id and sent to the request's
``reply_partition`` when it names one (as its result), so a document's events reach
its partition in the order they were made, numbered 1, 2, 3... (``sequence``) per record.
A page's DELTA text goes before its PAGE event, and the page callback returns once its
PAGE event is delivered (acknowledged by the broker, or refused), before the record's
result is published: a reader that sees the result finds every event delivered before
it in the progress partition's log (``producers.replies`` waits for them).

Best effort: a send the producer refuses, or a delivery the broker refuses, is logged
(kind, page number and error class, never text) and counted in ``failures``; nothing
here fails a page, a record or the worker. Memory is bounded: at most ``max_queued``
events wait; DELTAs beyond that are dropped and counted in ``dropped`` (a gap in
``sequence``), as are the DELTAs waiting behind a refused send: the page's PAGE event
carries its whole text anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from dataclasses import dataclass
from functools import partial

from aiokafka.structs import RecordMetadata

from producers.results import ResultPublisher
from producers.streams import Coalesced, DeltaCoalescer, StreamPolicy
from schemas import OcrPage, OcrProgress, OcrRequest, PageStatus
from schemas.records import ProgressKind, utc_now

log = logging.getLogger(__name__)

SENDER_TASK_NAME = "medocr-progress-sender"
# Events waiting for the sending task; DELTAs beyond it are dropped. A healthy producer
# takes an event in microseconds, so only a stalled one ever fills it.
MAX_QUEUED = 1024
# A timer may fire this early (the loop's clock resolution); what is due this soon goes.
_SLACK_S = 0.001


@dataclass(eq=False)
class _Document:
    """One record's stream: its document id and the numbers its events took so far."""

    document_id: str
    reply_partition: int | None = None  # the request's: where its events go
    sequence: int = 0
    warned: bool = False  # one warning a record for its lost DELTAs

    def event(
        self,
        kind: ProgressKind,
        page_number: int,
        *,
        text: str = "",
        page_count: int = 0,  # PAGE only
        status: PageStatus = PageStatus.OK,
        attempt: int = 1,
        reason: str | None = None,
    ) -> OcrProgress:
        """The record's next event, numbered."""
        self.sequence += 1
        return OcrProgress(
            document_id=self.document_id,
            page_number=page_number,
            page_count=page_count,
            status=status,
            emitted_at=utc_now(),
            text=text,
            kind=kind,
            attempt=attempt,
            sequence=self.sequence,
            reason=reason,
        )


_PageKey = tuple[_Document, int]  # the record's stream, the page number


@dataclass
class _Queued:
    document: _Document
    event: OcrProgress
    handed: asyncio.Future[None] | None = None  # a page callback waits for its delivery


class ProgressSender:
    """The worker's progress channel: its page callback (``await sender(request, page,
    count)``) and the hook of a streaming request's text (``delta``, ``restart``)."""

    def __init__(
        self,
        publisher: ResultPublisher,
        *,
        publish_pages: bool = True,
        policy: StreamPolicy | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        """``publish_pages``: PAGE events for multi-page documents that do not stream
        (``OCR_PUBLISH_PROGRESS``); ``policy``: when buffered text goes out."""
        self._publisher = publisher
        self._publish_pages = publish_pages
        self._coalescer: DeltaCoalescer[_PageKey] = DeltaCoalescer(policy)
        self._max_queued = max_queued
        # Each record's stream, by the identity of its request object: forgotten when
        # the record lets go of its request, however the record ended.
        self._documents: dict[int, _Document] = {}
        self._queue: deque[_Queued] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0  # sends or deliveries refused
        self.dropped = 0  # events never sent (see above; and what waits at aclose)

    async def __call__(
        self, request: OcrRequest, page: OcrPage, page_count: int
    ) -> None:
        """A page finished: its text still buffered, then its PAGE event, delivered."""
        if self._closed:
            return
        if not request.stream and not (self._publish_pages and page_count > 1):
            return  # the result itself follows at once
        document = self._document(request)
        rest = self._coalescer.take((document, page.page_number))
        if rest is not None:
            self._put_delta(rest)
        handed = asyncio.get_running_loop().create_future()
        self._put(
            document,
            document.event(
                ProgressKind.PAGE,
                page.page_number,
                text=page.text,
                page_count=page_count,
                status=page.status,
            ),
            handed,
        )
        await handed

    def delta(
        self, request: OcrRequest, page_number: int, text: str, attempt: int
    ) -> None:
        """Text a streaming request's page generated; never blocks, never raises."""
        if self._closed or not request.stream or not text:
            return
        key = (self._document(request), page_number)
        now_s = asyncio.get_running_loop().time()
        for ready in self._coalescer.add(key, text, attempt, now_s):
            self._put_delta(ready)
        self._running()  # the timer of what waits

    def restart(
        self, request: OcrRequest, page_number: int, attempt: int, reason: str
    ) -> None:
        """A streaming request's page starts over: its buffered text is dropped and a
        RESTART goes out at once."""
        if self._closed or not request.stream:
            return
        document = self._document(request)
        self._coalescer.discard((document, page_number))
        self._put(
            document,
            document.event(
                ProgressKind.RESTART, page_number, attempt=attempt, reason=reason
            ),
        )

    async def aclose(self) -> None:
        """Stop: what still waits is dropped, the sending task is gone on return."""
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self._drop_queued()
        self.dropped += self._coalescer.clear()

    def streams(self) -> int:
        """Records whose stream is remembered (their request is still alive)."""
        return len(self._documents)

    def _document(self, request: OcrRequest) -> _Document:
        key = id(request)
        document = self._documents.get(key)
        if document is None:
            document = self._documents[key] = _Document(
                request.document_id, request.reply_partition
            )
            # Runs as the request is freed, before its id can be reused.
            weakref.finalize(request, self._documents.pop, key, None)
        return document

    def _put_delta(self, ready: Coalesced[_PageKey]) -> None:
        document, number = ready.key
        self._put(
            document,
            document.event(
                ProgressKind.DELTA, number, text=ready.text, attempt=ready.attempt
            ),
        )

    def _put(
        self,
        document: _Document,
        event: OcrProgress,
        handed: asyncio.Future[None] | None = None,
    ) -> None:
        if event.kind is ProgressKind.DELTA and len(self._queue) >= self._max_queued:
            self._lost(document, 1, "the queue is full")
            return
        self._queue.append(_Queued(document, event, handed))
        self._wake.set()
        self._running()

    def _running(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=SENDER_TASK_NAME
            )

    async def _run(self) -> None:
        """Send what is queued, in order; flush buffers as they come due; end idle."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                for ready in self._coalescer.due(loop.time() + _SLACK_S):
                    self._put_delta(ready)
                if self._queue:
                    await self._send(self._queue.popleft())
                    continue
                due_s = self._coalescer.next_due_s()
                if due_s is None:
                    return  # idle: the next event starts another task
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due_s - loop.time())):
                        await self._wake.wait()
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave waiters
            # the class only: a message may quote the text
            log.error("progress sender stopped (%s)", type(exc).__name__)  # noqa: TRY400
        finally:
            self._task = None
            self._drop_queued()  # empty unless cancelled or broken

    async def _send(self, queued: _Queued) -> None:
        event = queued.event
        try:
            delivery = await self._publisher.send_progress(
                event, partition=queued.document.reply_partition
            )
        except asyncio.CancelledError:  # closing: it never went
            self.dropped += 1
            _release(queued.handed)
            raise
        except Exception as exc:  # noqa: BLE001 - best effort, by design
            self._failed(event, exc)
            self._drop_deltas()  # behind a refused send: the PAGE event has the text
        else:
            delivery.add_done_callback(partial(self._delivered, event, queued.handed))
            return
        _release(queued.handed)  # refused, or closing: it never went

    def _delivered(
        self,
        event: OcrProgress,
        handed: asyncio.Future[None] | None,
        delivery: asyncio.Future[RecordMetadata],
    ) -> None:
        _release(handed)
        if delivery.cancelled():
            return
        exc = delivery.exception()
        if exc is not None:
            self._failed(event, exc)

    def _failed(self, event: OcrProgress, exc: BaseException) -> None:
        self.failures += 1
        log.warning(
            "progress %s of page %d not delivered (%s)",
            event.kind.value,
            event.page_number,
            type(exc).__name__,
        )

    def _drop_deltas(self) -> None:
        kept: deque[_Queued] = deque()
        for queued in self._queue:
            if queued.event.kind is ProgressKind.DELTA:
                self._lost(queued.document, 1, "a send was refused")
            else:
                kept.append(queued)
        self._queue = kept

    def _drop_queued(self) -> None:
        while self._queue:
            queued = self._queue.popleft()
            self.dropped += 1
            _release(queued.handed)

    def _lost(self, document: _Document, count: int, why: str) -> None:
        self.dropped += count
        if not document.warned:
            document.warned = True
            log.warning("progress events of a document dropped (%s)", why)


def _release(handed: asyncio.Future[None] | None) -> None:
    """The page callback waiting for this event returns."""
    if handed is not None and not handed.done():
        handed.set_result(None)
