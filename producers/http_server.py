"""uvicorn inside the caller's running event loop: the worker's sidecar and the gateway.

The caller owns SIGTERM/SIGINT (uvicorn must not take them over), and the socket is
bound here, so a bind error is an exception of the caller's choosing instead of the
``sys.exit`` uvicorn would call inside its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Literal

import uvicorn
from fastapi import FastAPI


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LoopServer:
    """``app`` on ``host:port`` (0: a free port) in the running loop, until ``stop``.

    ``what`` names it in errors ("the sidecar"); ``error`` makes the exception raised
    when it cannot listen or stops during start-up.
    """

    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        *,
        what: str,
        error: Callable[[str], Exception],
        lifespan: Literal["on", "off"] = "off",
        drain_timeout_s: float | None = None,
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan=lifespan,
            timeout_graceful_shutdown=(
                None if drain_timeout_s is None else int(drain_timeout_s) or 1
            ),
        )
        self._server = _QuietServer(config)
        self._host = host
        self._port = port
        self._what = what
        self._error = error
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise self._error(
                f"{self._what} cannot listen on {self._host}:{self._port}: "
                f"{exc.strerror}"
            ) from exc
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise self._error(f"{self._what} stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
