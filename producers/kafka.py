"""The one place Kafka client options live: producers, the worker's consumer, waiters
(every partition, or a gateway replica's share through its group)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from producers.routing import CopartitionedAssignor

# The largest scan sent inline (OCR_MAX_DOCUMENT_BYTES); the envelope adds a few
# hundred bytes, ENVELOPE_BYTES leaves room for it.
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
ENVELOPE_BYTES = 1024 * 1024

# Longest a fetch waits at the broker while there is nothing new: Kafka's own default,
# and Apache Kafka answers a waiting fetch as soon as a record arrives.
FETCH_MAX_WAIT_MS = 500
# The embedded tansu broker wakes waiting fetches on its own schedule, which adds up to
# the whole wait before the first record of a burst: its callers (tests, demo, benches;
# KAFKA_FETCH_MAX_WAIT_MS=100 by hand) ask 10 times a second instead.
EMBEDDED_BROKER_FETCH_MAX_WAIT_MS = 100

# Where a partition without a committed offset starts; also where the worker restarts a
# partition whose log was lost under it: the beginning, so no request goes unanswered.
OFFSET_RESET: Literal["earliest", "latest"] = "earliest"

# Several records of the largest size fit one fetch (aiokafka's default fetch_max_bytes).
WORKER_FETCH_MAX_BYTES = 52_428_800
# A whole batch of slow pages may sit between two polls of the worker.
WORKER_MAX_POLL_INTERVAL_MS = 600_000
# Gateway replicas notice a rebalance within a heartbeat: until it ends none of them
# names a reply partition in a new request (3 s, aiokafka's default, is long for that).
REPLY_GROUP_HEARTBEAT_INTERVAL_MS = 1000


@dataclass(frozen=True)
class Topics:
    """The pipeline's default topic names: where requests go, where answers come back,
    where the records that failed go."""

    requests: str = "ocr.requests"
    results: str = "ocr.results"
    progress: str = "ocr.progress"
    dead_letters: str = "ocr.requests.dlq"


@dataclass(frozen=True)
class ProducerOptions:
    enable_idempotence: bool = True
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    linger_ms: int = 5


def build_producer(
    client_kwargs: Mapping[str, object], options: ProducerOptions
) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas: a result counts once acknowledged."""
    return AIOKafkaProducer(
        **client_kwargs,
        acks="all",
        enable_idempotence=options.enable_idempotence,
        linger_ms=options.linger_ms,
        max_request_size=max_record_bytes(options.max_document_bytes),
        request_timeout_ms=30_000,
    )


def max_record_bytes(max_document_bytes: int) -> int:
    """The largest record a producer sends: one inlined scan and its envelope."""
    return max_document_bytes + ENVELOPE_BYTES


def fetch_bytes_for(max_document_bytes: int) -> int:
    """Consumer fetch size that always fits one inlined scan."""
    return max_document_bytes + ENVELOPE_BYTES


def fetch_options(
    max_document_bytes: int, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
) -> dict[str, object]:
    """What every consumer of medocr topics fetches: any one record, waiting at the
    broker at most ``fetch_max_wait_ms`` (KAFKA_FETCH_MAX_WAIT_MS) while there is none."""
    return {
        "max_partition_fetch_bytes": fetch_bytes_for(max_document_bytes),
        "fetch_max_wait_ms": fetch_max_wait_ms,
    }


def build_worker_consumer(
    client_kwargs: Mapping[str, object],
    *,
    group_id: str,
    max_document_bytes: int,
    fetch_max_wait_ms: int,
) -> AIOKafkaConsumer:
    """The worker's consumer: in ``group_id``, committing only what it has finished."""
    return AIOKafkaConsumer(
        **client_kwargs,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=OFFSET_RESET,
        **fetch_options(max_document_bytes, fetch_max_wait_ms),
        fetch_max_bytes=max(
            WORKER_FETCH_MAX_BYTES, fetch_bytes_for(max_document_bytes)
        ),
        max_poll_interval_ms=WORKER_MAX_POLL_INTERVAL_MS,
    )


def build_waiter_consumer(
    client_kwargs: Mapping[str, object],
    max_document_bytes: int,
    *,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AIOKafkaConsumer:
    """A consumer without a group for a sender reading its answers (``ReplyReader``)."""
    return AIOKafkaConsumer(
        **client_kwargs,
        enable_auto_commit=False,
        **fetch_options(max_document_bytes, fetch_max_wait_ms),
    )


def build_reply_group_consumer(
    client_kwargs: Mapping[str, object],
    max_document_bytes: int,
    *,
    group_id: str,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AIOKafkaConsumer:
    """A gateway replica's reader of its answers (``ReplyReader``, routed): in
    ``group_id`` with the other replicas, each reading the partitions assigned to it.

    It never commits and starts where nothing is committed, at the end: it only waits
    for answers to requests sent after it joined. Its assignor gives a member the same
    partition numbers of every topic it reads (the result and progress topics have as
    many), so a request's result and progress reach the same replica, and keeps them
    where it can across rebalances.
    """
    return AIOKafkaConsumer(
        **client_kwargs,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        partition_assignment_strategy=(CopartitionedAssignor(),),
        heartbeat_interval_ms=REPLY_GROUP_HEARTBEAT_INTERVAL_MS,
        **fetch_options(max_document_bytes, fetch_max_wait_ms),
    )


class BrokerCertificateError(Exception):
    """A bootstrap server's certificate did not verify with the clients' SSL context
    (a CA that did not sign it, another host name); aiokafka would retry it for ever."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"TLS certificate of {address} did not verify: {reason}")
        self.address = address
        self.reason = reason


async def verify_broker_tls(
    client_kwargs: Mapping[str, object], timeout_s: float = 10.0
) -> None:
    """Handshake with each bootstrap server as the clients will; a certificate that does
    not verify raises ``BrokerCertificateError``. Servers that do not answer, or fail
    otherwise, are left to the clients (they retry and say so). Nothing to do without
    ``ssl_context``."""
    context = client_kwargs.get("ssl_context")
    if not isinstance(context, ssl.SSLContext):
        return
    for address in _bootstrap_addresses(client_kwargs.get("bootstrap_servers")):
        await _handshake(address, context, timeout_s)


async def _handshake(address: str, context: ssl.SSLContext, timeout_s: float) -> None:
    host, port = _split_address(address)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), timeout_s
        )
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or str(exc)
        raise BrokerCertificateError(address, reason) from exc
    except (OSError, TimeoutError):  # ssl.SSLError included
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _bootstrap_addresses(servers: object) -> list[str]:
    """``"a:9092,b:9092"`` or a list of them, as aiokafka accepts."""
    if isinstance(servers, str):
        servers = servers.split(",")
    if not isinstance(servers, list | tuple):
        return []
    return [str(server).strip() for server in servers if str(server).strip()]


def _split_address(address: str, default_port: int = 9092) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address.strip("[]"), default_port
    return host.strip("[]"), int(port)
