"""A background sampler for the GPU benchmarks: GPU load and clocks, CPU per process.

Every ``interval_s`` it records the GPU's utilisation, SM clock and power (NVML, when
``pynvml`` is importable), the host's busy cores (``/proc/stat``) and the cores used by
the processes under the watched roots (``/proc/<pid>/stat``) in three roles:
``engine_core`` (vLLM titles it ``VLLM::EngineCore``), ``frontend`` (``medocr worker``
or the raw benchmark's own process, where requests are prepared) and ``other`` (broker,
publisher), plus whatever ``extra`` returns (the pipeline's engine gauges). Linux
only; what is missing is left out of the samples rather than guessed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def host_busy_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from the first line of /proc/stat."""
    text = _read("/proc/stat")
    if not text:
        return None
    fields = [int(x) for x in text.split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, comm, utime + stime ticks) for every process."""
    table: dict[int, tuple[int, str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        text = _read(f"/proc/{entry.name}/stat")
        if not text:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), comm, int(rest[11]) + int(rest[12]))
    return table


def role(pid: int, comm: str) -> str:
    """``engine_core``, ``frontend`` (worker or raw benchmark process) or ``other``."""
    if "EngineCore" in comm:
        return "engine_core"
    if comm.startswith("python"):
        args = (_read(f"/proc/{pid}/cmdline") or "").split("\0")
        if "--raw-child" in args or "worker" in args:
            return "frontend"
    return "other"


def descendants(table: dict[int, tuple[int, str, int]], roots: set[int]) -> set[int]:
    found = set(roots) & set(table)
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


class Sampler:
    """Samples in a daemon thread until ``stop()``; ``samples`` holds the records."""

    def __init__(
        self,
        roots: Callable[[], set[int]],
        interval_s: float = 0.25,
        extra: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self._roots = roots
        self._extra = extra
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.samples: list[dict[str, Any]] = []
        self._nvml: Any = None
        self._gpu: Any = None
        with contextlib.suppress(Exception):
            import pynvml  # type: ignore[import-not-found,unused-ignore]

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._gpu = pynvml.nvmlDeviceGetHandleByIndex(0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[dict[str, Any]]:
        """The samples so far; safe to call when ``start`` never ran (a failed start)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)
        return self.samples

    def _gpu_sample(self) -> dict[str, Any]:
        nvml, gpu = self._nvml, self._gpu
        if nvml is None:
            return {}
        with contextlib.suppress(Exception):
            return {
                "gpu_util": nvml.nvmlDeviceGetUtilizationRates(gpu).gpu,
                "sm_mhz": nvml.nvmlDeviceGetClockInfo(gpu, nvml.NVML_CLOCK_SM),
                "power_w": round(nvml.nvmlDeviceGetPowerUsage(gpu) / 1000, 1),
            }
        return {}

    def _run(self) -> None:
        last_host = host_busy_ticks()
        last_procs: dict[int, int] = {}
        last_t = time.time()
        while not self._stop.wait(self._interval_s):
            now = time.time()
            elapsed = max(now - last_t, 1e-6)
            sample: dict[str, Any] = {"t": round(now, 3), **self._gpu_sample()}
            host = host_busy_ticks()
            if host and last_host and host[1] > last_host[1]:
                cores = os.cpu_count() or 1
                share = (host[0] - last_host[0]) / (host[1] - last_host[1])
                sample["host_cores"] = round(share * cores, 2)
            last_host = host
            table = proc_table()
            roles: dict[str, float] = {}
            ticks: dict[int, int] = {}
            for pid in descendants(table, self._roots()):
                _, comm, used = table[pid]
                ticks[pid] = used
                if pid in last_procs:
                    cores_used = (used - last_procs[pid]) / TICKS / elapsed
                    key = role(pid, comm)
                    roles[key] = round(roles.get(key, 0.0) + cores_used, 2)
            sample["cores"] = roles
            if self._extra is not None:
                sample.update(self._extra())
            last_procs, last_t = ticks, now
            self.samples.append(sample)
