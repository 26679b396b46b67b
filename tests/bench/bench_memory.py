"""Benchmark: the worker's peak memory on a 500-page PDF and a 100-frame DICOM.

A real worker (``run_worker``, burst mode) in a child process, against the embedded
broker, reads each document the way it reads any: decoders, page budget, the
``DocumentRecognizer`` and the engine. Printed for each case: the worker process's peak
RSS (``VmHWM``) and that of each of its children (the PDF renderer pool, the
multiprocessing resource tracker, tesseract), sampled from ``/proc`` every 0.1 s, and
what the result said.

Documents, built here, under the 20 MiB document limit: a ``--pdf-pages``-page PDF
of distinct A4 pages (bilevel 150 dpi scans through Pillow's PDF writer, drawn by the
decoder at its 300 dpi: 2480 x 3508 px RGB each) and a ``--dicom-frames``-frame
Secondary Capture of the same pages (8-bit gray, 150 dpi, JPEG-LS lossless). Cases, each a fresh
worker: a one-page PNG (the worker's own footprint), the PDF and the DICOM with
``OCR_MAX_PAGES`` (and ``OCR_MAX_DOCUMENT_PIXELS``, which 500 A4 pages at 300 dpi
exceed) raised to allow them, and both with the defaults, where they are refused.

Engine: ``--engine standin`` (default) runs the Tesseract engine's own page preparation
in the worker (PGM bytes, as it hands tesseract) and then waits ``--page-s`` instead of
running tesseract, with Tesseract's capacity and slots: the worker's memory as with
Tesseract, in minutes rather than the hour 600 real pages take on two cores.
``--engine tesseract`` runs the real one. Usage::

    python tests/bench/bench_memory.py [--pdf-pages 500] [--dicom-frames 100]
        [--engine standin|tesseract] [--page-s 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Runnable as a script: the repository root holds consumers/, producers/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pydicom.uid import JPEGLSLossless

from consumers.engines import EngineHealth, PageListener, PageRequest, PageResult
from consumers.engines.tesseract import prepare_page
from consumers.local.broker import EmbeddedBroker
from consumers.settings import Settings
from tests.support.dicoms import secondary_capture
from tests.support.kafka import kafka_env, publish_requests, read_outputs
from tests.support.pdfs import image_pdf
from tests.support.records import scan_request
from tests.support.scans import encode
from tests.support.topics import case_settings

SCAN_DPI = 150
A4_150_DPI = (1240, 1754)
# What a 500-page PDF needs besides OCR_MAX_PAGES: 500 A4 pages drawn at 300 dpi are
# 4.3e9 px (the document bound is 1e9) and take longer than the 60 s a document may
# spend decoding (OCR_DECODE_TIMEOUT_S counts every page's decode, ~0.1 s each).
RAISED = {
    "OCR_MAX_PAGES": "1000",
    "OCR_MAX_DOCUMENT_PIXELS": "10000000000",
    "OCR_DECODE_TIMEOUT_S": "600",
}


# --- the documents --------------------------------------------------------------------


@functools.cache
def _lines() -> Image.Image:
    """~45 lines of bilevel text on an A4 page at 150 dpi (drawn once)."""
    page = Image.new("L", A4_150_DPI, 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=22)
    for row in range(45):
        draw.text(
            (90, 140 + row * 34),
            f"line {row:02d}: Hemoglobin 13.{row % 10} g/dL "
            f"ref 12.0-16.0 WBC {4 + row % 7}.2 x10^3/uL",
            fill=0,
            font=font,
        )
    return page.point(lambda v: 0 if v < 128 else 255)  # a bilevel scan's pixels


def scan_page(number: int) -> Image.Image:
    """The page of lines with its own number on top: every page distinct."""
    page = _lines().copy()
    font = ImageFont.load_default(size=40)
    ImageDraw.Draw(page).text((90, 60), f"Page {number:04d}", fill=0, font=font)
    return page


def many_page_pdf(count: int) -> bytes:
    """Bilevel A4 pages at 150 dpi, as a scanner's PDF holds them (~32 KB a page)."""
    return image_pdf([scan_page(n).convert("1") for n in range(count)], SCAN_DPI)


