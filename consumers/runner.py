"""Wire a worker from the settings: the only place that knows every collaborator."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from consumers.budget import PageBudget
from consumers.documents import DocumentRecognizer, RecognizerOptions
from consumers.engines import OcrEngine, build_engine
from consumers.errors import ConfigurationError
from consumers.metrics import WorkerMetrics
from consumers.outcomes import OutcomeBuilder
from consumers.recognition import PageOptions, PageRecognizer, stream_hook
from consumers.retry import RetryPolicy
from consumers.settings import Settings
from consumers.sidecar import SidecarServer, build_sidecar
from consumers.state import WorkerState
from consumers.worker import OcrWorker
from producers.kafka import (
    build_producer,
    build_worker_consumer,
    max_record_bytes,
)
from producers.progress import ProgressSender
from producers.results import ResultPublisher
from schemas import AvroSerde

log = logging.getLogger(__name__)


async def start_producer(settings: Settings) -> AIOKafkaProducer:
    producer = build_producer(
        settings.kafka.client_kwargs(), settings.producer_options()
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        hint = (
            " (this broker may not support idempotent producers:"
            " set KAFKA_ENABLE_IDEMPOTENCE=false for the embedded broker)"
            if settings.kafka.enable_idempotence
            else ""
        )
        raise ConfigurationError(
            f"cannot start the Kafka producer: {exc!r}{hint}"
        ) from exc
    return producer


def build_consumer(settings: Settings) -> AIOKafkaConsumer:
    kafka = settings.kafka
    return build_worker_consumer(
        kafka.client_kwargs(),
        group_id=kafka.consumer_group,
        max_document_bytes=settings.limits.max_document_bytes,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
    )


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    burst: bool = False,
    engine: OcrEngine | None = None,
    registry: CollectorRegistry | None = None,
) -> None:
    """Start engine, clients and sidecar; consume until ``stop``; shut everything down."""
    registry = registry or CollectorRegistry()
    engine = engine or build_engine(settings, registry)
    metrics = WorkerMetrics(registry, engine.name)
    state = WorkerState(engine=engine, stall_timeout_s=settings.batch.stall_timeout_s)
    sidecar = SidecarServer(
        build_sidecar(state, metrics, registry, _secret(settings)),
        settings.sidecar.host,
        settings.sidecar.port,
    )
    await sidecar.start()
    log.info("sidecar on %s:%d", settings.sidecar.host, sidecar.port)
    try:
        await engine.start()
        producer = await start_producer(settings)
        try:
            await _consume(settings, stop, burst, engine, metrics, state, producer)
        finally:
            await producer.stop()
    finally:
        await engine.close()
        await sidecar.stop()


async def _consume(
    settings: Settings,
    stop: asyncio.Event,
    burst: bool,
    engine: OcrEngine,
    metrics: WorkerMetrics,
    state: WorkerState,
    producer: AIOKafkaProducer,
) -> None:
    kafka, batch = settings.kafka, settings.batch
    publisher = ResultPublisher(
        producer,
        result_topic=kafka.result_topic,
        dlq_topic=kafka.dlq_topic,
        progress_topic=kafka.progress_topic,
        serde=AvroSerde(),
    )
    budget = PageBudget(batch.max_inflight_pages or engine.capacity())
    retry = RetryPolicy(attempts=batch.retry_attempts, max_s=batch.retry_backoff_max_s)
    limits = settings.limits
    progress = ProgressSender(
        publisher,
        publish_pages=batch.publish_progress,
        policy=batch.stream_policy(),
    )
    metrics.watch_progress(progress)
    pages = PageRecognizer(
        engine,
        metrics,
        PageOptions(
            default_prompt=settings.prompt,
            default_max_tokens=settings.vllm.default_max_tokens,
            retry=retry,
        ),
        state=state,
        on_page=progress,
        on_event=stream_hook(progress),
    )
    recognizer = DocumentRecognizer(
        pages,
        RecognizerOptions(
            limits=settings.image_limits(),
            uri_roots=limits.uri_roots(),
            request_limits=limits.request_limits(),
            uri_read_timeout_s=limits.uri_read_timeout_s,
            decode_timeout_s=limits.decode_timeout_s,
            text_layer=limits.pdf_text_layer,
        ),
        OutcomeBuilder(
            engine=engine.name,
            model=engine.model,
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
            max_record_bytes=max_record_bytes(limits.max_document_bytes),
            max_id_chars=limits.max_id_chars,
            encoder=publisher.encoder,
        ),
    )
    consumer = build_consumer(settings)
    worker = OcrWorker(
        consumer,
        publisher,
        recognizer,
        budget,
        metrics,
        state,
        options=batch.loop_options(),
        publish_retry=retry,
    )
    consumer.subscribe([kafka.input_topic], listener=worker.rebalance_listener())
    await consumer.start()
    try:
        await worker.run(stop, burst=burst)
    finally:
        await progress.aclose()
        await consumer.stop()


def _secret(settings: Settings) -> str | None:
    key = settings.sidecar.api_key
    return key.get_secret_value() if key is not None else None
