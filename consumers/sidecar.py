"""Health, readiness and Prometheus metrics for ops probes, served beside the worker.

``/health`` and ``/ready`` stay open for probes; ``/metrics`` asks for
``Authorization: Bearer <API_KEY>`` when a key is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumers.errors import ConfigurationError
from consumers.metrics import WorkerMetrics
from consumers.state import WorkerState


def build_sidecar(
    state: WorkerState,
    metrics: WorkerMetrics,
    registry: CollectorRegistry,
    api_key: str | None,
) -> FastAPI:
    app = FastAPI(title="medocr worker", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict[str, object]:
        engine = state.engine.health()
        status = "failed" if state.failure else ("ok" if engine.loaded else "starting")
        return {
            "status": status,
            "model_loaded": engine.loaded,
            "gpu_available": engine.gpu_available,
            "active_requests": state.inflight_records,
            "engine": state.engine.name,
            "model": state.engine.model,
            "assigned_partitions": len(state.assigned),
        }

    @app.get("/ready")
    def ready(response: Response) -> dict[str, object]:
        is_ready = state.ready()
        response.status_code = 200 if is_ready else 503
        return {"ready": is_ready, "joined": state.joined, "failure": state.failure}

    @app.get("/metrics")
    def scrape(authorization: str | None = Header(default=None)) -> Response:
        if api_key and not _bearer_matches(authorization, api_key):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        metrics.engine_up.set(1 if state.healthy() else 0)
        metrics.ready.set(1 if state.ready() else 0)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _bearer_matches(authorization: str | None, api_key: str) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token, api_key)


class _QuietServer(uvicorn.Server):
    """The worker owns SIGTERM/SIGINT; uvicorn must not take them over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SidecarServer:
    """uvicorn inside the worker's event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off"
        )
        self._server = _QuietServer(config)
        self._host = host
        self._port = port
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Bind here: uvicorn would answer a bind error with sys.exit inside its task.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"the sidecar cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigurationError("the sidecar stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
