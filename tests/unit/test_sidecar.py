"""The sidecar's probes and metrics, served by real uvicorn on a loopback port.

httpx asks the well-formed questions; the auth table goes through a raw socket so it
can send what httpx refuses to: non-ASCII bytes, repeated or blank headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.engines.fake import FakeEngine
from consumers.errors import ConfigurationError
from consumers.metrics import WorkerMetrics
from consumers.sidecar import SidecarServer, build_sidecar
from consumers.state import WorkerState

KEY = "k3y-for-metrics"
STALL_S = 0.5  # wide enough that a loaded machine answers two requests within it


class Sidecar:
    def __init__(self, api_key: str | None) -> None:
        self.engine = FakeEngine()
        self.inflight = 0  # stands in for the worker's task table, the one count
        self.state = WorkerState(
            engine=self.engine,
            stall_timeout_s=STALL_S,
            count_inflight=lambda: self.inflight,
        )
        self.registry = CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, self.engine.name)
        self.app = build_sidecar(self.state, self.metrics, self.registry, api_key)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[int]:
        server = SidecarServer(self.app, "127.0.0.1", 0)
        await server.start()
        try:
            yield server.port
        finally:
            await server.stop()

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with (
            self.serve() as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            yield client

    async def make_ready(self) -> None:
        await self.engine.start()
        self.state.joined = True
        self.state.assigned = frozenset({TopicPartition("ocr.requests", 0)})

    def start_records(self, count: int = 1) -> None:
        """As the worker admits records: work arriving on an idle worker starts the
        stall clock."""
        if self.inflight == 0:
            self.state.work_arrived()
        self.inflight += count

    def finish_record(self) -> None:
        self.inflight -= 1
        self.state.progressed()

    async def stall(self) -> None:
        """A record in flight and nothing finished for longer than the stall timeout."""
        self.start_records()
        await asyncio.sleep(STALL_S * 3)


@pytest.fixture
def sidecar() -> Callable[..., Sidecar]:
    return Sidecar


# --- /health ------------------------------------------------------------------------


async def test_health_reports_the_seeds_fields(
    sidecar: Callable[..., Sidecar],
) -> None:
    side = sidecar(None)
    async with side.client() as client:
        starting = await client.get("/health")
        await side.make_ready()
        side.start_records(3)
        running = await client.get("/health")
    # a model still loading is alive: a liveness probe must not kill it
    assert starting.status_code == 200
    assert starting.json()["status"] == "starting"
    assert starting.json()["model_loaded"] is False
    assert starting.json()["gpu_available"] is False
    assert starting.json()["active_requests"] == 0
    assert running.status_code == 200
    body = running.json()
    assert body["status"] == "ok"
    assert body["model_loaded"] is True
    assert body["active_requests"] == 3
    assert body["engine"] == "fake"
    assert body["model"] == "fake-1"
    assert body["assigned_partitions"] == 1
    assert body["failure"] is None
    assert body["stall_timeout_s"] == STALL_S


async def test_health_is_503_after_a_failure(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(None)
    await side.make_ready()
    side.state.failure = "EngineDeadError"
    async with side.client() as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "failed"
    assert response.json()["failure"] == "EngineDeadError"


async def test_health_is_503_while_stalled_and_recovers_on_progress(
    sidecar: Callable[..., Sidecar],
) -> None:
    side = sidecar(None)
    await side.make_ready()
    async with side.client() as client:
        await side.stall()
        stalled = await client.get("/health")
        side.state.progressed()  # a page finished
        moving = await client.get("/health")
    assert stalled.status_code == 503
    assert stalled.json()["status"] == "stalled"
    assert stalled.json()["idle_s"] > STALL_S
    assert moving.status_code == 200
    assert moving.json()["status"] == "ok"


async def test_an_idle_worker_is_never_stalled(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(None)
    await side.make_ready()
    await asyncio.sleep(STALL_S * 3)  # nothing in flight, nothing finished
    async with side.client() as client:
        response = await client.get("/health")
        side.start_records()  # work arriving on an idle worker starts the clock
        arrived = await client.get("/health")
    assert response.status_code == 200
    assert arrived.status_code == 200


async def test_a_failure_outranks_a_stall(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(None)
    await side.make_ready()
    await side.stall()
    side.state.failure = "EngineDeadError"
    async with side.client() as client:
        response = await client.get("/health")
    assert (response.status_code, response.json()["status"]) == (503, "failed")


# --- /ready -------------------------------------------------------------------------


@dataclass(frozen=True)
class Situation:
    loaded: bool = True
    joined: bool = True
    failure: str | None = None
    stopping: bool = False
    broker_reachable: bool = True
    stalled: bool = False


READY_CASES = {
    "ready": (Situation(), 200),
    "loading": (Situation(loaded=False), 503),
    "not joined": (Situation(joined=False), 503),
    "neither": (Situation(loaded=False, joined=False), 503),
    "failed": (Situation(failure="EngineDeadError"), 503),
    "draining": (Situation(stopping=True), 503),
    "broker unreachable": (Situation(broker_reachable=False), 503),
    "stalled": (Situation(stalled=True), 503),
}


@pytest.mark.parametrize(
    ("situation", "code"), READY_CASES.values(), ids=READY_CASES.keys()
)
async def test_ready_needs_every_condition_and_says_which_failed(
    sidecar: Callable[..., Sidecar], situation: Situation, code: int
) -> None:
    side = sidecar(KEY)
    side.engine.loaded = situation.loaded
    side.state.joined = situation.joined
    side.state.failure = situation.failure
    side.state.stopping = situation.stopping
    side.state.broker_reachable = situation.broker_reachable
    if situation.stalled:
        await side.stall()
    async with side.client() as client:
        response = await client.get("/ready")
    assert response.status_code == code
    body = response.json()
    assert body["ready"] is (code == 200)
    assert body["model_loaded"] is situation.loaded
    assert body["joined"] is situation.joined
    assert body["failure"] == situation.failure
    assert body["stopping"] is situation.stopping
    assert body["broker_reachable"] is situation.broker_reachable
    assert body["stalled"] is situation.stalled


async def test_ready_turns_200_once_joined_and_loaded(
    sidecar: Callable[..., Sidecar],
) -> None:
    side = sidecar(None)
    async with side.client() as client:
        assert (await client.get("/ready")).status_code == 503
        await side.make_ready()
        assert (await client.get("/ready")).status_code == 200


# --- auth: every route x every Authorization ------------------------------------------

ROUTES = {
    "/health": 200,
    "/ready": 200,
    "/metrics": None,  # guarded: 200 with the right key, else 401
    "/openapi.json": 404,
    "/docs": 404,
    "/docs/oauth2-redirect": 404,
    "/redoc": 404,
}

AUTH = b"Authorization"
KEY_BYTES = KEY.encode()
HEADERS: dict[str, tuple[list[tuple[bytes, bytes]], bool]] = {
    # id: (headers, is the right key)
    "none": ([], False),
    "blank": ([(AUTH, b"")], False),
    "scheme only": ([(AUTH, b"Bearer")], False),
    "scheme and a space": ([(AUTH, b"Bearer ")], False),
    "basic": ([(AUTH, b"Basic " + KEY_BYTES)], False),
    "other scheme": ([(AUTH, b"Token " + KEY_BYTES)], False),
    "bare key": ([(AUTH, KEY_BYTES)], False),
    "two spaces": ([(AUTH, b"Bearer  " + KEY_BYTES)], False),
    "tab": ([(AUTH, b"Bearer\t" + KEY_BYTES)], False),
    "trailing word": ([(AUTH, b"Bearer " + KEY_BYTES + b" x")], False),
    "no space": ([(AUTH, b"Bearer" + KEY_BYTES)], False),
    "utf-8 token": ([(AUTH, "Bearer 비밀키".encode())], False),
    "latin-1 token": ([(AUTH, b"Bearer caf\xe9")], False),
    "key + 0xff": ([(AUTH, b"Bearer " + KEY_BYTES + b"\xff")], False),
    "utf-8 scheme": ([(AUTH, "Bearér ".encode() + KEY_BYTES)], False),
    "twice, right then wrong": (
        [(AUTH, b"Bearer " + KEY_BYTES), (AUTH, b"Bearer wrong")],
        False,
    ),
    "twice, both right": (
        [(AUTH, b"Bearer " + KEY_BYTES), (AUTH, b"Bearer " + KEY_BYTES)],
        False,
    ),
    "wrong key": ([(AUTH, b"Bearer wrong")], False),
    "longer key": ([(AUTH, b"Bearer " + KEY_BYTES + b"x")], False),
    "shorter key": ([(AUTH, b"Bearer " + KEY_BYTES[:-1])], False),
    "key in upper case": ([(AUTH, b"Bearer " + KEY_BYTES.upper())], False),
    "right": ([(AUTH, b"Bearer " + KEY_BYTES)], True),
    "right, lower-case scheme": ([(AUTH, b"bearer " + KEY_BYTES)], True),
    "right, upper-case scheme": ([(AUTH, b"BEARER " + KEY_BYTES)], True),
    "right, lower-case header name": (
        [(b"authorization", b"Bearer " + KEY_BYTES)],
        True,
    ),
}


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def raw_get(
    port: int, path: str, headers: list[tuple[bytes, bytes]]
) -> RawResponse:
    """One HTTP/1.1 GET with the header bytes exactly as given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"GET {path} HTTP/1.1".encode(),
            b"Host: sidecar",
            b"Connection: close",
        ]
        lines += [name + b": " + value for name, value in headers]
        writer.write(b"\r\n".join([*lines, b"", b""]))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    fields = (line.split(b":", 1) for line in header_lines)
    return RawResponse(
        status=int(status_line.split()[1]),
        headers={name.strip().lower(): value.strip() for name, value in fields},
        body=body,
    )


