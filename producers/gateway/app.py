"""The gateway app: its collaborators in, a FastAPI app out.

``build_gateway(source, config, registry)``: ``source`` answers requests (an
``OcrClient`` behind ``ClientReplySource`` in production, anything with its two
methods in a test), ``registry`` takes the metrics, ``fetcher`` reads http(s) image
URLs when they are allowed. Nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from producers.gateway.answers import Answers
from producers.gateway.auth import BearerAuth
from producers.gateway.chat import chat_routes
from producers.gateway.config import GatewayConfig
from producers.gateway.errors import GatewayError
from producers.gateway.images import ImageFetcher, ScanReader
from producers.gateway.intake import IntakeLimits
from producers.gateway.metrics import GatewayMetrics, RecordRequests
from producers.gateway.ocr import RouteParts, ocr_routes
from producers.gateway.probes import probe_routes
from producers.gateway.source import ReplySource
from producers.gateway.waits import WaitTable

OPENAI_PREFIX = "/v1/chat/"


def build_gateway(
    source: ReplySource,
    config: GatewayConfig,
    registry: CollectorRegistry,
    *,
    fetcher: ImageFetcher | None = None,
) -> FastAPI:
    metrics = GatewayMetrics(registry)
    metrics.waits_limit.set(config.max_waits)
    waits = WaitTable(
        source,
        limit=config.max_waits,
        linger_s=config.timeout_s,
        retry_after_s=config.retry_after_s,
        on_change=metrics.waits.set,
    )
    answers = Answers(
        waits, timeout_s=config.timeout_s, result_topic=config.result_topic
    )
    scans = ScanReader(config.max_document_bytes, config.file_uri_roots, fetcher)
    limits = IntakeLimits(
        config.max_document_bytes, config.max_id_chars, config.max_prompt_bytes
    )
    auth = BearerAuth(config.api_key)

    def authorized(request: Request) -> None:
        auth.check(request.scope["headers"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await waits.close()

    # No schema or docs pages: /openapi.json would be one more unauthenticated route.
    app = FastAPI(
        title="medocr gateway",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.include_router(probe_routes(source, waits, registry, authorized))
    parts = RouteParts(answers, scans, limits, authorized)
    app.include_router(ocr_routes(parts))
    app.include_router(chat_routes(parts))
    app.add_exception_handler(GatewayError, _error_response)  # type: ignore[arg-type]
    app.add_middleware(RecordRequests, metrics=metrics)
    return app


def _error_response(request: Request, exc: GatewayError) -> Response:
    openai = request.url.path.startswith(OPENAI_PREFIX)
    return JSONResponse(
        exc.openai_body() if openai else exc.ocr_body(),
        status_code=exc.status,
        headers={
            **exc.headers,
            **({"X-Request-Id": exc.request_id} if exc.request_id else {}),
        },
    )
