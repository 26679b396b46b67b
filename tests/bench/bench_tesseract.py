"""Benchmark: raw ``tesseract`` CLI vs the Tesseract engine vs the whole Kafka pipeline.

Runs, in one invocation and over the same pages at the same parallelism:

1. ``raw``: the ``tesseract`` CLI with its defaults (``-l kor+eng`` only) on each image
   file, N processes at a time, one OpenMP thread each; a multi-page TIFF gives one text
   per page, separated by form feeds.
2. ``engine``: ``TesseractEngine.recognize`` on every decoded page, no Kafka (isolates
   what the pipeline itself costs).
3. ``pipeline``: the embedded broker, every document published with ``medocr publish``'s
   library API, the worker (``run_worker``) with the Tesseract engine, and the results
   read back from the result topic.

Prints pages/s, the ratio to raw and the CER against the ground truth (overall and by
degradation), and writes the numbers as JSON. Usage::

    python tests/bench/bench_tesseract.py [--data DIR] [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Runnable as a script: the repository root holds consumers/, producers/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from consumers.engines.base import PageRequest
from consumers.engines.tesseract import TesseractEngine
from consumers.inputs import ImageLimits, Page, read_pages
from consumers.settings import DEFAULT_PROMPT, Settings, TesseractSettings
from schemas import OcrResult
from tests.support.cer import (
    DocumentCase,
    PageScore,
    default_data_dir,
    load_manifest,
    micro_cer,
    score_page,
)

LEVELS = ("clean", "mild", "hard")
DEFAULT_JSON = Path("bench-results/tesseract.json")


@dataclass
class RunResult:
    """One way of reading every page: its wall time and the text of each page."""

    name: str
    seconds: float
    texts: dict[str, list[str]] = field(default_factory=dict)  # doc id -> page texts

    def pages(self) -> int:
        return sum(len(texts) for texts in self.texts.values())

    def pages_per_s(self) -> float:
        return self.pages() / self.seconds

    def scores(self, cases: Sequence[DocumentCase]) -> dict[str, float]:
        by_level: dict[str, list[PageScore]] = {level: [] for level in LEVELS}
        every: list[PageScore] = []
        for case in cases:
            texts = self.texts.get(case.doc_id, [])
            for index, truth in enumerate(case.ground_truth):
                hypothesis = texts[index] if index < len(texts) else ""
                score = score_page(hypothesis, truth)
                by_level.setdefault(case.degradation, []).append(score)
                every.append(score)
        cer = {level: micro_cer(scores) for level, scores in by_level.items() if scores}
        return {"all": micro_cer(every), **cer}


async def run_raw(cases: Sequence[DocumentCase], workers: int, lang: str) -> RunResult:
    """The tesseract CLI with its defaults, ``workers`` processes at a time."""
    slots = asyncio.Semaphore(workers)
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    async def read(case: DocumentCase) -> tuple[str, list[str]]:
        async with slots:
            proc = await asyncio.create_subprocess_exec(
                "tesseract",
                str(case.path),
                "stdout",
                "-l",
                lang,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            stdout, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"tesseract failed on {case.path}: {stderr[-300:]!r}")
        # Pages of a multi-page TIFF are separated (not terminated) by a form feed.
        texts = stdout.decode("utf-8", errors="replace").split("\f")
        if len(texts) == case.pages + 1 and not texts[-1].strip():
            texts.pop()
        if len(texts) != case.pages:
            raise RuntimeError(f"{case.doc_id}: {len(texts)} texts, {case.pages} pages")
        return case.doc_id, texts

    started = time.perf_counter()
    texts = await asyncio.gather(*(read(case) for case in cases))
    return RunResult("raw tesseract", time.perf_counter() - started, dict(texts))


async def run_engine(
    cases: Sequence[DocumentCase], settings: TesseractSettings
) -> RunResult:
    """``TesseractEngine.recognize`` on every page, as many in flight as it asks for."""
    limits = ImageLimits()
    engine = TesseractEngine(settings)
    await engine.start()
    try:
        slots = asyncio.Semaphore(engine.capacity())

        async def read(case: DocumentCase) -> tuple[str, list[str]]:
            pages = await asyncio.to_thread(read_pages, case.path.read_bytes(), limits)
            texts = await asyncio.gather(*(read_page(case.doc_id, p) for p in pages))
            return case.doc_id, list(texts)

        async def read_page(doc_id: str, page: Page) -> str:
            async with slots:
                request = PageRequest(
                    doc_id, page.number, page.image, DEFAULT_PROMPT, 4096, 0.0, page.dpi
                )
                return (await engine.recognize(request)).text

        started = time.perf_counter()
        texts = await asyncio.gather(*(read(case) for case in cases))
        seconds = time.perf_counter() - started
    finally:
        await engine.close()
    return RunResult("engine only", seconds, dict(texts))


async def run_pipeline(cases: Sequence[DocumentCase], settings: Settings) -> RunResult:
    """Embedded broker, ``medocr publish``'s library API and the worker, to the end."""
    from consumers.local.broker import EmbeddedBroker
    from consumers.local.demo import demo_settings
    from consumers.runner import run_worker
    from producers.cli import PublishOptions, publish_command
    from producers.publisher import RequestOptions
    from tests.support.topics import create_topics

    results: dict[str, OcrResult] = {}
    with EmbeddedBroker() as broker:
        settings = demo_settings(settings, broker.bootstrap_servers)
        await create_topics(settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop))
        try:
            # The clock starts at the first publish: engine loaded, partitions held.
            ready_url = f"http://127.0.0.1:{settings.sidecar.port}/ready"
            await _wait_ready(httpx.AsyncClient(), ready_url, worker)
            started = time.perf_counter()
            async with settings.client() as client:
                status = await publish_command(
                    [case.path for case in cases],
                    client,
                    PublishOptions(
                        RequestOptions(source_system="medocr-bench"),
                        wait=True,
                        timeout_s=3600,
                    ),
                    out=io.StringIO(),  # the texts go to the CER, not the terminal
                    on_result=lambda result: _keep_first(results, result),
                )
            seconds = time.perf_counter() - started
        finally:
            stop.set()
            await worker
    if status != 0:
        failed = sorted(doc for doc, r in results.items() if r.status.value != "OK")
        raise RuntimeError(f"pipeline run ended with status {status}; failed: {failed}")
    texts = {
        doc: [page.text for page in sorted(r.pages, key=lambda page: page.page_number)]
        for doc, r in results.items()
    }
    return RunResult("pipeline", seconds, texts)


