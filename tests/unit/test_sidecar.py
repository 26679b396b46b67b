"""The sidecar's probes and metrics, served in-process through httpx's ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.metrics import WorkerMetrics
from consumers.sidecar import build_sidecar
from consumers.state import WorkerState
from tests.support.engines import FakeEngine

KEY = "k3y-for-metrics"


class Sidecar:
    def __init__(self, api_key: str | None) -> None:
        self.engine = FakeEngine()
        self.state = WorkerState(engine=self.engine)
        self.registry = CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, self.engine.name)
        self.app = build_sidecar(self.state, self.metrics, self.registry, api_key)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sidecar"
        ) as client:
            yield client

    async def make_ready(self) -> None:
        await self.engine.start()
        self.state.joined = True
        self.state.assigned = frozenset({TopicPartition("ocr.requests", 0)})


@pytest.fixture
def sidecar() -> Callable[..., Sidecar]:
    return Sidecar


async def test_health_reports_the_seeds_fields(
    sidecar: Callable[..., Sidecar],
) -> None:
    side = sidecar(None)
    async with side.client() as client:
        starting = (await client.get("/health")).json()
        await side.make_ready()
        side.state.inflight_records = 3
        running = (await client.get("/health")).json()
    assert starting["status"] == "starting"
    assert starting["model_loaded"] is False
    assert starting["gpu_available"] is False
    assert starting["active_requests"] == 0
    assert running["status"] == "ok"
    assert running["model_loaded"] is True
    assert running["active_requests"] == 3
    assert running["engine"] == "fake"
    assert running["model"] == "fake-1"
    assert running["assigned_partitions"] == 1


async def test_health_reports_a_failure(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(None)
    await side.make_ready()
    side.state.failure = "EngineDeadError"
    async with side.client() as client:
        response = await client.get("/health")
    assert response.status_code == 200  # health answers; readiness says "not ready"
    assert response.json()["status"] == "failed"


@pytest.mark.parametrize(
    ("loaded", "joined", "failure", "stopping", "code"),
    [
        (False, False, None, False, 503),
        (True, False, None, False, 503),
        (False, True, None, False, 503),
        (True, True, None, False, 200),
        (True, True, "EngineDeadError", False, 503),
        (True, True, None, True, 503),
    ],
)
async def test_ready_needs_the_engine_and_the_assignment(
    sidecar: Callable[..., Sidecar],
    loaded: bool,
    joined: bool,
    failure: str | None,
    stopping: bool,
    code: int,
) -> None:
    side = sidecar(KEY)
    side.engine.loaded = loaded
    side.state.joined = joined
    side.state.failure = failure
    side.state.stopping = stopping
    async with side.client() as client:
        response = await client.get("/ready")
    assert response.status_code == code
    assert response.json()["ready"] is (code == 200)


async def test_ready_turns_200_once_joined_and_loaded(
    sidecar: Callable[..., Sidecar],
) -> None:
    side = sidecar(None)
    async with side.client() as client:
        assert (await client.get("/ready")).status_code == 503
        await side.make_ready()
        assert (await client.get("/ready")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong", "basic", "bare", "longer", "empty"],
)
async def test_metrics_refuse_a_missing_or_wrong_key(
    sidecar: Callable[..., Sidecar], headers: dict[str, str]
) -> None:
    side = sidecar(KEY)
    async with side.client() as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "ocr_" not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
async def test_metrics_with_the_right_key(
    sidecar: Callable[..., Sidecar], scheme: str
) -> None:
    side = sidecar(KEY)
    await side.make_ready()
    side.metrics.records.labels(outcome="ok").inc(2)
    async with side.client() as client:
        response = await client.get(
            "/metrics", headers={"Authorization": f"{scheme} {KEY}"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'ocr_records_total{outcome="ok"} 2.0' in response.text
    assert "ocr_engine_up 1.0" in response.text
    assert "ocr_worker_ready 1.0" in response.text


async def test_metrics_are_open_without_a_key(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(None)
    async with side.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "ocr_engine_up 0.0" in response.text
    assert "ocr_worker_ready 0.0" in response.text


async def test_probes_stay_open_when_a_key_is_set(
    sidecar: Callable[..., Sidecar],
) -> None:
    side = sidecar(KEY)
    await side.make_ready()
    async with side.client() as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200


@pytest.mark.parametrize(
    "name",
    [
        "ocr_records_total",
        "ocr_pages_total",
        "ocr_dead_letters_total",
        "ocr_retries_total",
        "ocr_batch_size_records",
        "ocr_engine_page_seconds",
        "ocr_end_to_end_seconds",
        "ocr_inflight_pages",
        "ocr_inflight_records",
        "ocr_inflight_pages_limit",
        "ocr_consumer_lag_records",
        "ocr_engine_up",
        "ocr_worker_ready",
        "ocr_offset_commits_total",
    ],
)
async def test_every_documented_metric_is_exposed(
    sidecar: Callable[..., Sidecar], name: str
) -> None:
    side = sidecar(None)
    async with side.client() as client:
        text = (await client.get("/metrics")).text
    assert f"# HELP {name} " in text
