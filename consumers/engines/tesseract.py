"""Tesseract through its command line: one short-lived process per page.

At most ``worker_count()`` tesseract processes run at once, each limited to one OpenMP
thread, so the processes share the cores instead of oversubscribing them. The page is
prepared (gray, red stamps dropped, low-resolution scans cleaned, and enlarged when
``TESSERACT_LOW_RES_SCALE`` says so) in a thread pool so the event loop never does
pixel work, and reaches tesseract on stdin as an uncompressed PGM. Tesseract prints a
page's text only when it is done: a listener gets it as one delta.
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from consumers.engines.base import (
    EngineHealth,
    PageListener,
    PageRequest,
    PageResult,
    TextDelta,
)
from consumers.errors import (
    ConfigurationError,
    EngineDeadError,
    PageFailedError,
    TransientError,
)
from consumers.settings import TesseractSettings

log = logging.getLogger(__name__)

# Low-resolution scans (about 100 dpi) are usually the noisiest ones too: they get a
# median filter (salt-and-pepper noise), a flat background (uneven light, low contrast)
# and an optional upscale (TESSERACT_LOW_RES_SCALE). Low means a long side below that
# of an A4 page at 120 dpi, unless the file states at least 130 dpi (a small but sharp
# crop); a stated resolution alone is not trusted, 72 is a common default. On
# docs-public "hard" pages: CER 0.82 cleaned only, 0.79 at 1.25x, 0.74 at 1.5x, 0.72 at
# 2x; but tesseract time on those pages grows by 30%, 85% and 145%.
LOW_RESOLUTION_DPI = 130
SMALL_PAGE_LONG_SIDE_PX = 1400
# A resolution outside this range is a broken header: tesseract estimates its own.
_DPI_RANGE = (50, 1200)
_VERSION = re.compile(r"tesseract\s+v?(\d+(?:\.\d+)*)", re.IGNORECASE)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Callable[..., int] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # a libc without prctl: children may outlive us
        return None
    # prctl is variadic: every argument must be passed as the unsigned long it reads
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    typed: Callable[..., int] = prctl
    return typed


_PRCTL = _load_prctl()


def die_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies.

    Linux only (``None`` elsewhere): the kernel sends the signal when the *thread* that
    forked the child exits, and asyncio forks from the event-loop thread, which lives as
    long as the worker. The function runs in the forked child before ``exec``, where
    another thread's locks may be frozen: it only calls prctl and getppid, nothing that
    imports, logs or allocates outside the GIL. (Python 3.12's warning about forking a
    threaded process is raised by ``os.fork``, not by ``subprocess``'s ``preexec_fn``.)
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the worker died before prctl ran: no signal
            os._exit(1)

    return in_child


@dataclass(frozen=True)
class PreparedPage:
    pgm: bytes
    dpi: int | None


def prepare_page(
    image: Image.Image, stated_dpi: float | None, preprocess: bool, low_res_scale: float
) -> PreparedPage:
    """The page as the PGM bytes tesseract reads on stdin (runs in the thread pool)."""
    gray = _to_gray(image) if preprocess else image.convert("L")
    dpi = _dpi(stated_dpi)
    if preprocess and _is_low_resolution(gray, dpi):
        gray = _flatten_background(gray.filter(ImageFilter.MedianFilter(3)))
        if low_res_scale > 1.0:
            size = (
                round(gray.width * low_res_scale),
                round(gray.height * low_res_scale),
            )
            gray = gray.resize(size, Image.Resampling.BICUBIC)
            dpi = round(dpi * low_res_scale) if dpi is not None else None
    buffer = io.BytesIO()
    gray.save(buffer, format="PPM")  # mode L is written as binary PGM (P5)
    return PreparedPage(buffer.getvalue(), dpi)


def _is_low_resolution(gray: Image.Image, dpi: int | None) -> bool:
    small = max(gray.size) < SMALL_PAGE_LONG_SIDE_PX
    return small and (dpi is None or dpi < LOW_RESOLUTION_DPI)


def _to_gray(image: Image.Image) -> Image.Image:
    # The red channel keeps black print black but turns red seals nearly white, and
    # seals are graphics the ground truth leaves out.
    if image.mode == "RGB":
        return image.getchannel("R")
    return image if image.mode == "L" else image.convert("L")


def _flatten_background(gray: Image.Image) -> Image.Image:
    """Divide by the paper's brightness: uneven light and low contrast become even."""
    thumb = (max(1, gray.width // 8), max(1, gray.height // 8))
    small = gray.resize(thumb, Image.Resampling.BILINEAR)
    paper = small.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(3))
    paper = paper.resize(gray.size, Image.Resampling.BILINEAR)
    ink = np.asarray(gray, dtype=np.float32)
    light = np.maximum(np.asarray(paper, dtype=np.float32), 1.0)
    return Image.fromarray(np.clip(ink * 255.0 / light, 0, 255).astype(np.uint8))


def _dpi(stated: float | None) -> int | None:
    """The page's dpi for tesseract, or None to let it estimate (a broken header)."""
    if stated is None:
        return None
    try:
        value = round(stated)
    except (ValueError, OverflowError):  # NaN, infinity
        return None
    return value if _DPI_RANGE[0] <= value <= _DPI_RANGE[1] else None


class TesseractEngine:
    """Korean + English OCR with the ``tesseract`` binary, a bounded process count."""

    name = "tesseract"

    def __init__(self, settings: TesseractSettings) -> None:
        self._settings = settings
        self._workers = settings.worker_count()
        self.model = f"tesseract {settings.languages}"
        self._binary: str | None = None
        self._slots = asyncio.Semaphore(self._workers)
        self._pool: ThreadPoolExecutor | None = None
        self._running: set[asyncio.subprocess.Process] = set()
        # The children inherit the environment (PATH, TESSDATA_PREFIX); one OpenMP
        # thread each, because the parallelism is the number of processes.
        self._env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    @property
    def running_processes(self) -> int:
        """Tesseract processes alive right now (never above the worker count)."""
        return len(self._running)

    async def start(self) -> None:
        binary = shutil.which("tesseract")
        if binary is None:
            raise ConfigurationError(
                "OCR_ENGINE=tesseract needs the tesseract binary on PATH "
                "(apt-get install tesseract-ocr tesseract-ocr-kor)."
            )
        version = await self._read_version(binary)
        wanted = set(self._settings.languages.split("+"))
        missing = wanted - await self._languages(binary)
        if missing:
            raise ConfigurationError(
                f"tesseract has no traineddata for {'+'.join(sorted(missing))} "
                "(apt-get install tesseract-ocr-kor, or set TESSERACT_LANG)."
            )
        self._binary = binary
        self.model = f"tesseract {version} {self._settings.languages}"
        # Threads, not processes: Pillow and numpy release the GIL for the pixel work,
        # and a process pool would copy every page through a pipe twice.
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="page-prep")
        log.info("tesseract engine ready: %s, %d processes", self.model, self._workers)

    async def close(self) -> None:
        for proc in list(self._running):
            if proc.returncode is None:
                proc.kill()
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        self._binary = None

    def capacity(self) -> int:
        # Twice the processes: while a page is in tesseract the next one is prepared.
        return 2 * self._workers

    def health(self) -> EngineHealth:
        loaded = self._binary is not None
        return EngineHealth(loaded=loaded, gpu_available=False, detail=self.model)

    async def recognize(
        self, page: PageRequest, on_event: PageListener | None = None
    ) -> PageResult:
        if self._binary is None or self._pool is None:
            raise EngineDeadError("the tesseract engine is not started")
        started = time.perf_counter()
        prepared = await asyncio.get_running_loop().run_in_executor(
            self._pool,
            prepare_page,
            page.image,
            page.dpi,
            self._settings.preprocess,
            self._settings.low_res_scale,
        )
        async with self._slots:
            stdout = await self._run(self._binary, prepared, page)
        text = stdout.decode("utf-8", errors="replace").replace("\f", "").strip()
        if on_event is not None and text:
            on_event(TextDelta(text, attempt=1))
        return PageResult(
            text=text,
            token_count=len(text.split()),
            engine_s=time.perf_counter() - started,
            finish_reason="stop",
        )

    def _command(self, binary: str, dpi: int | None) -> list[str]:
        command = [binary, "stdin", "stdout", "-l", self._settings.languages]
        command += ["--psm", str(self._settings.psm)]
        # Tesseract re-reads every doubtful line as white-on-black; forms have no such
        # text, and skipping it saves about 8% of the CPU at the same CER.
        command += ["-c", "tessedit_do_invert=0"]
        return command + (["--dpi", str(dpi)] if dpi is not None else [])

    async def _run(
        self, binary: str, prepared: PreparedPage, page: PageRequest
    ) -> bytes:
        timeout_s = self._settings.page_timeout_s
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(binary, prepared.dpi),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                preexec_fn=die_with_this_process(),
            )
        except FileNotFoundError as exc:
            raise EngineDeadError(f"tesseract binary is gone: {binary}") from exc
        except OSError as exc:
            raise TransientError(f"cannot start tesseract: {exc.strerror}") from exc
        self._running.add(proc)
        try:
            communicate = proc.communicate(prepared.pgm)
            async with asyncio.timeout(timeout_s):  # not wait_for: see threads.py
                stdout, stderr = await communicate
        except TimeoutError:
            raise PageFailedError(
                f"tesseract did not finish page {page.page_number} "
                f"within {timeout_s:g} s (TESSERACT_PAGE_TIMEOUT_S)"
            ) from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            self._running.discard(proc)
        if proc.returncode != 0:
            raise PageFailedError(
                f"tesseract failed on page {page.page_number}: "
                f"{_describe_exit(proc.returncode, stderr)}"
            )
        return stdout

    async def _read_version(self, binary: str) -> str:
        output = await self._probe(binary, "--version")
        match = _VERSION.search(output)
        if match is None:
            raise ConfigurationError(f"cannot read the tesseract version from {binary}")
        return match.group(1)

    async def _languages(self, binary: str) -> set[str]:
        output = await self._probe(binary, "--list-langs")
        return {line.strip() for line in output.splitlines()[1:] if line.strip()}

    async def _probe(self, binary: str, flag: str) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                binary,
                flag,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env,
                preexec_fn=die_with_this_process(),
            )
            output, _ = await asyncio.wait_for(proc.communicate(), 30)
        except (OSError, TimeoutError) as exc:
            raise ConfigurationError(f"cannot run {binary} {flag}: {exc}") from exc
        if proc.returncode != 0:
            raise ConfigurationError(f"{binary} {flag} exited with {proc.returncode}")
        return output.decode("utf-8", errors="replace")


def _describe_exit(returncode: int | None, stderr: bytes) -> str:
    if returncode is not None and returncode < 0:
        reason = f"killed by {signal.Signals(-returncode).name}"
    else:
        reason = f"exit status {returncode}"
    detail = stderr.decode("utf-8", errors="replace").strip().splitlines()
    return f"{reason}: {detail[-1][:200]}" if detail else reason
