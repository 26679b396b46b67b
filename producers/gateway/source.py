"""Where the gateway's answers come from: one collaborator, swappable.

``ReplySource`` is the seam: ``submit`` publishes a request and returns what will
answer it; ``failure`` says why no answer can ever come again (``/health``), and
``broker_reachable`` whether answers can come now (``/ready``); a source that must be
given partitions to read before it can answer says so too (``ReaderStatus``). Today's
is ``ClientReplySource``: ``OcrClient.submit`` (the one publish-and-wait path) with its
one ``ReplyReader``, which reads the result and progress topics from their end: the
partitions the replicas' group (``GATEWAY_GROUP``) assigns it, which its requests name
as their ``reply_partition``, so this replica hears the answers to its own requests
and few others (``producers.routing``). A reply whose partition a rebalance gave to
another replica fails at once with ``UNAVAILABLE`` (503): its result is still
published.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from aiokafka import AIOKafkaConsumer

from producers.client import OcrClient
from producers.gateway.errors import GatewayError
from producers.replies import ReplyReaderError, ReplyRoutingError
from schemas import OcrProgress, OcrRequest, OcrResult

# How long /ready waits for the brokers' metadata, and how long an answer is reused.
PROBE_TIMEOUT_S = 3.0
PROBE_CACHE_S = 2.0
# What a 503 for a reply this replica can no longer hear tells the sender to wait.
ROUTING_RETRY_AFTER_S = 1


class PendingReply(Protocol):
    """What answers one request: progress events until the result, then the result."""

    def events(self) -> AsyncIterator[OcrProgress]: ...

    async def result(self, timeout_s: float | None = None) -> OcrResult: ...

    def cancel(self) -> None: ...


class ReplySource(Protocol):
    async def submit(self, request: OcrRequest) -> PendingReply: ...

    def failure(self) -> str | None: ...

    async def broker_reachable(self) -> bool: ...


@runtime_checkable
class ReaderStatus(Protocol):
    """A source whose reader must be started, and assigned partitions, before it
    can answer (``/ready``); a source without it is ready whenever the brokers are."""

    def reader_ready(self) -> bool: ...

    def reply_partitions(self) -> tuple[int, ...] | None: ...


class BrokerProbe:
    """Whether the brokers answer a metadata request and know the result topic."""

    def __init__(self, consumer: AIOKafkaConsumer, result_topic: str) -> None:
        self._consumer = consumer
        self._result_topic = result_topic
        self._last: tuple[float, bool] | None = None
        self._started = False

    async def start(self) -> None:
        await self._consumer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._consumer.stop()

    async def reachable(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < PROBE_CACHE_S:
            return self._last[1]
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                topics = await self._consumer.topics()
            answer = self._result_topic in topics
        except Exception:  # noqa: BLE001 - any failure to answer is "not reachable"
            answer = False
        self._last = (time.monotonic(), answer)
        return answer


class ClientReplySource:
    """``OcrClient.submit``, watched for the death of its result reader; replies it
    cannot hear (``ReplyRoutingError``) answer 503."""

    def __init__(self, client: OcrClient, probe: BrokerProbe) -> None:
        self._client = client
        self._probe = probe
        self._failure: str | None = None

    async def __aenter__(self) -> ClientReplySource:
        await self._probe.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._probe.stop()

    async def submit(self, request: OcrRequest) -> PendingReply:
        try:
            reply = await self._client.submit(request)
        except ReplyReaderError as exc:
            self._reader_failed(exc)
            raise
        except ReplyRoutingError as exc:
            raise unroutable(exc, request.document_id) from exc
        return _WatchedReply(reply, request.document_id, self._reader_failed)

    def failure(self) -> str | None:
        if self._failure is None:
            return None
        return f"the result reader stopped ({self._failure})"

    async def broker_reachable(self) -> bool:
        return await self._probe.reachable()

    def reader_ready(self) -> bool:
        return self._client.ready()

    def reply_partitions(self) -> tuple[int, ...] | None:
        return self._client.reply_partitions()

    def _reader_failed(self, exc: ReplyReaderError) -> None:
        # The reader never comes back: /health and /ready stay 503 until a restart.
        self._failure = self._failure or type(exc.__cause__ or exc).__name__


def unroutable(exc: ReplyRoutingError, document_id: str) -> GatewayError:
    """503: this replica cannot hear the reply (a rebalance gave its partition to
    another replica: the result is still published; or none was assigned to this
    replica in time: nothing was published)."""
    return GatewayError(
        "UNAVAILABLE",
        f"this gateway replica cannot wait for the result: {exc}",
        request_id=document_id,
        headers={"Retry-After": str(ROUTING_RETRY_AFTER_S)},
    )


class _WatchedReply:
    def __init__(
        self,
        reply: PendingReply,
        document_id: str,
        on_failure: _FailureHook,
    ) -> None:
        self._reply = reply
        self._document_id = document_id
        self._on_failure = on_failure

    async def events(self) -> AsyncIterator[OcrProgress]:
        try:
            async for event in self._reply.events():
                yield event
        except ReplyReaderError as exc:
            self._on_failure(exc)
            raise
        except ReplyRoutingError as exc:
            raise unroutable(exc, self._document_id) from exc

    async def result(self, timeout_s: float | None = None) -> OcrResult:
        try:
            return await self._reply.result(timeout_s)
        except ReplyReaderError as exc:
            self._on_failure(exc)
            raise
        except ReplyRoutingError as exc:
            raise unroutable(exc, self._document_id) from exc

    def cancel(self) -> None:
        self._reply.cancel()


class _FailureHook(Protocol):
    def __call__(self, exc: ReplyReaderError) -> None: ...
