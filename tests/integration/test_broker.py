"""The embedded broker survives a flood of malformed frames, and says why it did not start."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.errors import ConfigurationError
from consumers.local.broker import EmbeddedBroker, ensure_topics

pytestmark = pytest.mark.integration

# A negative frame size: tansu panics on it and writes ~240 bytes to stderr, so a
# thousand of them are ~4 times the 64 KiB a pipe holds when nobody reads it.
MALFORMED_FRAME = b"\xff\xff\xff\xffabcd"


async def send_garbage(host: str, port: int, connections: int) -> None:
    slots = asyncio.Semaphore(50)

    async def one() -> None:
        async with slots:
            reader, writer = await asyncio.open_connection(host, port)
            # tansu drops the connection after its panic, at times with a reset
            with contextlib.suppress(ConnectionResetError):
                writer.write(MALFORMED_FRAME)
                await writer.drain()
                await reader.read()
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(connections)))


async def round_trip(bootstrap_servers: str, timeout_s: float) -> bytes:
    topic = f"alive-{uuid.uuid4().hex[:8]}"
    kwargs: dict[str, object] = {"bootstrap_servers": bootstrap_servers}
    await ensure_topics(kwargs, [topic], 1)
    producer = AIOKafkaProducer(**kwargs, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"still here")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **kwargs, auto_offset_reset="earliest")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout_s)
    finally:
        await consumer.stop()
    return bytes(msg.value or b"")


async def test_a_thousand_malformed_connections_leave_the_broker_working(
    tmp_path: Path,
) -> None:
    log = tmp_path / "broker.log"
    with EmbeddedBroker(log_path=log, log_max_bytes=64 * 1024) as broker:
        await asyncio.wait_for(send_garbage(broker.host, broker.port, 1000), 60)
        assert await asyncio.wait_for(round_trip(broker.bootstrap_servers, 20), 40) == (
            b"still here"
        )
    old = tmp_path / "broker.log.1"
    assert old.stat().st_size == 64 * 1024
    assert log.stat().st_size <= 64 * 1024
    assert old.read_text(errors="replace").count("panicked at") > 200


def test_a_start_failure_reports_the_end_of_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: tansu cannot bind it
        port = taken.getsockname()[1]
        broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker.log")
        with pytest.raises(ConfigurationError, match="Address in use") as caught:
            broker.start(timeout_s=10)
    assert str(tmp_path / "broker.log") in str(caught.value)