def many_frame_dicom(count: int) -> bytes:
    """A multi-frame Secondary Capture of the pages, JPEG-LS lossless (~60 KB a
    frame: JPEG baseline of text takes ~300 KB, over the document limit at 100)."""
    frames = [scan_page(n) for n in range(count)]
    ds = dcmread(io.BytesIO(secondary_capture(frames, dpi=SCAN_DPI)))
    ds.compress(JPEGLSLossless)
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


# --- the worker child: a real worker with a stand-in engine, and what it measures ----


class StandInEngine:
    """Tesseract's page preparation in the worker, a wait instead of tesseract."""

    name = "standin"
    model = "tesseract prepare_page + sleep"

    def __init__(self, workers: int, page_s: float) -> None:
        self._workers = workers
        self._page_s = page_s
        self._pool = ThreadPoolExecutor(workers)
        self._slots = asyncio.Semaphore(workers)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._pool.shutdown()

    def capacity(self) -> int:
        return 2 * self._workers  # as TesseractEngine

    def health(self) -> EngineHealth:
        return EngineHealth(loaded=True, gpu_available=False)

    async def recognize(
        self, page: PageRequest, on_event: PageListener | None = None
    ) -> PageResult:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self._pool, prepare_page, page.image, page.dpi, True, 1.0
        )
        async with self._slots:
            await asyncio.sleep(self._page_s)
        return PageResult(text=f"page {page.page_number}: {len(prepared.pgm)} bytes")


class PeakSampler:
    """The peak RSS of this process and of each descendant, from /proc, and this
    process's RSS over time (a leak grows; pages in flight come and go)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.peaks_kb: dict[int, tuple[str, int]] = {}
        self.rss_kb: list[int] = []  # this process's, each sample
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()

    def sample(self) -> None:
        self.rss_kb.append(_status_kb(os.getpid(), "VmRSS") or 0)
        for pid in [os.getpid(), *_descendants(os.getpid())]:
            peak = _status_kb(pid, "VmHWM")
            if peak is not None:
                name = "worker" if pid == os.getpid() else _label(pid)
                old = self.peaks_kb.get(pid, (name, 0))[1]
                self.peaks_kb[pid] = (name, max(old, peak))


def _descendants(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _label(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    line = b" ".join(argv).decode(errors="replace")
    if "resource_tracker" in line:
        return "resource-tracker"
    if "spawn_main" in line:
        return "pdf-renderer"
    return Path(argv[0].decode(errors="replace")).name or "?"


def _tenths(samples: list[int]) -> list[float]:
    """The largest of each tenth of ``samples`` (kB), in MB."""
    cuts = [len(samples) * i // 10 for i in range(11)]
    return [
        max(samples[a : max(b, a + 1)] or [0]) / 1024
        for a, b in itertools.pairwise(cuts)
    ]


def worker_main(engine_name: str, page_s: float) -> None:
    """Run a burst worker from the environment; print its peaks as one JSON line."""
    from consumers.runner import run_worker

    settings = Settings()
    workers = settings.tesseract.workers or os.cpu_count() or 1
    engine = StandInEngine(workers, page_s) if engine_name == "standin" else None
    started = time.monotonic()
    with PeakSampler() as sampler:
        asyncio.run(run_worker(settings, asyncio.Event(), burst=True, engine=engine))
    peaks = [
        {"pid": pid, "name": name, "peak_mb": kb / 1024}
        for pid, (name, kb) in sampler.peaks_kb.items()
    ]
    tenths = _tenths(sampler.rss_kb)
    elapsed_s = time.monotonic() - started
    print(json.dumps({"elapsed_s": elapsed_s, "peaks": peaks, "tenths_mb": tenths}))


# --- the parent: broker, documents, one worker per case -------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    documents: dict[str, tuple[Callable[[], bytes], str]]  # id -> (bytes, type)
    env: dict[str, str]


@dataclass(frozen=True)
class Peak:
    pid: int
    name: str
    peak_mb: float


async def publish_case(case: Case, bootstrap: str) -> tuple[Settings, dict[str, int]]:
    """The case's own topics and group, its documents published; their sizes."""
    settings = await case_settings(bootstrap, partitions=2)
    sizes = {}
    for doc_id, (build, content_type) in case.documents.items():
        raw = build()
        sizes[doc_id] = len(raw)
        await publish_requests(settings, [scan_request(doc_id, raw, content_type)])
    return settings, sizes


