"""Token streaming end to end: a worker → the progress topic → ``Reply.events()``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from consumers.engines import OcrEngine
from consumers.engines.fake import FakeEngine
from consumers.engines.tesseract import TesseractEngine
from consumers.settings import Settings
from producers.replies import PageTexts
from schemas import OcrProgress, OcrRequest, OcrResult, PageStatus
from schemas.records import ProgressKind, utc_now
from tests.support.cer import SAMPLES_DIR
from tests.support.records import png_request
from tests.support.scans import multipage_tiff
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

DELTA, RESTART, PAGE = ProgressKind.DELTA, ProgressKind.RESTART, ProgressKind.PAGE


def with_batch(settings: Settings, **fields: object) -> Settings:
    batch = settings.batch.model_copy(update=fields)
    return settings.model_copy(update={"batch": batch})


def three_pages(document_id: str) -> OcrRequest:
    return OcrRequest(
        document_id=document_id,
        content_type="image/tiff",
        submitted_at=utc_now(),
        image=multipage_tiff([(64, 32 + i) for i in range(3)]),
    )


async def submitted(
    settings: Settings, engine: OcrEngine, request: OcrRequest, *, stream: bool
) -> tuple[list[OcrProgress], OcrResult]:
    """Every progress event of ``request``, in the order read, then its result."""
    events: list[OcrProgress] = []
    async with (
        running_worker(settings, engine),
        settings.client(progress=True) as client,
    ):
        reply = await client.submit(request, stream=stream)
        async with asyncio.timeout(120):
            async for event in reply.events():
                events.append(event)
        result = await reply.result(0)
    return events, result


def final_attempt_deltas(events: Sequence[OcrProgress], number: int) -> str:
    """A page's DELTA text after its last RESTART: what a reader shows at the end."""
    text = ""
    for event in events:
        if event.page_number != number:
            continue
        if event.kind is RESTART:
            text = ""
        elif event.kind is DELTA:
            text += event.text
    return text


def assert_each_page_streams_its_text(
    events: Sequence[OcrProgress], result: OcrResult
) -> None:
    assert result.status.value == "OK"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert {e.document_id for e in events} == {result.document_id}
    for page in result.pages:
        mine = [e for e in events if e.page_number == page.page_number]
        assert mine[-1].kind is PAGE  # the page's end comes after all its text
        assert (mine[-1].status, mine[-1].text) == (page.status, page.text)
        assert [e.kind for e in mine[:-1]] and PAGE not in [e.kind for e in mine[:-1]]
        assert final_attempt_deltas(events, page.page_number) == page.text
    texts = PageTexts()
    for event in events:
        texts.apply(event)
    assert texts.text() == result.text
    assert texts.incomplete == set()


async def test_a_streaming_request_gets_its_text_as_deltas_then_its_result(
    settings: Settings,
) -> None:
    settings = with_batch(settings, stream_flush_deltas=2)
    assert not settings.batch.publish_progress  # it asked: that is enough
    engine = FakeEngine(delay_s=0.05, restarts={("streamed", 2)})
    events, result = await submitted(
        settings, engine, three_pages("streamed"), stream=True
    )
    assert result.page_count == 3
    assert_each_page_streams_its_text(events, result)
    page_one = [e for e in events if e.page_number == 1]
    assert [e.kind for e in page_one] == [DELTA, DELTA, PAGE]  # 3 words, 2 a DELTA
    assert [e.text for e in page_one[:2]] == ["streamed p1", " 64x32"]
    [restart] = [e for e in events if e.kind is RESTART]
    assert (restart.page_number, restart.attempt, restart.reason) == (
        2,
        2,
        "REPETITIVE",
    )
    page_two = [e for e in events if e.page_number == 2]
    # The looping attempt's one delta was still buffered: dropped, never sent.
    assert [e.kind for e in page_two] == [RESTART, DELTA, DELTA, PAGE]
    assert {e.attempt for e in page_two if e.kind is DELTA} == {2}
    assert result.pages[1].attempts == 2


async def test_a_single_page_streams_and_ends_with_its_page_event(
    settings: Settings,
) -> None:
    events, result = await submitted(
        settings, FakeEngine(), png_request("single"), stream=True
    )
    assert [e.kind for e in events] == [DELTA, PAGE]
    assert events[0].text == result.text == "single p1 64x32"
    assert (events[1].page_count, events[1].status) == (1, PageStatus.OK)


@pytest.mark.parametrize("publish_progress", [True, False])
async def test_a_request_that_does_not_stream_gets_no_deltas(
    settings: Settings, publish_progress: bool
) -> None:
    settings = with_batch(
        settings, publish_progress=publish_progress, stream_flush_deltas=1
    )
    events, result = await submitted(
        settings, FakeEngine(), three_pages("quiet"), stream=False
    )
    assert result.status.value == "OK"
    expected = [PAGE] * 3 if publish_progress else []
    assert [e.kind for e in events] == expected


@pytest.mark.tesseract
async def test_tesseract_streams_page_by_page(settings: Settings) -> None:
    scan = SAMPLES_DIR / "pub-0007.tif"  # two pages
    request = OcrRequest(
        document_id="pub-0007",
        content_type="image/tiff",
        submitted_at=utc_now(),
        image=scan.read_bytes(),
    )
    engine = TesseractEngine(settings.tesseract)
    events, result = await submitted(settings, engine, request, stream=True)
    assert result.page_count == 2
    assert_each_page_streams_its_text(events, result)
    for page in result.pages:  # a page's whole text, once it is read
        kinds = [e.kind for e in events if e.page_number == page.page_number]
        assert kinds == [DELTA, PAGE]
