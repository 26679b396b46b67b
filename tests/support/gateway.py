"""``medocr gateway`` in this process (``run_gateway``), and an HTTP client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from consumers.local.broker import free_port
from producers.client import OcrClient
from producers.gateway.config import GatewayConfig
from producers.gateway.server import run_gateway


@dataclass(frozen=True)
class ServedGateway:
    url: str
    http: httpx.AsyncClient  # with ``url`` as its base URL


@asynccontextmanager
async def served_gateway(
    client: OcrClient,
    config: GatewayConfig,
    client_kwargs: Mapping[str, object],
    *,
    until: str,
    timeout_s: float,
    poll_s: float = 0.05,
) -> AsyncIterator[ServedGateway]:
    """The gateway on a free loopback port in front of ``client`` until the block
    ends (then stopped, and awaited), served once ``until`` (a path) answers 200."""
    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(
        run_gateway(
            client,
            config,
            client_kwargs=client_kwargs,
            host="127.0.0.1",
            port=port,
            stop=stop,
        )
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            async with asyncio.timeout(timeout_s):
                while (await status_of(http, until)) != 200:
                    assert not task.done(), task.exception()
                    await asyncio.sleep(poll_s)
            yield ServedGateway(url, http)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def status_of(http: httpx.AsyncClient, path: str) -> int:
    """The status ``path`` answers with; 0 while nothing answers."""
    try:
        return (await http.get(path)).status_code
    except httpx.TransportError:
        return 0