@dataclass(frozen=True)
class Measured:
    elapsed_s: float
    peaks: list[Peak]
    tenths_mb: list[float]  # the worker's largest RSS in each tenth of its run


def run_worker_child(
    case: Case, settings: Settings, args: argparse.Namespace
) -> Measured:
    """A burst worker in a child process: its time and the peaks it measured."""
    env = {**os.environ, **kafka_env(settings.kafka), "PORT": "0", "HOST": "127.0.0.1"}
    env.update(case.env)
    argv = [sys.executable, __file__, "--worker", "--engine", args.engine]
    done = subprocess.run(
        [*argv, "--page-s", str(args.page_s)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{case.name}: worker exit {done.returncode}: {done.stderr}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    peaks = [Peak(p["pid"], p["name"], p["peak_mb"]) for p in measured["peaks"]]
    return Measured(float(measured["elapsed_s"]), peaks, measured["tenths_mb"])


async def read_results(settings: Settings, sizes: dict[str, int]) -> dict[str, str]:
    outputs = await read_outputs(settings, results=len(sizes))
    said = {}
    for result in outputs.results:
        code = f" {result.error_code}" if result.error_code else ""
        said[result.document_id] = (
            f"{sizes[result.document_id] / 1e6:.1f} MB: {result.status.value}{code},"
            f" {result.page_count} pages"
        )
    return said


def report(case: Case, measured: Measured, results: dict[str, str]) -> None:
    print(f"\n{case.name}: {measured.elapsed_s:.0f} s")
    for doc_id, said in sorted(results.items()):
        print(f"  {doc_id} ({said})")
    peaks = sorted(measured.peaks, key=lambda p: (p.name != "worker", p.name, p.pid))
    for peak in peaks:
        print(f"  {peak.name:<17} pid {peak.pid:>7}  peak RSS {peak.peak_mb:7.1f} MB")
    tenths = " ".join(f"{mb:.0f}" for mb in measured.tenths_mb)
    print(f"  worker RSS, largest in each tenth of the run (MB): {tenths}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pdf-pages", type=int, default=500)
    parser.add_argument("--dicom-frames", type=int, default=100)
    parser.add_argument("--engine", choices=["standin", "tesseract"], default="standin")
    parser.add_argument("--page-s", type=float, default=0.05)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.engine, args.page_s)
        return
    pdf = (lambda: many_page_pdf(args.pdf_pages), "application/pdf")
    dicom = (lambda: many_frame_dicom(args.dicom_frames), "application/dicom")
    png = (lambda: encode(scan_page(0), "PNG", dpi=(SCAN_DPI, SCAN_DPI)), "image/png")
    cases = [
        Case("one-page PNG (the worker's own footprint)", {"png": png}, RAISED),
        Case(f"{args.pdf_pages}-page PDF, limits raised", {"pdf": pdf}, RAISED),
        Case(
            f"{args.dicom_frames}-frame DICOM, limits raised", {"dicom": dicom}, RAISED
        ),
        Case("both with the default limits", {"pdf": pdf, "dicom": dicom}, {}),
    ]
    print(
        f"engine {args.engine} (page {args.page_s} s), {os.cpu_count()} CPUs;"
        f" raised: {RAISED}"
    )
    with EmbeddedBroker() as broker:
        for case in cases:
            settings, sizes = asyncio.run(publish_case(case, broker.bootstrap_servers))
            measured = run_worker_child(case, settings, args)
            report(case, measured, asyncio.run(read_results(settings, sizes)))


if __name__ == "__main__":
    main()
