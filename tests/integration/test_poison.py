"""No record can stop the group: the whole poison corpus through one worker process."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.settings import Settings
from schemas import OcrDeadLetter, OcrResult
from tests.support.poison import PRODUCER_MAX_BYTES, GoodScan, Poison, corpus, good_png
from tests.support.records import decode_record, encode_record
from tests.support.records import scan_request as make_request
from tests.support.workers import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.tesseract]

MiB = 1024 * 1024
PARTITION = 0
# Apache Kafka's default message.max.bytes: a result carries no scan, so it must fit.
RESULT_MAX_BYTES = 1 * MiB
# Short time limits, so the FIFO, the device and the slow decode fail in seconds; the
# size and pixel limits stay at their defaults (they are what is tested).
WORKER_ENV = {"OCR_URI_READ_TIMEOUT_S": "2", "OCR_DECODE_TIMEOUT_S": "3"}


@dataclass
class Published:
    """Offsets on the one partition: each poison's, and the good document behind it."""

    poisons: dict[int, Poison] = field(default_factory=dict)
    goods: dict[int, str] = field(default_factory=dict)


@dataclass
class Seen:
    results: dict[int, list[tuple[int, OcrResult]]] = field(default_factory=dict)
    letters: dict[int, list[tuple[int, OcrDeadLetter]]] = field(default_factory=dict)


async def publish_corpus(
    settings: Settings, poisons: list[Poison], good: GoodScan
) -> Published:
    """Every poison, each followed by a good document, in order on one partition."""
    kafka = settings.kafka
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        acks="all",
        enable_idempotence=kafka.enable_idempotence,
        max_request_size=32 * MiB,  # the near-cap records are ~22 MiB with their keys
        request_timeout_ms=60_000,
    )
    await producer.start()
    published = Published()
    try:
        for poison in poisons:
            good_id = f"good-after-{poison.name}"
            good_req = make_request(good_id, good.raw, "image/png")
            # One record a produce request: the embedded broker's end offset is wrong
            # after a batch of several records (see tests/bench/soak_poison.py).
            poison_meta = await (
                await producer.send(
                    kafka.input_topic, poison.value, poison.key, partition=PARTITION
                )
            )
            good_meta = await (
                await producer.send(
                    kafka.input_topic,
                    encode_record(good_req, kafka.input_topic),
                    good_id.encode(),
                    partition=PARTITION,
                )
            )
            published.poisons[poison_meta.offset] = poison
            published.goods[good_meta.offset] = good_id
    finally:
        await producer.stop()
    return published


async def collect_outputs(
    settings: Settings, published: Published, worker: WorkerProcess, timeout_s: float
) -> Seen:
    """Results and dead letters of the partition, until every record has its own, the
    worker exits or time is up."""
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        enable_auto_commit=False,
        max_partition_fetch_bytes=64 * MiB,
        fetch_max_bytes=64 * MiB,
    )
    await consumer.start()
    seen = Seen()
    expected = len(published.poisons) + len(published.goods)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in (kafka.result_topic, kafka.dlq_topic)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and worker.process.poll() is None:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                for msg in msgs:
                    collect(seen, tp.topic == kafka.result_topic, msg.key, msg.value)
            if len(seen.results) >= expected and len(seen.letters) >= len(
                published.poisons
            ):
                await asyncio.sleep(1)  # a duplicate would show up now
                for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                    for msg in msgs:
                        collect(
                            seen, tp.topic == kafka.result_topic, msg.key, msg.value
                        )
                break
    finally:
        await consumer.stop()
    return seen


def collect(
    seen: Seen, is_result: bool, key: bytes | None, value: bytes | None
) -> None:
    assert value is not None
    size = len(key or b"") + len(value)
    if is_result:
        result = decode_record(OcrResult, value)
        assert result.source_partition == PARTITION
        seen.results.setdefault(result.source_offset, []).append((size, result))
    else:
        letter = decode_record(OcrDeadLetter, value, "ocr.requests.dlq")
        assert letter.source_partition == PARTITION
        seen.letters.setdefault(letter.source_offset, []).append((size, letter))


def poison_problems(offset: int, poison: Poison, seen: Seen) -> list[str]:
    results = seen.results.get(offset, [])
    letters = seen.letters.get(offset, [])
    if len(results) != 1:
        return [f"{poison.name}: {len(results)} results"]
    size, result = results[0]
    problems = []
    if result.status.value != "FAILED" or result.error_code != poison.code:
        problems.append(
            f"{poison.name}: {result.status.value} {result.error_code}"
            f" (expected FAILED {poison.code}): {result.error_message}"
        )
    elif poison.limit is not None:
        name, value = poison.limit
        message = result.error_message or ""
        if name not in message and str(value) not in message:
            problems.append(f"{poison.name}: message names no limit: {message!r}")
    if size > RESULT_MAX_BYTES:
        problems.append(f"{poison.name}: result is {size} bytes")
    if len(letters) != 1:
        problems.append(f"{poison.name}: {len(letters)} dead letters")
    elif letters[0][0] > PRODUCER_MAX_BYTES:
        problems.append(f"{poison.name}: dead letter is {letters[0][0]} bytes")
    elif letters[0][1].error_code != result.error_code:
        problems.append(f"{poison.name}: dead letter says {letters[0][1].error_code}")
    return problems


def good_problems(offset: int, doc_id: str, good: GoodScan, seen: Seen) -> list[str]:
    results = seen.results.get(offset, [])
    if len(results) != 1:
        return [f"{doc_id}: {len(results)} results"]
    _, result = results[0]
    if result.status.value != "OK" or result.document_id != doc_id:
        return [f"{doc_id}: {result.status.value} {result.error_message}"]
    if good.words.split()[-1] not in result.text:
        return [f"{doc_id}: text {result.text!r}"]
    if offset in seen.letters:
        return [f"{doc_id}: dead-lettered"]
    return []


async def test_no_poison_record_stops_the_worker(
    settings: Settings, tmp_path: Path
) -> None:
    """Data: generated in memory (tests/support/poison.py), nothing downloaded. Every
    poison shape, each followed by a small generated PNG, on one partition of a real
    ``medocr worker`` (Tesseract): every poison ends FAILED with its code and one dead
    letter, every good document comes back OK, and the worker never exits."""
    uri_root = tmp_path / "scans"
    poisons = corpus(uri_root)
    good = good_png()
    worker = WorkerProcess(
        settings, "poison", OCR_FILE_URI_ROOTS=str(uri_root), **WORKER_ENV
    )
    try:
        worker.wait_ready()
        published = await publish_corpus(settings, poisons, good)
        seen = await collect_outputs(settings, published, worker, timeout_s=150)

        problems = [
            problem
            for offset, poison in published.poisons.items()
            for problem in poison_problems(offset, poison, seen)
        ] + [
            problem
            for offset, doc_id in published.goods.items()
            for problem in good_problems(offset, doc_id, good, seen)
        ]
        exit_code = worker.process.poll()
        if exit_code is not None:
            problems.insert(0, f"worker exited with {exit_code}")
        else:
            health = worker.get("/health")
            if health.status_code != 200:
                problems.insert(0, f"/health {health.status_code}: {health.text}")
        assert not problems, "\n".join([*problems, "worker log:", worker.log()])
    finally:
        worker.stop()
        for node in uri_root.iterdir():  # the FIFO and the device node: leave none
            node.unlink()
