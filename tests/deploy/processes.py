"""Child processes and waits shared by the deploy tests that run the real thing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import REPO
from tests.support.processes import stop_process

MEDOCR = [sys.executable, "-m", "consumers"]  # what the `medocr` script runs


def host_env() -> dict[str, str]:
    """This process's environment without medocr's own settings: a clean slate."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KAFKA_", "OCR_", "TESSERACT_", "API_KEY"))
    }


@contextmanager
def child(
    argv: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running with its output in ``log``; SIGTERM (then SIGKILL) at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )
        try:
            yield process
        finally:
            stop_process(process, 30)


@contextmanager
def medocr_broker(port: int, env: dict[str, str], log: Path) -> Iterator[None]:
    """``medocr broker`` on ``port``, ready, until the block ends."""
    with child([*MEDOCR, "broker", "--port", str(port)], env, log) as process:
        wait_for(
            "the broker",
            lambda: (
                "broker ready on" in log.read_text("utf-8", "replace")
                or process.poll() is not None
            ),
            60,
            log,
        )
        assert process.poll() is None, log.read_text("utf-8", "replace")
        yield


def medocr_publish(
    files: Sequence[Path], env: dict[str, str], wait_s: int
) -> subprocess.CompletedProcess[str]:
    """``medocr publish FILES --wait --timeout WAIT_S``, given a minute more; it must
    succeed."""
    published = subprocess.run(
        [*MEDOCR, "publish", *map(str, files), "--wait", "--timeout", str(wait_s)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=wait_s + 60,
        check=False,
    )
    assert published.returncode == 0, published.stdout + published.stderr
    return published


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, log: Path) -> None:
    """Poll ``check`` until it holds; else fail with the tail of ``log``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = log.read_text("utf-8", "replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out waiting for {what}; log:\n{tail}")


def answers(url: str, status: int = 200) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == status
    except httpx.HTTPError:
        return False
