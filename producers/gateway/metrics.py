"""The gateway's Prometheus metrics, and the ASGI middleware that records each request.

Labels are the route's template and the HTTP status, never a request id or anything a
sender wrote.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ocr_gateway_requests_total",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.waits = Gauge(
            "ocr_gateway_waits_in_flight",
            "results the gateway waits for (one per document, one per extra watcher)",
            registry=registry,
        )
        self.waits_limit = Gauge(
            "ocr_gateway_waits_limit",
            "waits in flight at which requests get 429 (GATEWAY_MAX_WAITS)",
            registry=registry,
        )
        self.first_byte = Histogram(
            "ocr_gateway_time_to_first_byte_seconds",
            "from the request to the first byte of its answer's body",
            ["route"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.end_to_end = Histogram(
            "ocr_gateway_end_to_end_seconds",
            "from the request to the last byte of its answer",
            ["route"],
            buckets=_SECONDS,
            registry=registry,
        )


class RecordRequests:
    """ASGI middleware: each HTTP request's route, status and timings."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # what a crash before the response counts as
        first_byte: float | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and first_byte is None:
                first_byte = time.monotonic()
            await send(message)

        try:
            await self._app(scope, receive, timed_send)
        finally:
            route = _route(scope)
            ended = time.monotonic()
            self._metrics.requests.labels(route, str(status)).inc()
            self._metrics.first_byte.labels(route).observe(
                (first_byte or ended) - started
            )
            self._metrics.end_to_end.labels(route).observe(ended - started)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