def _keep_first(results: dict[str, OcrResult], result: OcrResult) -> None:
    results.setdefault(result.document_id, result)  # at-least-once: duplicates happen


async def _wait_ready(
    client: httpx.AsyncClient, url: str, worker: asyncio.Task[None]
) -> None:
    async with client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if worker.done():
                worker.result()  # raises what stopped the worker
                raise RuntimeError("the worker stopped before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the worker was not ready within 120 s ({url})")


def report(
    cases: Sequence[DocumentCase], runs: Sequence[RunResult], workers: int
) -> dict[str, object]:
    """Print the table and return the same numbers for the JSON file."""
    raw = runs[0]
    print(f"\n{len(cases)} documents, {raw.pages()} pages, {workers} processes")
    header = f"{'':14} {'pages/s':>8} {'x raw':>6} {'CER':>7}"
    print(header + "".join(f" {level:>7}" for level in LEVELS))
    summary: dict[str, object] = {}
    for run in runs:
        cer = run.scores(cases)
        ratio = run.pages_per_s() / raw.pages_per_s()
        line = f"{run.name:14} {run.pages_per_s():8.3f} {ratio:6.3f} {cer['all']:7.4f}"
        levels = "".join(f" {cer.get(level, float('nan')):7.4f}" for level in LEVELS)
        print(line + levels)
        summary[run.name] = {
            "seconds": round(run.seconds, 3),
            "pages": run.pages(),
            "pages_per_s": round(run.pages_per_s(), 4),
            "ratio_to_raw": round(ratio, 4),
            "cer": {key: round(value, 5) for key, value in cer.items()},
        }
    return summary


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="raw tesseract vs engine vs pipeline")
    parser.add_argument("--data", type=Path, default=None, help="data set folder")
    parser.add_argument("--workers", type=int, default=0, help="processes (0 = CPUs)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results file")
    parser.add_argument("--skip-pipeline", action="store_true", help="no Kafka run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    data_dir = args.data or default_data_dir()
    # the tesseract CLI reads images only (the bundled samples also hold a PDF and DICOM)
    cases = [c for c in load_manifest(data_dir) if c.format in ("png", "jpeg", "tiff")]
    settings = Settings()
    tesseract = settings.tesseract.model_copy(update={"workers": args.workers})
    settings = settings.model_copy(update={"tesseract": tesseract})
    workers = tesseract.worker_count()
    # Other work on the machine skews the ratio: the load average says how much there was.
    load_at_start = os.getloadavg()[0]
    print(f"data: {data_dir}; load average at start: {load_at_start:.2f}")

    runs = [await run_raw(cases, workers, tesseract.languages)]
    print(f"raw tesseract done in {runs[-1].seconds:.1f} s")
    runs.append(await run_engine(cases, tesseract))
    print(f"engine only done in {runs[-1].seconds:.1f} s")
    if not args.skip_pipeline:
        runs.append(await run_pipeline(cases, settings))
        print(f"pipeline done in {runs[-1].seconds:.1f} s")
    summary = report(cases, runs, workers)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "data": str(data_dir),
                "workers": workers,
                "psm": tesseract.psm,
                "preprocess": tesseract.preprocess,
                "load_average_at_start": load_at_start,
                "load_average_at_end": os.getloadavg()[0],
                "runs": summary,
            },
            indent=2,
        )
    )
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
