"""/health against a real worker on a real broker: a stuck page turns it 503, progress
turns it back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from consumers.engines.fake import FakeEngine
from consumers.local.broker import free_port
from consumers.settings import Settings
from tests.support.kafka import publish_requests, read_outputs
from tests.support.records import png_request
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

STALL_S = 1.0


@asynccontextmanager
async def sidecar_of_worker(
    settings: Settings, engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process worker and a client for its sidecar."""
    base_url = f"http://127.0.0.1:{settings.sidecar.port}"
    async with (
        running_worker(settings, engine),
        httpx.AsyncClient(base_url=base_url, timeout=2) as client,
    ):
        yield client


async def wait_for(
    client: httpx.AsyncClient,
    path: str,
    done: Callable[[httpx.Response], bool],
    timeout_s: float = 30,
) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            last = await client.get(path)
        except httpx.TransportError:
            pass  # the sidecar is not listening yet
        else:
            if done(last):
                return last
        await asyncio.sleep(0.1)
    seen = f"{last.status_code} {last.text}" if last is not None else "no answer"
    pytest.fail(f"{path} never got there in {timeout_s}s; last: {seen}")


def answers(code: int, status: str) -> Callable[[httpx.Response], bool]:
    return lambda r: r.status_code == code and r.json()["status"] == status


async def test_a_stuck_page_makes_health_503_until_it_moves(
    settings: Settings,
) -> None:
    batch = settings.batch.model_copy(update={"stall_timeout_s": STALL_S})
    # a fixed port: the settings fixture's port 0 is not visible from outside the worker
    sidecar = settings.sidecar.model_copy(update={"port": free_port()})
    settings = settings.model_copy(update={"batch": batch, "sidecar": sidecar})
    gate = asyncio.Event()
    engine = FakeEngine(gates={"stuck": gate})
    await publish_requests(settings, [png_request("stuck")])

    async with sidecar_of_worker(settings, engine) as client:
        stalled = await wait_for(client, "/health", answers(503, "stalled"))
        assert stalled.json()["active_requests"] == 1
        assert stalled.json()["idle_s"] > STALL_S
        assert engine.calls == [("stuck", 1)]  # the page is with the engine, waiting
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["stalled"] is True

        gate.set()
        await wait_for(client, "/health", answers(200, "ok"), timeout_s=10)
        outputs = await read_outputs(settings, results=1)
        await wait_for(client, "/ready", lambda r: r.status_code == 200, timeout_s=10)

    assert [(r.document_id, r.status.value) for r in outputs.results] == [
        ("stuck", "OK")
    ]
