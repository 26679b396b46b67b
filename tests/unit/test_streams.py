"""Token streaming without a broker: the coalescer, the sender's stream (count, time,
page end, restart, cap, refused sends, cancellation), and reading it back."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from producers.cli import ProgressPrinter
from producers.progress import SENDER_TASK_NAME, ProgressSender
from producers.replies import PageTexts
from producers.results import ResultPublisher
from producers.streams import Coalesced, DeltaCoalescer, StreamPolicy
from schemas import OcrPage, OcrProgress, OcrRequest, PageStatus
from schemas.records import ProgressKind, utc_now
from tests.support.records import decode_record, sender_request

DELTA, RESTART, PAGE = ProgressKind.DELTA, ProgressKind.RESTART, ProgressKind.PAGE


# --- the coalescer: pure, times given -------------------------------------------------


def coalescer(flush_s: float = 0.05, flush_deltas: int = 3) -> DeltaCoalescer[str]:
    return DeltaCoalescer(StreamPolicy(flush_s, flush_deltas))


def test_pieces_go_out_joined_once_flush_deltas_wait() -> None:
    buffers = coalescer(flush_deltas=3)
    assert buffers.add("p1", "환", 1, 0.0) == []
    assert buffers.add("p1", "자 ", 1, 0.01) == []
    assert buffers.add("p1", "성명", 1, 0.02) == [Coalesced("p1", 1, "환자 성명", 3)]
    assert len(buffers) == 0 and buffers.next_due_s() is None


def test_pieces_go_out_once_the_oldest_has_waited_flush_s() -> None:
    buffers = coalescer(flush_s=0.05)
    buffers.add("p1", "a", 1, 1.00)
    buffers.add("p2", "x", 1, 1.02)
    buffers.add("p1", "b", 1, 1.04)
    assert buffers.next_due_s() == pytest.approx(1.05)
    assert buffers.due(1.049) == []
    assert buffers.due(1.05) == [Coalesced("p1", 1, "ab", 2)]
    assert buffers.next_due_s() == pytest.approx(1.07)
    assert buffers.due(2.0) == [Coalesced("p2", 1, "x", 1)]


def test_the_clock_of_a_page_starts_again_after_it_went_out() -> None:
    buffers = coalescer(flush_s=0.05, flush_deltas=2)
    buffers.add("p1", "a", 1, 0.0)
    buffers.add("p1", "b", 1, 0.01)  # out by count
    buffers.add("p1", "c", 1, 0.04)
    assert buffers.due(0.06) == []
    assert buffers.due(0.09) == [Coalesced("p1", 1, "c", 1)]


def test_pieces_of_two_attempts_are_never_joined() -> None:
    buffers = coalescer()
    buffers.add("p1", "loop loop", 1, 0.0)
    assert buffers.add("p1", "text", 2, 0.01) == [Coalesced("p1", 1, "loop loop", 1)]
    assert buffers.take("p1") == Coalesced("p1", 2, "text", 1)


def test_take_discard_and_clear() -> None:
    buffers = coalescer()
    assert buffers.take("p1") is None
    buffers.add("p1", "a", 1, 0.0)
    buffers.add("p1", "b", 1, 0.0)
    buffers.add("p2", "c", 1, 0.0)
    assert buffers.discard("p1") == 2
    assert buffers.discard("p1") == 0
    assert buffers.clear() == 1
    assert len(buffers) == 0


@pytest.mark.parametrize(("flush_s", "flush_deltas"), [(0, 32), (0.05, 0)])
def test_a_policy_that_never_flushes_is_refused(
    flush_s: float, flush_deltas: int
) -> None:
    with pytest.raises(ValueError, match="flush"):
        StreamPolicy(flush_s, flush_deltas)


# --- the sender: one queue, one task --------------------------------------------------


class FakeProducer:
    """Takes each record (decoded), or refuses it: at once, or in its delivery; a gate
    holds every send until it opens."""

    def __init__(self) -> None:
        self.sent: list[OcrProgress] = []
        self.keys: list[bytes | None] = []
        self.refuse_send = False
        self.refuse_delivery = False
        self.gate: asyncio.Event | None = None

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None
    ) -> asyncio.Future[None]:
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse_send:
            raise KafkaTimeoutError()
        self.sent.append(decode_record(OcrProgress, value, topic))
        self.keys.append(key)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuse_delivery:
            delivery.set_exception(MessageSizeTooLargeError())
        else:
            delivery.set_result(None)
        return delivery

    def kinds(self) -> list[tuple[ProgressKind, int, str]]:
        return [(e.kind, e.page_number, e.text) for e in self.sent]


def progress_sender(
    producer: FakeProducer,
    *,
    flush_s: float = 10.0,
    flush_deltas: int = 3,
    publish_pages: bool = False,
    max_queued: int = 1024,
) -> ProgressSender:
    return ProgressSender(
        ResultPublisher(producer, result_topic="r", dlq_topic="d", progress_topic="p"),
        publish_pages=publish_pages,
        policy=StreamPolicy(flush_s, flush_deltas),
        max_queued=max_queued,
    )


def streaming(document_id: str = "doc-1") -> OcrRequest:
    return sender_request(document_id=document_id, stream=True)


def ok_page(number: int, text: str) -> OcrPage:
    return OcrPage(number, PageStatus.OK, text)


def sender_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == SENDER_TASK_NAME]


async def settle() -> None:
    """Let the sending task run what is queued."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_page_streams_by_count_then_its_rest_and_its_page_event() -> None:
    producer = FakeProducer()
    sender = progress_sender(producer, flush_deltas=3)
    request = streaming()
    for piece in ["환자", " 성명", " 홍길동", " 생년", "월일"]:
        sender.delta(request, 1, piece, 1)
    await settle()
    assert producer.kinds() == [(DELTA, 1, "환자 성명 홍길동")]  # by count, at once
    await sender(request, ok_page(1, "환자 성명 홍길동 생년월일"), 1)
    assert producer.kinds() == [
        (DELTA, 1, "환자 성명 홍길동"),
        (DELTA, 1, " 생년월일"),  # the rest, before the page's end
        (PAGE, 1, "환자 성명 홍길동 생년월일"),  # a single page too: it streams
    ]
    assert [e.sequence for e in producer.sent] == [1, 2, 3]
    assert {(e.document_id, e.attempt) for e in producer.sent} == {("doc-1", 1)}
    assert set(producer.keys) == {b"doc-1"}
    assert [e.page_count for e in producer.sent] == [0, 0, 1]
    await settle()
    assert sender_tasks() == []  # idle: the task is gone