@pytest.mark.parametrize(("headers", "right"), HEADERS.values(), ids=HEADERS.keys())
async def test_every_route_with_every_authorization(
    sidecar: Callable[..., Sidecar], headers: list[tuple[bytes, bytes]], right: bool
) -> None:
    side = sidecar(KEY)
    await side.make_ready()
    async with side.serve() as port:
        answers = {route: await raw_get(port, route, headers) for route in ROUTES}
    expected = {
        route: code or (200 if right else 401) for route, code in ROUTES.items()
    }
    assert {route: a.status for route, a in answers.items()} == expected
    metrics = answers["/metrics"]
    if right:
        assert b"ocr_engine_up 1.0" in metrics.body
    else:
        assert metrics.headers[b"www-authenticate"] == b"Bearer"
        assert b"ocr_" not in metrics.body


async def test_without_a_key_metrics_are_open_to_any_header(
    sidecar: Callable[..., Sidecar],
) -> None:
    side = sidecar(None)
    async with side.serve() as port:
        for headers, _ in HEADERS.values():
            response = await raw_get(port, "/metrics", headers)
            assert response.status == 200, headers
            assert b"ocr_worker_ready 0.0" in response.body


@pytest.mark.parametrize("key", ["two words", "비밀", "tab\tkey", " lead"])
def test_a_key_no_header_can_carry_is_refused_at_start(key: str) -> None:
    with pytest.raises(ConfigurationError, match="API_KEY"):
        Sidecar(key)


