"""Stopping child processes the tests and benchmarks start."""

from __future__ import annotations

import subprocess
from typing import AnyStr


def stop_process(process: subprocess.Popen[AnyStr], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout_s``;
    reaped either way (nothing happens to one that already exited)."""
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