async def test_a_page_streams_by_time() -> None:
    producer = FakeProducer()
    sender = progress_sender(producer, flush_s=0.05, flush_deltas=32)
    request = streaming()
    loop = asyncio.get_running_loop()
    started = loop.time()
    sender.delta(request, 1, "환자", 1)
    sender.delta(request, 2, "성명", 1)
    await settle()
    assert producer.sent == []
    async with asyncio.timeout(5):
        while len(producer.sent) < 2:  # noqa: ASYNC110 - the sender runs meanwhile
            await asyncio.sleep(0.005)
    assert loop.time() - started >= 0.045
    assert producer.kinds() == [(DELTA, 1, "환자"), (DELTA, 2, "성명")]
    await settle()
    assert sender_tasks() == []


async def test_a_restart_drops_the_buffered_text_and_goes_out_at_once() -> None:
    producer = FakeProducer()
    sender = progress_sender(producer, flush_deltas=2)
    request = streaming()
    sender.delta(request, 1, "____ ", 1)
    sender.delta(request, 1, "____ ", 1)  # out by count
    sender.delta(request, 1, "____", 1)  # buffered
    sender.restart(request, 1, 2, "REPETITIVE")
    sender.delta(request, 1, "환자", 2)
    await settle()
    await sender(request, ok_page(1, "환자"), 1)
    assert producer.kinds() == [
        (DELTA, 1, "____ ____ "),
        (RESTART, 1, ""),
        (DELTA, 1, "환자"),
        (PAGE, 1, "환자"),
    ]
    restart = producer.sent[1]
    assert (restart.attempt, restart.reason) == (2, "REPETITIVE")
    assert producer.sent[2].attempt == 2
    assert [e.sequence for e in producer.sent] == [1, 2, 3, 4]


async def test_pages_interleave_but_each_keeps_its_order() -> None:
    producer = FakeProducer()
    sender = progress_sender(producer, flush_deltas=1)
    request = streaming()
    for i in range(4):
        sender.delta(request, 1, f"a{i} ", 1)
        sender.delta(request, 2, f"b{i} ", 1)
    await sender(request, ok_page(2, "b0 b1 b2 b3"), 2)
    await sender(request, ok_page(1, "a0 a1 a2 a3"), 2)
    texts = PageTexts()
    for event in producer.sent:
        texts.apply(event)
    assert texts.text() == "a0 a1 a2 a3\fb0 b1 b2 b3"
    assert [e.sequence for e in producer.sent] == list(range(1, 11))


