"""Page progress events: best effort, never in the way of a page or its result.

A multi-page document's finished pages are published as they finish; the result itself
follows once the last one is done, so a single page sends none. A send that fails, or a
delivery the broker refuses, is logged (page number and error class, never the text) and
forgotten: progress is a convenience for waiters, the result is the record of truth.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.structs import RecordMetadata

from producers.results import ResultPublisher
from schemas import OcrPage, OcrProgress, OcrRequest
from schemas.records import utc_now

log = logging.getLogger(__name__)


class ProgressSender:
    """A page callback for the worker that publishes each finished page."""

    def __init__(self, publisher: ResultPublisher) -> None:
        self._publisher = publisher
        self.failures = 0

    async def __call__(
        self, request: OcrRequest, page: OcrPage, page_count: int
    ) -> None:
        if page_count < 2:
            return  # the result itself follows at once
        event = OcrProgress(
            document_id=request.document_id,
            page_number=page.page_number,
            page_count=page_count,
            status=page.status,
            emitted_at=utc_now(),
            text=page.text,
        )
        try:
            delivery = await self._publisher.send_progress(event)
        except Exception as exc:  # noqa: BLE001 - best effort, by design
            self._failed(page.page_number, exc)
            return
        delivery.add_done_callback(lambda done: self._delivered(page.page_number, done))

    def _delivered(self, number: int, delivery: asyncio.Future[RecordMetadata]) -> None:
        if delivery.cancelled():
            return
        exc = delivery.exception()
        if exc is not None:
            self._failed(number, exc)

    def _failed(self, number: int, exc: BaseException) -> None:
        self.failures += 1
        log.warning(
            "progress of page %d not delivered (%s)", number, type(exc).__name__
        )
