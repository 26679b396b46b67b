"""A worker killed with SIGKILL takes its tesseract processes with it (Linux)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from consumers.settings import Settings
from producers.publisher import RequestOptions, build_request
from tests.support.cer import SAMPLES_DIR
from tests.support.kafka import publish_requests
from tests.support.workers import WorkerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.tesseract,
    pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux"),
]

PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    """A process as /proc shows it; ``started`` tells a reused pid apart."""

    pid: int
    name: str
    state: str
    ppid: int
    cpu_s: float
    started: int


def read_proc(pid: int) -> Proc | None:
    try:
        line = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    name = line[line.index("(") + 1 : line.rindex(")")]
    fields = line[line.rindex(")") + 2 :].split()
    # after the name: fields 3 (state), 4 (ppid), 14+15 (CPU), 22 (start) of stat(5)
    cpu_s = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return Proc(pid, name, fields[0], int(fields[1]), cpu_s, int(fields[19]))


def children_named(ppid: int, name: str) -> list[Proc]:
    found = (read_proc(int(p.name)) for p in PROC.iterdir() if p.name.isdigit())
    return [p for p in found if p is not None and p.ppid == ppid and p.name == name]


def alive(proc: Proc) -> bool:
    now = read_proc(proc.pid)
    # a zombie is dead: this container's pid 1 may never reap orphans
    return now is not None and now.started == proc.started and now.state != "Z"


def slow_scan(path: Path) -> Path:
    """A 4096 px page tiled with a prescription: about 10 s of tesseract's time.

    Tesseract writes nothing to stderr while it reads such a page (its resolution is
    given), so an orphan cannot die early of SIGPIPE on the dead worker's pipe.
    """
    with Image.open(SAMPLES_DIR / "pub-0029.png") as sample:
        tile = sample.convert("L")
    page = Image.new("L", (4096, 4096), 255)
    for top in range(0, page.height, tile.height):
        for left in range(0, page.width, tile.width):
            page.paste(tile, (left, top))
    page.save(path, "PNG", dpi=(300, 300))
    return path


def wait_for_children(worker: WorkerProcess, timeout_s: float) -> list[Proc]:
    """The worker's tesseract processes, once one has worked a second on its page.

    Before that it may still be reading the page from its stdin, and would end on its
    own at the end of the pipe when the worker dies.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise AssertionError(f"worker exited: {worker.log()}")
        children = children_named(worker.process.pid, "tesseract")
        if any(child.cpu_s >= 1.0 for child in children):
            return children
        time.sleep(0.1)
    raise AssertionError(f"no tesseract child in {timeout_s}s: {worker.log()}")


def wait_until_gone(procs: list[Proc], timeout_s: float) -> list[Proc]:
    """The processes of ``procs`` still alive after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


async def test_kill_9_of_the_worker_kills_its_tesseract_children(
    settings: Settings, tmp_path: Path
) -> None:
    scan = slow_scan(tmp_path / "tiled.png")
    worker = WorkerProcess(settings, "children", TESSERACT_WORKERS="1")
    children: list[Proc] = []
    try:
        worker.wait_ready()
        await publish_requests(settings, [build_request(scan, RequestOptions())])
        children = wait_for_children(worker, 120)
        worker.signal(signal.SIGKILL)
        assert worker.wait(10) == -signal.SIGKILL
        survivors = wait_until_gone(children, 5)
        assert not survivors, f"tesseract outlived its worker: {survivors}"
    finally:
        worker.stop()
        for child in children:  # a failed run must not leave them burning the CPU
            if alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
