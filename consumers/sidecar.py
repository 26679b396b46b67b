"""Health, readiness and Prometheus metrics for ops probes, served beside the worker.

``/health`` is liveness: 503 when the worker failed or is stalled, 200 while the
engine loads. ``/ready`` is 503 until the worker can take work. Both stay open for
probes; ``/metrics`` asks for ``Authorization: Bearer <API_KEY>`` when a key is set,
and any other ``Authorization`` (malformed, non-ASCII, repeated) is a 401.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumers.errors import ConfigurationError
from consumers.metrics import WorkerMetrics
from consumers.state import WorkerState
from producers.http_server import LoopServer


def build_sidecar(
    state: WorkerState,
    metrics: WorkerMetrics,
    registry: CollectorRegistry,
    api_key: str | None,
) -> FastAPI:
    """The sidecar app; ``api_key`` (visible ASCII) guards ``/metrics`` when set."""
    key = _key_bytes(api_key) if api_key else None
    # No schema or docs pages: nothing here is an API for people, and /openapi.json
    # would be one more unauthenticated route.
    app = FastAPI(
        title="medocr worker", openapi_url=None, docs_url=None, redoc_url=None
    )

    @app.get("/health")
    def health(response: Response) -> dict[str, object]:
        check = state.check()
        # "starting" answers 200: a liveness probe must not kill a model load.
        response.status_code = 503 if check.status in _UNHEALTHY else 200
        return {
            "status": check.status,
            "model_loaded": check.engine.loaded,
            "gpu_available": check.engine.gpu_available,
            "active_requests": state.inflight_records,
            "engine": state.engine.name,
            "model": state.engine.model,
            "assigned_partitions": len(state.assigned),
            "failure": check.failure,
            "idle_s": round(check.idle_s, 3),
            "stall_timeout_s": state.stall_timeout_s,
        }

    @app.get("/ready")
    def ready(response: Response) -> dict[str, object]:
        check = state.check()
        response.status_code = 200 if check.ready else 503
        return {
            "ready": check.ready,
            "status": check.status,
            "model_loaded": check.engine.loaded,
            "joined": check.joined,
            "broker_reachable": check.broker_reachable,
            "stopping": check.stopping,
            "failure": check.failure,
            "stalled": check.stalled,
        }

    @app.get("/metrics")
    def scrape(request: Request) -> Response:
        if key is not None and not bearer_matches(request.scope["headers"], key):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        check = state.check()
        metrics.engine_up.set(1 if check.healthy else 0)
        metrics.ready.set(1 if check.ready else 0)
        metrics.stalled.set(1 if check.stalled else 0)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


_UNHEALTHY = frozenset({"failed", "stalled"})

# RFC 7235 credentials with a token of visible ASCII: one space, no other blanks.
_BEARER = re.compile(rb"bearer ([\x21-\x7e]+)", re.IGNORECASE)


def _key_bytes(api_key: str) -> bytes:
    key = api_key.encode("utf-8")
    if not re.fullmatch(rb"[\x21-\x7e]+", key):
        raise ConfigurationError(
            "API_KEY must be visible ASCII without blanks: "
            "no Authorization header could carry it"
        )
    return key


def bearer_matches(headers: Iterable[tuple[bytes, bytes]], key: bytes) -> bool:
    """Exactly one ``Authorization: Bearer <key>`` among the raw ASGI headers.

    Compared as bytes: the header may carry any byte, and ``hmac.compare_digest`` on
    a non-ASCII ``str`` raises instead of answering ``False``.
    """
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if len(values) != 1:
        return False
    found = _BEARER.fullmatch(values[0])
    return found is not None and hmac.compare_digest(found.group(1), key)


class SidecarServer(LoopServer):
    """uvicorn inside the worker's event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        super().__init__(app, host, port, what="the sidecar", error=ConfigurationError)