async def test_a_request_that_does_not_stream_sends_no_text() -> None:
    producer = FakeProducer()
    sender = progress_sender(producer, flush_deltas=1, publish_pages=True)
    request = sender_request(document_id="quiet")
    sender.delta(request, 1, "환자", 1)
    sender.restart(request, 1, 2, "REPETITIVE")
    await sender(request, ok_page(1, "환자"), 1)  # a single page: the result follows
    await sender(request, ok_page(1, "환자"), 2)
    assert producer.kinds() == [(PAGE, 1, "환자")]
    assert producer.sent[0].sequence == 1
    quiet = FakeProducer()
    await progress_sender(quiet, publish_pages=False)(request, ok_page(1, "x"), 2)
    assert quiet.sent == []


async def test_a_full_queue_drops_deltas_not_page_events() -> None:
    producer = FakeProducer()
    producer.gate = asyncio.Event()  # the producer takes nothing for now
    sender = progress_sender(producer, flush_deltas=1, max_queued=3)
    request = streaming()
    for i in range(10):
        sender.delta(request, 1, f"{i}", 1)
    await settle()
    assert sender.dropped == 7  # three wait (one of them is being sent)
    page = asyncio.create_task(sender(request, ok_page(1, "0123456789"), 1))
    await settle()
    assert not page.done()  # its event waits its turn
    producer.gate.set()
    await asyncio.wait_for(page, 5)
    assert producer.kinds() == [
        (DELTA, 1, "0"),
        (DELTA, 1, "1"),
        (DELTA, 1, "2"),
        (PAGE, 1, "0123456789"),
    ]
    assert [e.sequence for e in producer.sent] == [1, 2, 3, 11]  # a gap
    texts = PageTexts()
    for event in producer.sent[:3]:
        texts.apply(event)
    assert (texts.page(1), texts.incomplete) == ("012", set())
    texts.apply(producer.sent[3])
    assert texts.page(1) == "0123456789" and texts.statuses == {1: PageStatus.OK}


