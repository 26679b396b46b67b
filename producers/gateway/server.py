"""The gateway served by uvicorn inside the caller's event loop, and ``run_gateway``,
what ``medocr gateway`` runs: the reply source, the app and the server, until ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from producers.client import OcrClient
from producers.gateway.app import build_gateway
from producers.gateway.config import GatewayConfig
from producers.gateway.remote import RemoteFetcher, build_fetcher
from producers.gateway.source import BrokerProbe, ClientReplySource
from producers.kafka import build_waiter_consumer
from producers.replies import ReplyReaderError

log = logging.getLogger(__name__)


class GatewayStartError(Exception):
    """The gateway cannot listen where it was told to."""


class _QuietServer(uvicorn.Server):
    """The caller owns SIGTERM/SIGINT; uvicorn must not take them over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """uvicorn in the running event loop; ``port`` 0 takes a free one."""

    def __init__(
        self, app: FastAPI, host: str, port: int, *, drain_timeout_s: float = 30.0
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=int(drain_timeout_s) or 1,
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
            raise GatewayStartError(
                f"the gateway cannot listen on {self._host}:{self._port}:"
                f" {exc.strerror}"
            ) from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise GatewayStartError("the gateway stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


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
