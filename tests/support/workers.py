"""``medocr worker`` as a real child process, for kill -9, SIGTERM and group tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from consumers.engines import OcrEngine
from consumers.local.broker import free_port
from consumers.runner import run_worker
from consumers.settings import Settings
from tests.support.kafka import kafka_env

LOGS = Path(os.environ.get("MEDOCR_TEST_LOGS", "/tmp/medocr-test-logs"))


@asynccontextmanager
async def running_worker(
    settings: Settings, engine: OcrEngine
) -> AsyncIterator[asyncio.Event]:
    """An in-process worker until the block ends (or the event it yields is set)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop, engine=engine))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def run_burst(
    settings: Settings, engine: OcrEngine | None = None, timeout_s: float = 60
) -> None:
    """An in-process worker until the input topic is drained (``burst``)."""
    await asyncio.wait_for(
        run_worker(settings, asyncio.Event(), burst=True, engine=engine), timeout_s
    )


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {**os.environ, **kafka_env(settings.kafka)}
    env.update(
        OCR_BATCH_MAX_WAIT_MS="100",
        HOST="127.0.0.1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, settings: Settings, name: str, *args: str, **env: str) -> None:
        self.port = free_port()
        self.name = name
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{settings.kafka.consumer_group}-{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumers", "worker", *args],
            env=worker_env(settings, PORT=str(self.port), **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2)

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited: {self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if self.get("/ready").status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(
            f"worker {self.name} not ready in {timeout_s}s: {self.log()}"
        )

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = 60) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:  # wait() and stop() close it; the file stays
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]
