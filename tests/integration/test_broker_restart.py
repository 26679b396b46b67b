"""A broker that comes back without its log (the embedded broker keeps everything in
memory) must not make the worker skip what is published after it."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.engines.fake import FakeEngine
from consumers.local.broker import ensure_topics
from consumers.runner import run_worker
from consumers.settings import Settings
from producers.publisher import RequestOptions, build_request
from tests.support.cer import SAMPLES_DIR
from tests.support.kafka import publish_raw, read_outputs
from tests.support.records import encode_record

pytestmark = pytest.mark.integration


async def publish(settings: Settings, prefix: str, count: int) -> list[str]:
    # All on partition 0, the one whose committed offset is past its end (the topic may
    # keep more partitions from an earlier test: the key's partition would be luck).
    scan = SAMPLES_DIR / "pub-0007.tif"
    topic = settings.kafka.input_topic
    requests = [
        build_request(scan, RequestOptions(id_prefix=f"{prefix}{n}-"))
        for n in range(count)
    ]
    await publish_raw(
        settings,
        ((r.document_id.encode(), encode_record(r, topic)) for r in requests),
        partition=0,
    )
    return [r.document_id for r in requests]


async def test_a_committed_offset_past_the_end_is_reset_not_skipped(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Data: the bundled pub-0007 under new ids. The group's committed offset is
    100 on a partition holding 3 records: what a worker finds after the embedded broker
    restarted empty under it. Apache Kafka answers such a fetch with
    OFFSET_OUT_OF_RANGE and the client resets; a broker that answers with nothing must
    not make the worker skip the 3 records without a trace."""
    kafka = settings.kafka.model_copy(update={"partitions": 1})
    settings = settings.model_copy(update={"kafka": kafka})
    await ensure_topics(kafka.client_kwargs(), [kafka.input_topic], 1)
    ids = await publish(settings, "lost", 3)
    tp = TopicPartition(kafka.input_topic, 0)
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), group_id=kafka.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: 100})
    finally:
        await consumer.stop()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop, engine=FakeEngine()))
    try:
        outputs = await read_outputs(settings, results=len(ids), timeout_s=60)
        assert {r.document_id for r in outputs.results} == set(ids)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)
    assert any("beyond the partition's end" in r.getMessage() for r in caplog.records)
