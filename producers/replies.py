"""Replies: the result (and progress events) of each document one is waiting for.

One ``ReplyReader`` reads the result topic, and the progress topic when asked, from its
end at start-up, and hands each record to the ``Reply`` of its document id. It reads
either every partition, without a consumer group (the CLI, the demo, one gateway), or,
``routed``, only the partitions its group assigns it (gateway replicas; see
``producers.routing``): then each request names one of them as its ``reply_partition``
(``reply_partition()``), and the worker answers there. Records of documents nobody
waits for are skipped by their key (the document id) without being decoded. Results
are matched by document id only: every reply waiting on an id gets the first result
for it. A document's progress events come in the order the worker sent them (one
partition), and before its result: the two topics are read independently, so a result
read before some of its pages' events waits until the progress partitions are read up
to where they ended when the result was read (the worker publishes a result only once
its events are acknowledged, ``producers.progress``). ``PageTexts`` turns a streaming
request's events into each page's text so far.

Errors a reply raises::

    ReplyError
    ├── ReplyTimeoutError   (also a TimeoutError) no result within the wait; still pending
    ├── ReplyReaderError    the reader stopped (broker error, bug); chained from the cause
    ├── ReplyClosedError    the reply was cancelled, or its client closed
    └── ReplyRoutingError   (routed) this reader cannot hear the reply
        ├── ReplyReassignedError    a rebalance gave its partition to another reader
        │                           (the result is still published there)
        └── NoReplyPartitionError   none assigned within the wait; nothing published
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from producers.routing import GroupAssignment, check_copartitioned
from schemas import (
    AvroSerde,
    CodecError,
    OcrProgress,
    OcrResult,
    PageStatus,
    SerdeContext,
)
from schemas.records import FORM_FEED, ProgressKind

READER_TASK_NAME = "medocr-reply-reader"
# How long a routed submit waits for a partition to name (a rebalance in progress).
ASSIGNMENT_WAIT_S = 30.0


class ReplyError(Exception):
    """A reply that ended without a result."""


class ReplyTimeoutError(ReplyError, TimeoutError):
    def __init__(self, document_id: str, timeout_s: float) -> None:
        super().__init__(
            f"no result for document {document_id!r} within {timeout_s:g} s"
        )
        self.document_id = document_id


class ReplyReaderError(ReplyError):
    """The task reading the result topic stopped; no pending reply can be answered."""


class ReplyClosedError(ReplyError):
    """The client was closed while the reply was pending."""


class ReplyRoutingError(ReplyError):
    """This reader cannot hear the reply: its partition is not one its group gave it."""


class ReplyReassignedError(ReplyRoutingError):
    """A rebalance gave the reply's partition to another reader; the result is still
    published there."""

    def __init__(self, document_id: str, topic: str, partition: int) -> None:
        super().__init__(
            f"the reply partition {topic}[{partition}] of document {document_id!r}"
            " was assigned to another reader; its result is still published there"
        )
        self.document_id = document_id
        self.partition = partition


class NoReplyPartitionError(ReplyRoutingError):
    """No partition was assigned to the reader within the wait; nothing was published."""


class Reply:
    """What comes back for one published document: page progress, then its result."""

    def __init__(
        self,
        document_id: str,
        forget: Callable[[Reply], None],
        *,
        streams_events: bool,
        partition: int | None = None,
    ) -> None:
        self.document_id = document_id
        self.partition = partition  # the reply partition its request names, if any
        self._forget = forget
        self._streams_events = streams_events
        self._done = asyncio.Event()
        self._outcome: OcrResult | ReplyError | None = None
        self._events: asyncio.Queue[OcrProgress | None] = asyncio.Queue()
        self._pages_ended: set[int] = set()  # pages whose PAGE event came

    def done(self) -> bool:
        return self._done.is_set()

    async def result(self, timeout_s: float | None = None) -> OcrResult:
        """The document's result; ``ReplyTimeoutError`` leaves the reply pending."""
        if not self.done():
            try:
                async with asyncio.timeout(timeout_s):  # wait_for may swallow a cancel
                    await self._done.wait()
            except TimeoutError:  # only ever with a timeout
                raise ReplyTimeoutError(self.document_id, timeout_s or 0.0) from None
        if isinstance(self._outcome, OcrResult):
            return self._outcome
        assert self._outcome is not None  # noqa: S101 - set before _done
        raise self._outcome

    async def events(self) -> AsyncIterator[OcrProgress]:
        """The document's progress events in the order sent (finished pages; for a
        streaming request also its text as generated and restarts); ends when the
        result arrives (or the error the reply ended with is raised)."""
        if not self._streams_events:
            raise ValueError(
                "no progress events: open the OcrClient with progress=True"
            )
        while (event := await self._events.get()) is not None:
            yield event
        if isinstance(self._outcome, ReplyError):
            raise self._outcome

    def cancel(self) -> None:
        """Stop waiting: ``result()`` raises ``ReplyClosedError``; a late result is
        ignored."""
        self._end(
            ReplyClosedError(f"stopped waiting for document {self.document_id!r}")
        )

    def _progress(self, event: OcrProgress) -> None:
        if self._streams_events and not self.done():
            self._events.put_nowait(event)
            if event.kind is ProgressKind.PAGE:
                self._pages_ended.add(event.page_number)

    def _may_miss_events(self, result: OcrResult) -> bool:
        """Whether events of the document may still be on their way: not every page
        of the result ended with its PAGE event (if it had one at all)."""
        return self._streams_events and len(self._pages_ended) < result.page_count

    def _end(self, outcome: OcrResult | ReplyError) -> None:
        if self.done():
            return
        self._outcome = outcome
        self._done.set()
        self._events.put_nowait(None)
        self._forget(self)


