"""``OcrClient``: publish scans and await their results from Python.

The one publish-and-wait path (``medocr publish --wait``, the demo and the benches use
it): ``submit`` publishes a request and returns its ``Reply``, registered before the
request is sent so no result can be missed, however many other documents are in flight::

    async with OcrClient(client_kwargs, topics, progress=True) as client:
        reply = await client.submit(request, stream=True)
        text = PageTexts()
        async for event in reply.events():  # DELTA, RESTART, PAGE... until the result
            text.apply(event)  # each page's text so far: text.page(n)
        result = await reply.result(timeout_s=120)

The result topic is read by one task, started by ``start()`` or the first ``submit``;
``publish`` alone (fire and forget) never starts it. If that task dies, every pending
reply fails at once with ``ReplyReaderError`` and so does every later ``submit``. See
``producers.replies`` for how results are matched (by document id, first one wins).

By default the reader reads every partition of the result (and progress) topic. With
``reply_group`` (gateway replicas) it reads only the partitions that group assigns it,
and ``submit`` names one of them in each request (``reply_partition``) so the worker
answers there (``producers.routing``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import RecordMetadata

from producers.kafka import (
    FETCH_MAX_WAIT_MS,
    ProducerOptions,
    Topics,
    build_producer,
    build_reply_group_consumer,
    build_waiter_consumer,
)
from producers.publisher import RequestOptions, ScanPublisher, build_request
from producers.replies import ReaderCounts, Reply, ReplyReader
from schemas import AvroSerde, OcrRequest, OcrResult


class OcrClient:
    def __init__(
        self,
        client_kwargs: Mapping[str, object],
        topics: Topics,
        producer_options: ProducerOptions | None = None,
        *,
        progress: bool = False,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        serde: AvroSerde | None = None,
        reply_group: str | None = None,
    ) -> None:
        """``progress``: also read the progress topic, for ``Reply.events()``;
        ``fetch_max_wait_ms``: how long the reader's fetches wait at the broker;
        ``serde``: how requests are written and results read (Avro single-object);
        ``reply_group``: read only the partitions this consumer group assigns (one
        group for all replicas of a gateway), and have requests answered there."""
        self._client_kwargs = client_kwargs
        self._topics = topics
        self._options = producer_options or ProducerOptions()
        self._progress = progress
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._serde = serde or AvroSerde()
        self._reply_group = reply_group
        self._producer = build_producer(client_kwargs, self._options)
        self._publisher = ScanPublisher(self._producer, topics.requests, self._serde)
        self._reader: ReplyReader | None = None
        self._reader_started = asyncio.Lock()

    @property
    def request_topic(self) -> str:
        return self._topics.requests

    async def __aenter__(self) -> OcrClient:
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._reader is not None:
                await self._reader.stop()
        finally:
            await self._producer.stop()

    async def start(self) -> None:
        """Start reading replies now rather than at the first ``submit`` (a gateway,
        whose ``/ready`` waits for it); ``ReplyReaderError`` when it cannot."""
        await self._started_reader()

    def ready(self) -> bool:
        """Replies can be heard: the reader runs and (``reply_group``) holds a
        partition of the result topic to name in requests."""
        return self._reader is not None and self._reader.ready()

    def reply_partitions(self) -> tuple[int, ...] | None:
        """The result partitions requests name now, round robin (``reply_group``:
        its assignment, empty before it comes and during a rebalance); None when the
        reader reads every partition and requests name none."""
        if self._reply_group is None:
            return None
        return self._reader.reply_partitions() if self._reader is not None else ()

    def reader_counts(self) -> ReaderCounts | None:
        """The records the reply reader read, and decoded, so far (None before it
        starts)."""
        return self._reader.counts if self._reader is not None else None

    async def publish(self, request: OcrRequest) -> asyncio.Future[RecordMetadata]:
        """Queue one request without waiting for its result (fire and forget); the
        returned future resolves when the broker has it."""
        return await self._publisher.publish(request)

    async def submit(self, request: OcrRequest, *, stream: bool | None = None) -> Reply:
        """Publish one request and return its reply once the broker has the request.

        ``stream``: ask for the text as it is generated (``Reply.events()`` yields its
        DELTA and RESTART events), overriding ``request.stream``; a streaming request
        needs a client opened with ``progress=True``. Submitting an id whose reply is
        still pending publishes again; both replies get the first result for that id
        (results carry nothing else to tell them apart). With ``reply_group`` the
        request names one of the reader's partitions as ``reply_partition`` (waiting
        for an assignment: ``NoReplyPartitionError``), whatever it named before."""
        if stream is not None and stream != request.stream:
            request = dataclasses.replace(request, stream=stream)
        if request.stream and not self._progress:
            raise ValueError(
                "a streaming request needs an OcrClient opened with progress=True"
            )
        reader = await self._started_reader()
        partition = await reader.reply_partition()
        if partition is not None:
            request = dataclasses.replace(request, reply_partition=partition)
        reply = reader.expect(request.document_id, partition)  # no await in between
        try:
            await (await self.publish(request))
        except BaseException:
            reply.cancel()
            raise
        return reply

    async def recognize(
        self,
        path: Path,
        *,
        timeout_s: float = 600.0,
        options: RequestOptions | None = None,
    ) -> OcrResult:
        """Publish a scan file and wait for its result (``ReplyTimeoutError``, a
        ``TimeoutError``, after the wait)."""
        request = await asyncio.to_thread(
            build_request, path, options or RequestOptions()
        )
        reply = await self.submit(request)
        try:
            return await reply.result(timeout_s)
        finally:
            reply.cancel()

    async def _started_reader(self) -> ReplyReader:
        async with self._reader_started:
            if self._reader is None:
                reader = ReplyReader(
                    self._reply_consumer(),
                    self._topics.results,
                    self._topics.progress if self._progress else None,
                    serde=self._serde,
                    routed=self._reply_group is not None,
                )
                try:
                    await reader.start()
                except BaseException:
                    await reader.stop()
                    raise
                self._reader = reader
            return self._reader

    def _reply_consumer(self) -> AIOKafkaConsumer:
        if self._reply_group is None:
            return build_waiter_consumer(
                self._client_kwargs,
                self._options.max_document_bytes,
                fetch_max_wait_ms=self._fetch_max_wait_ms,
            )
        return build_reply_group_consumer(
            self._client_kwargs,
            self._options.max_document_bytes,
            group_id=self._reply_group,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
