"""``/health`` and ``/ready`` for probes (open), ``/metrics`` for Prometheus (the key).

``/health`` is 503 only when the gateway can never answer again (its result reader
died: restart it); ``/ready`` is 503 while the brokers do not answer, while the reader
has no partition to read (``GATEWAY_GROUP``: before the group assigns this replica one,
during a rebalance, or when there are more replicas than partitions) or, likewise, when
the reader is gone.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from producers.gateway.source import ReaderStatus, ReplySource
from producers.gateway.waits import WaitTable


def probe_routes(
    source: ReplySource,
    waits: WaitTable,
    registry: CollectorRegistry,
    authorized: Callable[[Request], None],
) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    def health() -> Response:
        failure = source.failure()
        return JSONResponse(
            {"status": "ok" if failure is None else "failed", "failure": failure},
            status_code=200 if failure is None else 503,
        )

    @router.get("/ready")
    async def ready() -> Response:
        failure = source.failure()
        reachable = await source.broker_reachable()
        reader_ready, partitions = True, None
        if isinstance(source, ReaderStatus):
            reader_ready, partitions = source.reader_ready(), source.reply_partitions()
        ready = reachable and reader_ready and failure is None
        return JSONResponse(
            {
                "ready": ready,
                "broker_reachable": reachable,
                "reader_ready": reader_ready,
                "reply_partitions": None if partitions is None else list(partitions),
                "failure": failure,
                "waits_in_flight": waits.in_use(),
                "waits_limit": waits.limit,
            },
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", dependencies=[Depends(authorized)])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