class PageTexts:
    """A document's text as its progress events tell it: each page's text so far.

    DELTA appends to its page, RESTART empties it, PAGE replaces it with the page's
    whole text and says it is final. A gap in ``sequence`` (a lost event) leaves the
    pages not yet final ``incomplete`` until their PAGE event; a smaller ``sequence``
    means the document started over (redelivered to another worker): every page is
    emptied. Events without a sequence (0, an older worker) are taken as they come.
    """

    def __init__(self) -> None:
        self._texts: dict[int, str] = {}
        self.statuses: dict[int, PageStatus] = {}  # pages final, with their status
        self.incomplete: set[int] = set()  # pages that may miss text until final
        self._sequence = 0

    def apply(self, event: OcrProgress) -> int:
        """Take one event of the document; the number of the page it changed."""
        number = event.page_number
        if self._gap_before(event.sequence):
            self._texts.setdefault(number, "")
            self.incomplete.update(n for n in self._texts if n not in self.statuses)
        if event.kind is ProgressKind.PAGE:
            self._texts[number] = event.text
            self.statuses[number] = event.status
            self.incomplete.discard(number)
        elif event.kind is ProgressKind.RESTART:
            self._texts[number] = ""
        elif number not in self.statuses:  # a DELTA; none after the page is final
            self._texts[number] = self._texts.get(number, "") + event.text
        return number

    def page(self, number: int) -> str:
        """Page ``number``'s text so far."""
        return self._texts.get(number, "")

    def text(self) -> str:
        """The pages so far in page order, form-feed separated (as a result's text)."""
        return FORM_FEED.join(self._texts[n] for n in sorted(self._texts))

    def _gap_before(self, sequence: int) -> bool:
        """Whether events were lost before this one; a document that starts over is
        forgotten first."""
        if sequence == 0:
            return False
        if sequence <= self._sequence:  # the document starts over
            self._texts.clear()
            self.statuses.clear()
            self.incomplete.clear()
            self._sequence = 0
        gap = sequence > self._sequence + 1
        self._sequence = sequence
        return gap


@dataclass(eq=False)
class _Settling:
    """A result read before, perhaps, some of its document's progress events: its
    replies end once the progress partitions are read up to ``until``, their end
    offsets just after the result was read."""

    result: OcrResult
    replies: list[Reply]
    until: dict[TopicPartition, int] | None = None


@dataclass
class ReaderCounts:
    """What the reader did with the records it read (for benches and metrics)."""

    read: int = 0  # records fetched from the result and progress topics
    decoded: int = 0  # of them, decoded: their key is a document someone waits for


