"""``OcrClient.submit`` against a real broker: the one publish-and-wait path."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from aiokafka.errors import ConsumerStoppedError

from consumers.engines.fake import FakeEngine
from consumers.settings import Settings
from producers.cli import PublishOptions, publish_command
from producers.client import OcrClient
from producers.kafka import build_producer, build_waiter_consumer
from producers.replies import (
    READER_TASK_NAME,
    ReplyClosedError,
    ReplyReader,
    ReplyReaderError,
    ReplyTimeoutError,
)
from producers.results import ResultPublisher
from schemas import (
    DocumentStatus,
    OcrPage,
    OcrProgress,
    OcrRequest,
    OcrResult,
    PageStatus,
)
from schemas.records import utc_now
from tests.support.records import png_request
from tests.support.scans import multipage_tiff
from tests.support.workers import run_burst, running_worker

pytestmark = pytest.mark.integration


def client_for(settings: Settings, *, progress: bool = False) -> OcrClient:
    return settings.client(progress=progress)


def reader_task() -> asyncio.Task[object]:
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == READER_TASK_NAME]
    return task


async def test_concurrent_submits_each_get_their_own_result(settings: Settings) -> None:
    engine = FakeEngine(slow={"alpha": 0.5})  # the first one answers last
    async with running_worker(settings, engine), client_for(settings) as client:
        await client.publish(png_request("nobody-waits"))  # its result is skipped
        replies = await asyncio.gather(
            *(client.submit(png_request(name)) for name in ("alpha", "beta", "gamma"))
        )
        results = await asyncio.gather(*(reply.result(60) for reply in replies))
    assert [r.document_id for r in results] == ["alpha", "beta", "gamma"]
    assert all(r.status.value == "OK" for r in results)
    assert results[1].text == "beta p1 64x32"


async def test_events_stream_each_page_then_end_with_the_result(
    settings: Settings,
) -> None:
    batch = settings.batch.model_copy(update={"publish_progress": True})
    settings = settings.model_copy(update={"batch": batch})
    request = OcrRequest(
        document_id="three-pages",
        content_type="image/tiff",
        submitted_at=utc_now(),
        image=multipage_tiff([(64, 32 + i) for i in range(3)]),
    )
    engine = FakeEngine(delay_s=0.1)
    events: list[OcrProgress] = []
    async with (
        running_worker(settings, engine),
        client_for(settings, progress=True) as client,
    ):
        reply = await client.submit(request)
        async with asyncio.timeout(60):
            async for event in reply.events():
                events.append(event)
        assert reply.done()
        result = await reply.result(0)
    assert result.status.value == "OK" and result.page_count == 3
    assert sorted(e.page_number for e in events) == [1, 2, 3]
    assert {(e.document_id, e.page_count) for e in events} == {("three-pages", 3)}
    assert {e.text for e in events} == {p.text for p in result.pages}


async def test_events_need_a_client_that_reads_progress(settings: Settings) -> None:
    async with client_for(settings) as client:
        reply = await client.submit(png_request("alpha"))
        with pytest.raises(ValueError, match="progress=True"):
            await anext(reply.events())


async def test_a_timeout_names_the_document_and_leaves_the_reply_pending(
    settings: Settings,
) -> None:
    async with client_for(settings) as client:
        reply = await client.submit(png_request("late"))
        with pytest.raises(ReplyTimeoutError, match="'late'") as timed_out:
            await reply.result(0.2)
        assert isinstance(timed_out.value, TimeoutError)
        assert not reply.done()
        await run_burst(settings, FakeEngine())  # the worker comes up after all
        result = await reply.result(30)
    assert result.document_id == "late" and result.status.value == "OK"


async def test_killing_the_reader_fails_every_pending_reply_at_once(
    settings: Settings,
) -> None:
    async with client_for(settings) as client:
        replies = [await client.submit(png_request(f"doc-{i}")) for i in range(3)]
        started = time.monotonic()
        reader_task().cancel()
        outcomes = await asyncio.gather(
            *(reply.result(30) for reply in replies), return_exceptions=True
        )
        assert time.monotonic() - started < 1
        assert all(isinstance(o, ReplyReaderError) for o in outcomes), outcomes
        assert "'doc-1'" in str(outcomes[1]) and "reader" in str(outcomes[1])
        with pytest.raises(ReplyReaderError):  # later submits fail fast
            await client.submit(png_request("after"))


async def test_a_reader_whose_consumer_stops_fails_its_replies_with_the_cause(
    settings: Settings,
) -> None:
    kafka = settings.kafka
    consumer = build_waiter_consumer(kafka.client_kwargs(), 1024 * 1024)
    reader = ReplyReader(consumer, kafka.result_topic)
    await reader.start()
    try:
        replies = [reader.expect(f"doc-{i}") for i in range(3)]
        await consumer.stop()  # underneath the reader, as a broken client would
        for reply in replies:
            with pytest.raises(ReplyReaderError) as failed:
                await reply.result(10)
            assert isinstance(failed.value.__cause__, ConsumerStoppedError)
        assert reader.pending() == 0
    finally:
        await reader.stop()


async def test_a_result_read_before_its_progress_ends_the_reply_after_it(
    settings: Settings,
) -> None:
    """The two topics are read independently: a result can be read before the events
    the worker delivered first (here the progress partitions are paused, as a slow
    leader of theirs would be). Its reply ends only once those events are read."""
    kafka = settings.kafka
    consumer = build_waiter_consumer(kafka.client_kwargs(), 1024 * 1024)
    reader = ReplyReader(consumer, kafka.result_topic, kafka.progress_topic)
    producer = build_producer(kafka.client_kwargs(), settings.producer_options())
    publisher = ResultPublisher(
        producer,
        result_topic=kafka.result_topic,
        dlq_topic=kafka.dlq_topic,
        progress_topic=kafka.progress_topic,
    )
    page = OcrPage(1, PageStatus.OK, text="혈압 120/80")
    await reader.start()
    await producer.start()
    try:
        reply = reader.expect("late-events")
        paused = [
            tp for tp in consumer.assignment() if tp.topic == kafka.progress_topic
        ]
        consumer.pause(*paused)
        event = OcrProgress(
            "late-events", 1, 1, PageStatus.OK, utc_now(), page.text, sequence=1
        )
        await (await publisher.send_progress(event))  # acknowledged, then the result
        await (
            await publisher.send_result(
                OcrResult(
                    "late-events",
                    DocumentStatus.OK,
                    utc_now(),
                    page.text,
                    [page],
                    page_count=1,
                )
            )
        )
        async with asyncio.timeout(30):
            while reader.counts.read == 0:  # noqa: ASYNC110 - the result, read alone
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert not reply.done()
        consumer.resume(*paused)
        result = await reply.result(30)
        events = [e.text async for e in reply.events()]
    finally:
        await producer.stop()
        await reader.stop()
    assert result.text == "혈압 120/80"
    assert events == ["혈압 120/80"]


async def test_an_id_submitted_twice_gets_the_first_result_on_both_replies(
    settings: Settings,
) -> None:
    async with client_for(settings) as client:
        first = await client.submit(png_request("twice"))
        second = await client.submit(png_request("twice"))
        await run_burst(settings, FakeEngine())
        one, other = await asyncio.gather(first.result(30), second.result(30))
    assert one is other and one.document_id == "twice"


async def test_cancelled_and_closed_replies_raise_closed(settings: Settings) -> None:
    async with client_for(settings) as client:
        cancelled = await client.submit(png_request("cancelled"))
        left = await client.submit(png_request("left"))
        cancelled.cancel()
        with pytest.raises(ReplyClosedError, match="'cancelled'"):
            await cancelled.result(1)
    with pytest.raises(ReplyClosedError, match=r"'left'.*closed"):
        await left.result(1)


async def test_publish_alone_starts_no_reader(settings: Settings) -> None:
    async with client_for(settings) as client:
        await (await client.publish(png_request("fire-and-forget")))
        assert not [t for t in asyncio.all_tasks() if t.get_name() == READER_TASK_NAME]


def scan_files(folder: Path, *names: str) -> list[Path]:
    scans = []
    for name in names:
        scan = folder / f"{name}.png"
        scan.write_bytes(png_request(name).image or b"")
        scans.append(scan)
    return scans


async def test_publish_wait_prints_each_result_and_exits_0(
    settings: Settings, tmp_path: Path
) -> None:
    scans = scan_files(tmp_path, "alpha", "beta")
    out = io.StringIO()
    options = PublishOptions(wait=True, timeout_s=60)
    async with running_worker(settings, FakeEngine()), client_for(settings) as client:
        status = await publish_command(scans, client, options, out=out)
    assert status == 0
    assert "== alpha: OK (1 pages" in out.getvalue()
    assert "== beta: OK (1 pages" in out.getvalue()


async def test_publish_wait_exits_2_when_results_are_missing(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scans = scan_files(tmp_path, "alpha")
    options = PublishOptions(wait=True, timeout_s=0.5)
    async with client_for(settings) as client:
        status = await publish_command(scans, client, options, out=io.StringIO())
    assert status == 2
    assert "timed out waiting for 1 results: ['alpha']" in capsys.readouterr().err


async def test_publish_wait_stops_at_once_when_the_reader_dies(
    settings: Settings, tmp_path: Path
) -> None:
    scans = scan_files(tmp_path, "alpha", "beta")
    options = PublishOptions(wait=True, timeout_s=600)
    async with client_for(settings) as client:
        waiting = asyncio.create_task(
            publish_command(scans, client, options, out=io.StringIO())
        )
        # The reader starts with the first submit; nothing signals it but its task.
        while not [t for t in asyncio.all_tasks() if t.get_name() == READER_TASK_NAME]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # both published, both waiting
        reader_task().cancel()
        with pytest.raises(ReplyReaderError):
            await asyncio.wait_for(waiting, 5)


async def test_publish_wait_progress_streams_each_page_before_its_result(
    settings: Settings, tmp_path: Path
) -> None:
    scan = tmp_path / "three-pages.tif"
    scan.write_bytes(multipage_tiff([(64, 32 + i) for i in range(3)]))
    out = io.StringIO()
    options = PublishOptions(wait=True, timeout_s=60, show_progress=True)
    async with (
        running_worker(settings, FakeEngine(delay_s=0.1)),  # no OCR_PUBLISH_PROGRESS
        client_for(settings, progress=True) as client,
    ):
        status = await publish_command([scan], client, options, out=out)
    lines = out.getvalue().splitlines()
    assert status == 0
    for n in (1, 2, 3):  # pages interleave; each page's text comes before its end
        text = lines.index(f"… three-pages p{n} | three-pages p{n} 64x{31 + n}")
        assert lines.index(f"… three-pages page {n}/3 OK") > text
    assert lines[6].startswith("== three-pages: OK (3 pages")


async def test_publish_wait_progress_prefixes_documents_and_shows_restarts(
    settings: Settings, tmp_path: Path
) -> None:
    scans = scan_files(tmp_path, "alpha", "beta")
    out = io.StringIO()
    options = PublishOptions(wait=True, timeout_s=60, show_progress=True)
    engine = FakeEngine(restarts={("alpha", 1)})
    async with (
        running_worker(settings, engine),
        client_for(settings, progress=True) as client,
    ):
        status = await publish_command(scans, client, options, out=out)
    lines = out.getvalue().splitlines()
    assert status == 0
    alpha = [line for line in lines if line.startswith("… alpha")]
    assert alpha == [
        "… alpha p1 [retry: page 1 restarts: REPETITIVE]",
        "… alpha p1 | alpha p1 64x32",
        "… alpha page 1/1 OK",
    ]
    assert [line for line in lines if line.startswith("… beta")] == [
        "… beta p1 | beta p1 64x32",
        "… beta page 1/1 OK",
    ]
    result = next(i for i, line in enumerate(lines) if line.startswith("== alpha: OK"))
    assert lines.index("… alpha page 1/1 OK") < result


async def test_a_streaming_submit_needs_a_client_that_reads_progress(
    settings: Settings,
) -> None:
    async with client_for(settings) as client:
        with pytest.raises(ValueError, match="progress=True"):
            await client.submit(png_request("alpha"), stream=True)


async def test_publish_without_wait_is_fire_and_forget(
    settings: Settings, tmp_path: Path
) -> None:
    scans = scan_files(tmp_path, "alpha", "beta")
    async with client_for(settings) as client:
        status = await publish_command(scans, client, PublishOptions())
        assert not [t for t in asyncio.all_tasks() if t.get_name() == READER_TASK_NAME]
    assert status == 0