@pytest.mark.parametrize("where", ["send", "delivery"])
async def test_refused_sends_never_reach_the_page_and_log_no_text(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    producer = FakeProducer()
    producer.refuse_send = where == "send"
    producer.refuse_delivery = where == "delivery"
    sender = progress_sender(producer, flush_deltas=1)
    request = streaming()
    with caplog.at_level(logging.WARNING, logger="producers.progress"):
        for piece in ["환자 ", "비밀 ", "이름"]:
            sender.delta(request, 1, piece, 1)
        sender.restart(request, 1, 2, "REPETITIVE")
        await sender(request, ok_page(1, "환자 비밀 이름"), 1)  # never raises
        await settle()
    assert sender.failures >= 2
    assert "비밀" not in caplog.text and "환자" not in caplog.text
    assert "progress PAGE of page 1 not delivered" in caplog.text
    if where == "send":  # DELTAs waiting behind a refused send are dropped
        assert sender.failures + sender.dropped == 5
        assert "dropped" in caplog.text
    await sender.aclose()


async def test_closing_drops_what_waits_and_leaves_no_task() -> None:
    producer = FakeProducer()
    producer.gate = asyncio.Event()  # a send that hangs
    sender = progress_sender(producer, flush_deltas=1)
    request = streaming()
    sender.delta(request, 1, "a", 1)
    sender.delta(request, 2, "b", 1)
    page = asyncio.create_task(sender(request, ok_page(1, "a"), 2))
    await settle()
    assert len(sender_tasks()) == 1
    await sender.aclose()
    assert sender_tasks() == []
    await asyncio.wait_for(page, 1)  # its waiting page callback is let go
    assert producer.sent == []
    assert sender.dropped == 3
    sender.delta(request, 1, "late", 1)  # after closing: ignored, no task
    await sender(request, ok_page(1, "a"), 2)
    assert sender_tasks() == []


async def test_closing_drops_buffered_text_and_its_timer() -> None:
    producer = FakeProducer()
    sender = progress_sender(producer, flush_s=0.02, flush_deltas=32)
    sender.delta(streaming(), 1, "a", 1)
    await settle()
    assert len(sender_tasks()) == 1  # waiting for the buffer to come due
    await sender.aclose()
    assert sender_tasks() == []
    await asyncio.sleep(0.05)
    assert producer.sent == [] and sender.dropped == 1


async def test_a_cancelled_page_callback_leaves_the_sender_going() -> None:
    """A record cancelled while its page's event waits: the event still goes."""
    producer = FakeProducer()
    producer.gate = asyncio.Event()
    sender = progress_sender(producer)
    request = streaming()
    page = asyncio.create_task(sender(request, ok_page(1, "a"), 1))
    await settle()
    page.cancel()
    await asyncio.gather(page, return_exceptions=True)
    producer.gate.set()
    await sender(request, ok_page(2, "b"), 2)
    assert producer.kinds() == [(PAGE, 1, "a"), (PAGE, 2, "b")]
    await settle()
    assert sender_tasks() == []


async def test_a_record_stream_is_forgotten_with_its_request() -> None:
    producer = FakeProducer()
    sender = progress_sender(producer, flush_deltas=1)
    request = streaming()
    sender.delta(request, 1, "a", 1)
    await settle()
    assert sender.streams() == 1
    del request
    gc.collect()
    assert sender.streams() == 0
    again = streaming()  # the same document again: numbered from 1
    await sender(again, ok_page(1, "a"), 1)
    assert [e.sequence for e in producer.sent] == [1, 1]


# --- reading it back ------------------------------------------------------------------


def event(
    kind: ProgressKind,
    page: int,
    text: str = "",
    sequence: int = 0,
    status: PageStatus = PageStatus.OK,
    reason: str | None = None,
) -> OcrProgress:
    return OcrProgress(
        "doc-1", page, 2, status, utc_now(), text, kind, 1, sequence, reason
    )


def test_page_texts_follow_deltas_restarts_and_page_ends() -> None:
    texts = PageTexts()
    for e in [
        event(DELTA, 1, "____", 1),
        event(DELTA, 2, "둘째", 2),
        event(RESTART, 1, "", 3),
        event(DELTA, 1, "첫째", 4),
    ]:
        texts.apply(e)
    assert (texts.page(1), texts.page(2), texts.page(3)) == ("첫째", "둘째", "")
    texts.apply(event(PAGE, 2, "둘째 쪽", 5, PageStatus.TRUNCATED))
    texts.apply(event(DELTA, 2, " late", 6))  # a page that is final takes no more
    assert texts.text() == "첫째\f둘째 쪽"
    assert texts.statuses == {2: PageStatus.TRUNCATED}


def test_page_texts_mark_a_gap_and_start_over_on_a_smaller_sequence() -> None:
    texts = PageTexts()
    texts.apply(event(DELTA, 1, "a", 1))
    texts.apply(event(DELTA, 2, "c", 3))  # 2 is lost
    assert texts.incomplete == {1, 2}
    texts.apply(event(PAGE, 1, "ab", 4))
    assert texts.incomplete == {2}
    texts.apply(event(DELTA, 1, "x", 1))  # redelivered: the document starts over
    assert (texts.text(), texts.incomplete, texts.statuses) == ("x", set(), {})


def test_page_texts_take_unnumbered_events_as_they_come() -> None:
    texts = PageTexts()
    texts.apply(event(PAGE, 2, "b"))
    texts.apply(event(PAGE, 1, "a"))
    assert texts.text() == "a\fb" and texts.incomplete == set()


def test_the_printer_shows_whole_lines_with_their_document_and_page() -> None:
    printer = ProgressPrinter()
    events = [
        event(DELTA, 1, "환자 성명:"),
        event(DELTA, 2, "____ ____"),
        event(DELTA, 1, " 홍길동\n등록"),
        event(RESTART, 2, reason="REPETITIVE"),  # its unfinished line is dropped
        event(DELTA, 1, "번호\n\n끝"),
        event(PAGE, 1, "환자 성명: 홍길동\n등록번호\n\n끝"),
        event(DELTA, 2, "검사"),
        event(PAGE, 2, "검사", status=PageStatus.TRUNCATED),
    ]
    assert [line for e in events for line in printer.lines(e)] == [
        "… doc-1 p1 | 환자 성명: 홍길동",
        "… doc-1 p2 [retry: page 2 restarts: REPETITIVE]",
        "… doc-1 p1 | 등록번호",
        "… doc-1 p1 | ",
        "… doc-1 p1 | 끝",  # the rest, at the page's end
        "… doc-1 page 1/2 OK",
        "… doc-1 p2 | 검사",
        "… doc-1 page 2/2 TRUNCATED",
    ]


def test_the_printer_shows_a_page_that_did_not_stream_with_its_text() -> None:
    """An older worker sends page events only: their text is shown as before."""
    shown = ProgressPrinter().lines(event(PAGE, 1, "환자", status=PageStatus.OK))
    assert shown == ["… doc-1 page 1/2 OK: 환자"]
