"""Progress events are best effort: a refused send or delivery never reaches the page."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from producers.progress import ProgressSender
from producers.results import ResultPublisher
from schemas import OcrPage, OcrProgress, PageStatus
from tests.support.records import decode_record, png_request


class RefusingProducer:
    """Refuses at send time (``raise_now``) or in the delivery future."""

    def __init__(self, *, raise_now: bool) -> None:
        self.raise_now = raise_now
        self.sent: list[bytes] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None
    ) -> asyncio.Future[None]:
        if self.raise_now:
            raise KafkaTimeoutError()
        self.sent.append(value)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivery.set_exception(MessageSizeTooLargeError())
        return delivery


def sender(producer: RefusingProducer) -> ProgressSender:
    return ProgressSender(
        ResultPublisher(producer, result_topic="r", dlq_topic="d", progress_topic="p")
    )


@pytest.mark.parametrize("raise_now", [True, False], ids=["send", "delivery"])
async def test_a_refused_progress_event_is_counted_and_forgotten(
    raise_now: bool, caplog: pytest.LogCaptureFixture
) -> None:
    producer = RefusingProducer(raise_now=raise_now)
    send = sender(producer)
    page = OcrPage(page_number=2, status=PageStatus.OK, text="환자 이름 비밀")
    await send(png_request("doc"), page, 3)  # never raises
    await asyncio.sleep(0)  # the delivery callback runs
    assert send.failures == 1
    assert "page 2 not delivered" in caplog.text
    assert "비밀" not in caplog.text  # no text in the log
    if not raise_now:
        assert decode_record(OcrProgress, producer.sent[0], "p").page_count == 3


async def test_a_single_page_document_sends_no_progress() -> None:
    producer = RefusingProducer(raise_now=False)
    await sender(producer)(png_request("doc"), OcrPage(1, PageStatus.OK, "x"), 1)
    assert producer.sent == []


class HeldProducer:
    """Takes each send at once and acknowledges it only when told."""

    def __init__(self) -> None:
        self.deliveries: list[asyncio.Future[None]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None
    ) -> asyncio.Future[None]:
        self.deliveries.append(asyncio.get_running_loop().create_future())
        return self.deliveries[-1]


async def test_the_page_callback_returns_once_its_event_is_acknowledged() -> None:
    """A result published after the callback comes after its events in any log."""
    producer = HeldProducer()
    send = ProgressSender(
        ResultPublisher(producer, result_topic="r", dlq_topic="d", progress_topic="p")
    )
    page = OcrPage(page_number=1, status=PageStatus.OK, text="x")
    callback = asyncio.create_task(send(png_request("doc"), page, 2))
    while not producer.deliveries:  # noqa: ASYNC110 - the sender takes it
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert not callback.done()  # handed to the producer, not yet acknowledged
    producer.deliveries[0].set_result(None)
    await asyncio.wait_for(callback, 1)
    await send.aclose()
