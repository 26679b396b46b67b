"""Benchmark: the PDF decoder's pages/s against poppler's ``pdftoppm``, and the renderer
pool against PDFium in-process behind one lock.

Pages: the scans of ``../shared/data/docs-public`` (each document one image PDF at its
own resolution, as a scanner writes them), else pages drawn here (printed: which). Every
page is rendered at the same DPI (300, the decoder's default) by:

- ``pdftoppm -r DPI [-gray]``, pixels to a pipe this process reads: one process per
  document, one at a time and then ``N`` at a time;
- the decoder (``open_pdf`` + ``page(i)``, pixels as PIL images) over a
  ``LockedRenderer`` (PDFium in this process, one lock), from 1 and from ``N`` threads;
- the decoder over a ``ProcessRenderer`` of 1 child, and of ``N`` children (the
  worker's pool, ``N`` = its default size), from as many threads.

Each in RGB and in gray; ratios compare the same concurrency. Needs poppler-utils
(``apt-get install -y poppler-utils``): without ``pdftoppm`` only the lock-vs-pool part
runs, and the script says so. Usage::

    python tests/bench/bench_pdf.py [--dpi 300] [--pages 51] [--repeat 3] [--gray-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

# Runnable as a script: the repository root holds consumers/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageSequence

from consumers.inputs.base import ImageLimits
from consumers.inputs.pdf import open_pdf
from consumers.inputs.pdf_renderer import (
    LockedRenderer,
    PdfRenderer,
    ProcessRenderer,
    default_size,
)
from tests.support.cer import PUBLIC_DATA_DIR
from tests.support.pdfs import image_pdf

Corpus = list[tuple[bytes, int]]  # each document's bytes and page count
_In = TypeVar("_In")


def load_corpus(max_pages: int) -> tuple[str, Corpus]:
    """The scans as image PDFs, at most ``max_pages`` pages, and what they are."""
    scans = PUBLIC_DATA_DIR / "images"
    images = sorted(scans.glob("*")) if PUBLIC_DATA_DIR.is_dir() else []
    corpus: Corpus = []
    for path in images:
        with Image.open(path) as scan:
            frames = [frame.copy() for frame in ImageSequence.Iterator(scan)]
            dpi = float(scan.info.get("dpi", (150, 150))[0])
        frames = frames[: max_pages - sum(pages for _, pages in corpus)]
        if frames:
            corpus.append((image_pdf(frames, dpi), len(frames)))
    if corpus:
        return f"{PUBLIC_DATA_DIR} ({len(corpus)} scans as image PDFs)", corpus
    return "pages drawn here (../shared/data/docs-public is missing)", drawn_corpus(
        max_pages
    )


def drawn_corpus(max_pages: int) -> Corpus:
    from tests.gpu.doc_pages import make_page  # synthetic A4 pages at 200 dpi

    return [(image_pdf([make_page(i)], 200.0), 1) for i in range(max_pages)]


def run_decoder(
    renderer: PdfRenderer, corpus: Corpus, dpi: float, gray: bool, threads: int
) -> float:
    limits = ImageLimits(render_dpi=dpi)

    def decode(raw: bytes) -> int:
        document = open_pdf(raw, limits, renderer=renderer, grayscale=gray)
        try:
            return sum(
                document.page(i).image.width > 0 for i in range(document.page_count)
            )
        finally:
            document.close()

    return timed(lambda: pool_map(decode, [raw for raw, _ in corpus], threads))


def run_pdftoppm(paths: list[Path], dpi: float, gray: bool, procs: int) -> float:
    def render(path: Path) -> int:
        argv = ["pdftoppm", "-r", f"{dpi:g}", *(["-gray"] if gray else []), str(path)]
        done = subprocess.run(argv, capture_output=True, check=True)
        return len(done.stdout)

    return timed(lambda: pool_map(render, paths, procs))


def pool_map(func: Callable[[_In], int], inputs: list[_In], workers: int) -> int:
    with ThreadPoolExecutor(workers) as threads:
        return sum(threads.map(func, inputs))


def timed(work: Callable[[], int]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dpi", type=float, default=300.0)
    parser.add_argument("--pages", type=int, default=51)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gray-only", action="store_true")
    args = parser.parse_args()

    source, corpus = load_corpus(args.pages)
    pages = sum(count for _, count in corpus)
    n = default_size()
    pdftoppm = shutil.which("pdftoppm")
    print(f"data: {source}: {pages} pages in {len(corpus)} PDFs")
    print(
        f"dpi {args.dpi:g}; cpus {os.cpu_count()}; pool size N={n}; "
        f"load average {os.getloadavg()[0]:.2f} (a busy host slows every row)"
    )
    if pdftoppm is None:
        print(
            "pdftoppm: NOT FOUND - install poppler-utils (apt-get install -y "
            "poppler-utils); only the lock-vs-pool comparison runs"
        )
    else:
        version = subprocess.run(["pdftoppm", "-v"], capture_output=True, text=True)
        print(f"pdftoppm: {pdftoppm} ({version.stderr.splitlines()[0]})")

    locked = LockedRenderer()
    pool_1 = ProcessRenderer(1)
    pool_n = ProcessRenderer(n)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for number, (raw, _) in enumerate(corpus):
            paths.append(Path(folder) / f"doc-{number}.pdf")
            paths[-1].write_bytes(raw)
        rows: dict[tuple[str, str, int], float] = {}
        modes = [True] if args.gray_only else [False, True]
        try:
            for renderer in (pool_1, pool_n):  # children start outside the clock
                run_decoder(renderer, corpus[:n], args.dpi, True, n)
            for gray in modes:
                mode = "gray" if gray else "rgb"
                for _ in range(args.repeat):
                    for threads in (1, n):
                        key = ("lock", mode, threads)
                        run = run_decoder(locked, corpus, args.dpi, gray, threads)
                        rows[key] = min(rows.get(key, run), run)
                    for threads, pool in ((1, pool_1), (n, pool_n)):
                        key = ("pool", mode, threads)
                        run = run_decoder(pool, corpus, args.dpi, gray, threads)
                        rows[key] = min(rows.get(key, run), run)
                    if pdftoppm is not None:
                        for procs in (1, n):
                            key = ("pdftoppm", mode, procs)
                            run = run_pdftoppm(paths, args.dpi, gray, procs)
                            rows[key] = min(rows.get(key, run), run)
        finally:
            locked.close()
            pool_1.close()
            pool_n.close()
    report(rows, pages, n, modes, args.repeat)
    return 0


def report(
    rows: dict[tuple[str, str, int], float],
    pages: int,
    n: int,
    modes: list[bool],
    repeat: int,
) -> None:
    print(f"\npages/s (best of {repeat}; higher is better)")
    print(
        f"{'mode':<5} {'at once':>7} {'pdftoppm':>9} {'lock':>7} {'pool':>7} "
        f"{'pool/pdftoppm':>14} {'pool/lock':>10}"
    )
    for gray in modes:
        mode = "gray" if gray else "rgb"
        for width in (1, n):
            rate = {
                name: pages / rows[(name, mode, width)]
                for name in ("pdftoppm", "lock", "pool")
                if (name, mode, width) in rows
            }
            vs_poppler = (
                f"{rate['pool'] / rate['pdftoppm']:.2f}" if "pdftoppm" in rate else "-"
            )
            print(
                f"{mode:<5} {width:>7} {rate.get('pdftoppm', 0):>9.1f} "
                f"{rate['lock']:>7.1f} {rate['pool']:>7.1f} {vs_poppler:>14} "
                f"{rate['pool'] / rate['lock']:>10.2f}"
            )
    print(
        "'at once': documents in flight (threads; pdftoppm: processes); the lock "
        "serialises its threads."
    )


if __name__ == "__main__":
    sys.exit(main())