# --- /metrics content ---------------------------------------------------------------


async def test_metrics_with_the_right_key(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(KEY)
    await side.make_ready()
    side.metrics.records.labels(outcome="ok").inc(2)
    async with side.client() as client:
        response = await client.get(
            "/metrics", headers={"Authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'ocr_records_total{outcome="ok"} 2.0' in response.text
    assert "ocr_engine_up 1.0" in response.text
    assert "ocr_worker_ready 1.0" in response.text
    assert "ocr_worker_stalled 0.0" in response.text
    # at 0 from the start, so the first one is an increase the alert can see
    assert 'ocr_dead_letters_total{error_code="INTERNAL_ERROR"} 0.0' in response.text


async def test_a_stall_shows_in_the_gauges(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(None)
    await side.make_ready()
    async with side.client() as client:
        await side.stall()
        stalled = (await client.get("/metrics")).text
        side.finish_record()
        moving = (await client.get("/metrics")).text
    assert "ocr_worker_stalled 1.0" in stalled
    assert "ocr_engine_up 0.0" in stalled
    assert "ocr_worker_ready 0.0" in stalled
    assert "ocr_worker_stalled 0.0" in moving
    assert "ocr_engine_up 1.0" in moving
    assert "ocr_worker_ready 1.0" in moving


async def test_metrics_are_open_without_a_key(sidecar: Callable[..., Sidecar]) -> None:
    side = sidecar(None)
    async with side.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "ocr_engine_up 0.0" in response.text
    assert "ocr_worker_ready 0.0" in response.text


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
        "ocr_worker_stalled",
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
