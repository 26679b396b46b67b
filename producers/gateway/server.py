"""The gateway served by uvicorn inside the caller's event loop, and ``run_gateway``,
what ``medocr gateway`` runs: the reply source, the app and the server, until ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from producers.client import OcrClient
from producers.gateway.app import build_gateway
from producers.gateway.config import GatewayConfig
from producers.gateway.remote import RemoteFetcher, build_fetcher
from producers.gateway.source import BrokerProbe, ClientReplySource
from producers.http_server import LoopServer
from producers.kafka import build_waiter_consumer
from producers.replies import ReplyReaderError

log = logging.getLogger(__name__)


class GatewayStartError(Exception):
    """The gateway cannot listen where it was told to."""


class GatewayServer(LoopServer):
    """uvicorn in the running event loop; ``port`` 0 takes a free one."""

    def __init__(
        self, app: FastAPI, host: str, port: int, *, drain_timeout_s: float = 30.0
    ) -> None:
        super().__init__(
            app,
            host,
            port,
            what="the gateway",
            error=GatewayStartError,
            lifespan="on",
            drain_timeout_s=drain_timeout_s,
        )


async def run_gateway(
    client: OcrClient,
    config: GatewayConfig,
    *,
    client_kwargs: Mapping[str, object],
    host: str,
    port: int,
    stop: asyncio.Event,
) -> None:
    """Serve until ``stop`` is set; ``client`` is open, with progress on. Its reader
    starts first: topics it cannot read are a ``GatewayStartError``."""
    try:
        await client.start()
    except ReplyReaderError as exc:
        raise GatewayStartError(f"the gateway cannot read its replies: {exc}") from exc
    probe = BrokerProbe(
        build_waiter_consumer(client_kwargs, config.max_document_bytes),
        config.result_topic,
    )
    fetcher: RemoteFetcher | None = None
    if config.http_fetch:
        fetcher = build_fetcher(
            max_bytes=config.http_fetch_max_bytes,
            timeout_s=config.http_fetch_timeout_s,
        )
    try:
        async with ClientReplySource(client, probe) as source:
            app = build_gateway(source, config, CollectorRegistry(), fetcher=fetcher)
            server = GatewayServer(
                app, host, port, drain_timeout_s=min(config.timeout_s, 30.0)
            )
            await server.start()
            log.info("gateway listening on %s:%d", host, server.port)
            try:
                await stop.wait()
            finally:
                await server.stop()
    finally:
        if fetcher is not None:
            await fetcher.aclose()
