"""Replies: the result (and progress events) of each document one is waiting for.

One ``ReplyReader`` reads the result topic, and the progress topic when asked, from its
end at start-up, without a consumer group, and hands each record to the ``Reply`` of
its document id. Records of documents nobody waits for are skipped. Results are matched
by document id only: every reply waiting on an id gets the first result for it. A
document's progress events come in the order the worker sent them (one partition);
``PageTexts`` turns a streaming request's events into each page's text so far.

Errors a reply raises::

    ReplyError
    ├── ReplyTimeoutError   (also a TimeoutError) no result within the wait; still pending
    ├── ReplyReaderError    the reader stopped (broker error, bug); chained from the cause
    └── ReplyClosedError    the reply was cancelled, or its client closed
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

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


class Reply:
    """What comes back for one published document: page progress, then its result."""

    def __init__(
        self,
        document_id: str,
        forget: Callable[[Reply], None],
        *,
        streams_events: bool,
    ) -> None:
        self.document_id = document_id
        self._forget = forget
        self._streams_events = streams_events
        self._done = asyncio.Event()
        self._outcome: OcrResult | ReplyError | None = None
        self._events: asyncio.Queue[OcrProgress | None] = asyncio.Queue()

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


class ReplyReader:
    """One task reads answers for every pending reply."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        result_topic: str,
        progress_topic: str | None = None,
        *,
        serde: AvroSerde | None = None,
    ) -> None:
        self._consumer = consumer
        self._serde = serde or AvroSerde()
        self._result_topic = result_topic
        self._progress_topic = progress_topic
        self._pending: dict[str, list[Reply]] = {}
        self._task: asyncio.Task[None] | None = None
        self._failure: ReplyError | None = None
        self._started = False

    async def start(self) -> None:
        """Assign every partition at its end and start reading; call before publishing."""
        self._started = True
        await self._consumer.start()
        tps: list[TopicPartition] = []
        for topic in (self._result_topic, self._progress_topic):
            if topic is not None:
                tps.extend(await self._partitions(topic))
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
            await self._consumer.stop()

    def expect(self, document_id: str) -> Reply:
        """A reply for ``document_id``: register it before publishing the request."""
        if self._failure is not None:
            raise _for_document(self._failure, document_id)
        reply = Reply(
            document_id, self._forget, streams_events=self._progress_topic is not None
        )
        self._pending.setdefault(document_id, []).append(reply)
        return reply

    def pending(self) -> int:
        """How many replies wait for their result."""
        return sum(len(replies) for replies in self._pending.values())

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
                for msg in batch[tp]:
                    if msg.value is not None:
                        self._deliver(tp.topic, msg.value)

    def _deliver(self, topic: str, value: bytes) -> None:
        ctx = SerdeContext(topic)
        try:
            if topic == self._result_topic:
                result = self._serde.deserialize(OcrResult, value, ctx)
            else:
                progress = self._serde.deserialize(OcrProgress, value, ctx)
        except CodecError:
            return  # a foreign record on the topic is not ours to answer
        if topic == self._result_topic:
            for reply in self._pending.pop(result.document_id, []):
                reply._end(result)
        else:
            for reply in self._pending.get(progress.document_id, []):
                reply._progress(progress)

    def _forget(self, reply: Reply) -> None:
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
        for replies in list(self._pending.values()):
            for reply in list(replies):
                reply._end(_for_document(failure, reply.document_id))


def _for_document(failure: ReplyError, document_id: str) -> ReplyError:
    """The failure, re-raised for one document (one exception object per reply)."""
    error = type(failure)(f"no result for document {document_id!r}: {failure}")
    error.__cause__ = failure.__cause__
    return error
