"""``OcrClient``: submit scans and await their results from Python.

The event-driven form of a synchronous OCR call: ``await client.recognize(path)`` publishes
a request and resolves when that document's result arrives on the result topic, however
many other documents are in flight. Results are matched by document id; when a worker
crashed and answered a document twice, the first answer wins.

::

    async with OcrClient(client_kwargs, topics) as client:
        result = await client.recognize(Path("scan.tif"), timeout_s=120)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from producers.kafka import (
    ProducerOptions,
    Topics,
    build_producer,
    build_waiter_consumer,
)
from producers.publisher import RequestOptions, ScanPublisher, build_request
from producers.waiter import ResultWaiter
from schemas import OcrRequest, OcrResult


class OcrClient:
    def __init__(
        self,
        client_kwargs: Mapping[str, object],
        topics: Topics,
        producer_options: ProducerOptions | None = None,
    ) -> None:
        options = producer_options or ProducerOptions()
        self._producer = build_producer(client_kwargs, options)
        self._waiter = ResultWaiter(
            build_waiter_consumer(client_kwargs, options.max_document_bytes),
            topics.results,
        )
        self._publisher = ScanPublisher(self._producer, topics.requests)
        self._pending: dict[str, asyncio.Future[OcrResult]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OcrClient:
        await self._waiter.start()
        await self._producer.start()
        self._reader = asyncio.create_task(self._read_results())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._producer.stop()
        await self._waiter.stop()

    async def submit(self, request: OcrRequest) -> asyncio.Future[OcrResult]:
        """Publish one request; the returned future resolves with its result."""
        if request.document_id in self._pending:
            raise ValueError(f"document {request.document_id!r} is already in flight")
        answer: asyncio.Future[OcrResult] = asyncio.get_running_loop().create_future()
        self._pending[request.document_id] = answer
        try:
            await (await self._publisher.publish(request))
        except BaseException:
            self._pending.pop(request.document_id, None)
            raise
        return answer

    async def recognize(
        self,
        path: Path,
        *,
        timeout_s: float = 600.0,
        options: RequestOptions | None = None,
    ) -> OcrResult:
        """Publish a scan file and wait for its result (``TimeoutError`` after the wait)."""
        request = await asyncio.to_thread(
            build_request, path, options or RequestOptions()
        )
        answer = await self.submit(request)
        try:
            return await asyncio.wait_for(answer, timeout_s)
        finally:
            self._pending.pop(request.document_id, None)

    async def _read_results(self) -> None:
        async for result in self._waiter.stream():
            answer = self._pending.pop(result.document_id, None)
            if answer is not None and not answer.done():
                answer.set_result(result)
