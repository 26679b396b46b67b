"""Fixtures shared by every test folder: a real broker, isolated topics, settings."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator

import pytest

from consumers.local.broker import EmbeddedBroker
from consumers.settings import Settings
from producers.kafka import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
from tests.support.topics import case_settings


@functools.cache
def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    import docker  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=2)
        except Exception:  # noqa: BLE001 - any failure means "no usable Docker daemon"
            return False
        try:
            return bool(client.ping())
        except Exception:  # noqa: BLE001
            return False
        finally:
            client.close()


@pytest.fixture(scope="session")
def bootstrap_servers() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else testcontainers Kafka, else the embedded broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


def _embedded() -> bool:
    """Whether ``bootstrap_servers`` is the embedded broker."""
    return not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and not _docker_answers()


@pytest.fixture(scope="session")
def idempotence(bootstrap_servers: str) -> bool:
    """Apache Kafka supports idempotent producers; the embedded tansu broker does not."""
    env = os.environ.get("KAFKA_ENABLE_IDEMPOTENCE")
    if env is not None:
        return env.lower() in ("1", "true", "yes")
    return not _embedded()


@pytest.fixture
async def settings(bootstrap_servers: str, idempotence: bool) -> Settings:
    """Settings with this test's own topics (created) and consumer group."""
    settings = await case_settings(
        bootstrap_servers,
        partitions=4,
        enable_idempotence=idempotence,
        fetch_max_wait_ms=EMBEDDED_BROKER_FETCH_MAX_WAIT_MS if _embedded() else None,
    )
    sidecar = settings.sidecar.model_copy(update={"host": "127.0.0.1", "port": 0})
    batch = settings.batch.model_copy(
        update={"max_wait_ms": 100, "drain_timeout_s": 20}
    )
    return settings.model_copy(update={"sidecar": sidecar, "batch": batch})
