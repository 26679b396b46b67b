"""The worker's contract against a real broker, with a scriptable engine in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.engines.fake import FakeEngine
from consumers.runner import run_worker
from consumers.settings import Settings
from schemas import OcrRequest
from schemas.records import utc_now
from tests.support.kafka import publish_raw, publish_requests, read_outputs
from tests.support.records import encode_record, png_request
from tests.support.scans import multipage_tiff
from tests.support.workers import run_burst, running_worker

pytestmark = pytest.mark.integration


async def committed(settings: Settings, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_kwargs(),
        group_id=settings.kafka.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(tp)
        return offset
    finally:
        await consumer.stop()


async def test_commit_never_passes_an_unfinished_record(settings: Settings) -> None:
    """A slow first record holds its partition's commit back while later ones finish."""
    tp = TopicPartition(settings.kafka.input_topic, 0)
    requests = [png_request("slow"), *(png_request(f"fast-{i}") for i in range(3))]
    producer_records = [(r.document_id.encode(), encode_record(r)) for r in requests]
    await publish_raw(settings, producer_records, partition=0)
    engine = FakeEngine(gates={"slow": asyncio.Event()})
    async with running_worker(settings, engine):
        outputs = await read_outputs(settings, results=3)
        assert {r.document_id for r in outputs.results} == {
            "fast-0",
            "fast-1",
            "fast-2",
        }
        await asyncio.sleep(0.5)  # a few loop turns: commits would have happened by now
        assert await committed(settings, tp) in (None, 0)
        engine.gates["slow"].set()
        outputs = await read_outputs(settings, results=4)
        assert len(outputs.results) == 4
        for _ in range(50):
            if await committed(settings, tp) == 4:
                break
            await asyncio.sleep(0.1)
    assert await committed(settings, tp) == 4


async def test_inflight_pages_stay_within_the_budget(settings: Settings) -> None:
    """With room for two pages, the engine never sees more than two at once."""
    await publish_requests(settings, [png_request(f"doc-{i}") for i in range(12)])
    engine = FakeEngine(delay_s=0.05, capacity_pages=2)
    await run_burst(settings, engine)
    outputs = await read_outputs(settings, results=12)
    assert len({r.document_id for r in outputs.results}) == 12
    assert engine.max_concurrent <= 2


async def test_transient_failures_are_retried_then_succeed(settings: Settings) -> None:
    await publish_requests(settings, [png_request("flaky"), png_request("steady")])
    engine = FakeEngine()
    engine.transient_failures["flaky"] = 2
    await run_burst(settings, engine)
    outputs = await read_outputs(settings, results=2)
    assert {r.status.value for r in outputs.results} == {"OK"}
    assert engine.calls.count(("flaky", 1)) == 3


async def test_dead_engine_stops_the_worker_and_commits_nothing(
    settings: Settings,
) -> None:
    """Fatal means fatal: no dead letter, no result, no commit — replay covers it."""
    from consumers.worker import WorkerFailedError

    await publish_raw(
        settings, [(b"doomed", encode_record(png_request("doomed")))], partition=0
    )
    engine = FakeEngine(dead_on={"doomed"})
    with pytest.raises(WorkerFailedError):
        await asyncio.wait_for(run_worker(settings, asyncio.Event(), engine=engine), 60)
    outputs = await read_outputs(settings, results=0)
    assert outputs.results == [] and outputs.dead_letters == []
    tp = TopicPartition(settings.kafka.input_topic, 0)
    assert await committed(settings, tp) in (None, 0)


async def test_bad_page_fails_alone_and_is_dead_lettered(settings: Settings) -> None:
    request = OcrRequest(
        document_id="three-pages",
        content_type="image/tiff",
        submitted_at=utc_now(),
        image=multipage_tiff([(64, 32 + i) for i in range(3)]),
    )
    await publish_requests(settings, [request, png_request("neighbour")])
    engine = FakeEngine(bad_pages={("three-pages", 2)})
    await run_burst(settings, engine)
    outputs = await read_outputs(settings, results=2, dead_letters=1)
    result = outputs.by_id()["three-pages"]
    assert result.status.value == "FAILED" and result.error_code == "PAGE_FAILED"
    assert [p.status.value for p in result.pages] == ["OK", "FAILED", "OK"]
    assert result.pages[2].text == "three-pages p3 64x34"
    assert outputs.by_id()["neighbour"].status.value == "OK"
    [letter] = outputs.dead_letters
    assert letter.value == encode_record(request)
    assert letter.document_id == "three-pages"


async def test_python_client_awaits_each_result(
    settings: Settings, tmp_path: Path
) -> None:
    """``OcrClient.recognize`` is the event-driven form of a synchronous OCR call."""
    scans = []
    for name in ("alpha", "beta", "gamma"):
        scan = tmp_path / f"{name}.png"
        scan.write_bytes(png_request(name).image or b"")
        scans.append(scan)
    engine = FakeEngine(slow={"alpha": 0.5})  # the first one answers last
    async with running_worker(settings, engine), settings.client() as client:
        results = await asyncio.gather(
            *(client.recognize(scan, timeout_s=60) for scan in scans)
        )
    assert [r.document_id for r in results] == ["alpha", "beta", "gamma"]
    assert all(r.status.value == "OK" for r in results)
    assert results[1].text == "beta p1 64x32"