class ReplyReader:
    """One task reads answers for every pending reply.

    ``routed``: ``consumer`` is in a group (``build_reply_group_consumer``) and this
    reader reads only the partitions the group assigns it; else it reads every
    partition of the topics, without a group (``build_waiter_consumer``).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        result_topic: str,
        progress_topic: str | None = None,
        *,
        serde: AvroSerde | None = None,
        routed: bool = False,
        assignment_wait_s: float = ASSIGNMENT_WAIT_S,
    ) -> None:
        self._consumer = consumer
        self._serde = serde or AvroSerde()
        self._result_topic = result_topic
        self._progress_topic = progress_topic
        self._group = (
            GroupAssignment(consumer, result_topic, progress_topic, self._reassigned)
            if routed
            else None
        )
        self._assignment_wait_s = assignment_wait_s
        self._pending: dict[str, list[Reply]] = {}
        self._settling: list[_Settling] = []
        self._task: asyncio.Task[None] | None = None
        self._failure: ReplyError | None = None
        self._started = False
        self.counts = ReaderCounts()

    async def start(self) -> None:
        """Start reading every partition from its end (routed: join the group, which
        assigns some); call before publishing."""
        self._started = True
        await self._consumer.start()
        partitions = {topic: await self._partitions(topic) for topic in self._topics()}
        if self._group is not None:
            try:
                check_copartitioned({t: len(p) for t, p in partitions.items()})
            except ValueError as exc:
                raise ReplyReaderError(str(exc)) from None
            self._consumer.subscribe(list(partitions), listener=self._group)
        else:
            tps = [tp for topic_tps in partitions.values() for tp in topic_tps]
            self._consumer.assign(tps)
            await self._consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the end offsets now, before anything is published
                await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read(), name=READER_TASK_NAME)
        self._task.add_done_callback(self._reader_stopped)

    async def stop(self) -> None:
        """Stop reading; replies still pending raise ``ReplyClosedError``."""
        if self._failure is None:
            self._failure = ReplyClosedError("the OcrClient was closed")
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # its end (or error) is already reported
        self._fail_pending(self._failure)
        if self._started:
            await self._consumer.stop()  # routed: leaves the group at once

    def ready(self) -> bool:
        """Reading, and (routed) holding a partition that requests may name."""
        started = self._task is not None and self._failure is None
        return started and (self._group is None or bool(self.reply_partitions()))

    def reply_partitions(self) -> tuple[int, ...] | None:
        """The result partitions requests may name now; None: every one is read."""
        return self._group.partitions.routable if self._group is not None else None

    async def reply_partition(self) -> int | None:
        """The partition the next request names (round robin over those assigned);
        None when every partition is read. Routed, waits for an assignment
        (``NoReplyPartitionError`` after ``assignment_wait_s``)."""
        if self._group is None:
            return None
        partition = await self._group.partitions.wait(self._assignment_wait_s)
        if partition is None and self._failure is None:  # else expect() says why
            raise NoReplyPartitionError(
                f"no partition of {self._result_topic} was assigned to this reader"
                f" within {self._assignment_wait_s:g} s"
            )
        return partition

    def expect(self, document_id: str, partition: int | None = None) -> Reply:
        """A reply for ``document_id``, whose request names ``partition`` (from
        ``reply_partition()``): register it before publishing the request."""
        if self._failure is not None:
            raise _for_document(self._failure, document_id)
        reply = Reply(
            document_id,
            self._forget,
            streams_events=self._progress_topic is not None,
            partition=partition,
        )
        self._pending.setdefault(document_id, []).append(reply)
        return reply

    def pending(self) -> int:
        """How many replies wait for their result."""
        return sum(len(replies) for replies in self._pending.values())

    def _topics(self) -> list[str]:
        return [t for t in (self._result_topic, self._progress_topic) if t is not None]

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        partitions = self._consumer.partitions_for_topic(topic)
        if partitions is None:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            raise ReplyReaderError(f"topic {topic} does not exist")
        return [TopicPartition(topic, p) for p in sorted(partitions)]

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            # Progress first: a page's event and its document's result can come in
            # one fetch, and a reply's events end with its result.
            for tp in sorted(batch, key=lambda tp: tp.topic == self._result_topic):
                msgs = batch[tp]
                for msg in msgs:
                    self._deliver(tp.topic, msg.key, msg.value)
                if self._group is not None and msgs:
                    self._group.read(tp, msgs[-1].offset + 1)
            if self._settling:
                await self._settle()

    def _deliver(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.counts.read += 1
        # Results and progress are keyed by document id: the others are not decoded.
        if value is None or (key is not None and not self._waits_for(_text(key))):
            return
        self.counts.decoded += 1
        ctx = SerdeContext(topic)
        try:
            if topic == self._result_topic:
                result = self._serde.deserialize(OcrResult, value, ctx)
            else:
                progress = self._serde.deserialize(OcrProgress, value, ctx)
        except CodecError:
            return  # a foreign record on the topic is not ours to answer
        if topic == self._result_topic:
            replies = self._pending.pop(result.document_id, [])
            waiting = [r for r in replies if r._may_miss_events(result)]
            for reply in replies:
                if reply not in waiting:
                    reply._end(result)
            if waiting:
                self._settling.append(_Settling(result, waiting))
        else:
            settling = (
                r
                for s in self._settling
                if s.result.document_id == progress.document_id
                for r in s.replies
            )
            for reply in [*self._pending.get(progress.document_id, []), *settling]:
                reply._progress(progress)

    def _waits_for(self, document_id: str) -> bool:
        return document_id in self._pending or any(
            s.result.document_id == document_id for s in self._settling
        )

    async def _settle(self) -> None:
        """End the replies whose results wait for the progress read before them."""
        fresh = [s for s in self._settling if s.until is None]
        if fresh:
            assigned = self._consumer.assignment()
            progress = [tp for tp in assigned if tp.topic == self._progress_topic]
            try:
                ends = await self._consumer.end_offsets(progress) if progress else {}
            except KafkaError:
                ends = {}  # best effort, as the events are: they may come too late
            for settling in fresh:
                settling.until = ends
        for settling in list(self._settling):
            if not settling.replies or await self._read_up_to(settling.until or {}):
                self._settling.remove(settling)
                for reply in list(settling.replies):
                    reply._end(settling.result)

    async def _read_up_to(self, until: dict[TopicPartition, int]) -> bool:
        assigned = self._consumer.assignment()
        for tp, end in until.items():
            if tp in assigned and await self._consumer.position(tp) < end:
                return False
        return True

    def _reassigned(self, routable: tuple[int, ...]) -> None:
        """A rebalance ended: replies whose partition this reader lost fail now."""
        for replies in list(self._pending.values()):
            for reply in list(replies):
                if reply.partition is not None and reply.partition not in routable:
                    reply._end(
                        ReplyReassignedError(
                            reply.document_id, self._result_topic, reply.partition
                        )
                    )

    def _forget(self, reply: Reply) -> None:
        for settling in self._settling:
            if reply in settling.replies:
                settling.replies.remove(reply)
        replies = self._pending.get(reply.document_id, [])
        if reply in replies:
            replies.remove(reply)
        if not replies:
            self._pending.pop(reply.document_id, None)

    def _reader_stopped(self, task: asyncio.Task[None]) -> None:
        if self._failure is not None:
            return  # stopped on purpose
        if task.cancelled():
            failure = ReplyReaderError("the result reader was cancelled")
        else:
            cause = task.exception()
            failure = ReplyReaderError(f"the result reader stopped: {cause!r}")
            failure.__cause__ = cause
        self._failure = failure
        self._fail_pending(failure)

    def _fail_pending(self, failure: ReplyError) -> None:
        if self._group is not None:
            self._group.partitions.close()  # a submit waiting for one gives up
        for replies in list(self._pending.values()):
            for reply in list(replies):
                reply._end(_for_document(failure, reply.document_id))
        for settling in self._settling:  # their result came: it is theirs
            for reply in list(settling.replies):
                reply._end(settling.result)
        self._settling.clear()


def _text(key: bytes) -> str:
    """A record key as the document id it was encoded from."""
    return key.decode("utf-8", "replace")


def _for_document(failure: ReplyError, document_id: str) -> ReplyError:
    """The failure, re-raised for one document (one exception object per reply)."""
    error = type(failure)(f"no result for document {document_id!r}: {failure}")
    error.__cause__ = failure.__cause__
    return error
