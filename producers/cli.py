"""``medocr publish``: send scans as OCR requests and optionally wait for each result."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from producers.kafka import (
    ProducerOptions,
    Topics,
    build_producer,
    build_waiter_consumer,
)
from producers.publisher import RequestOptions, ScanPublisher, build_request, find_scans
from producers.waiter import ResultWaiter
from schemas import DocumentStatus, OcrResult, PageProgress


class ProgressBar:
    """One line on stderr: a bar for many files, quiet when not a terminal."""

    def __init__(self, total: int, label: str, out: TextIO = sys.stderr) -> None:
        self._total = max(total, 1)
        self._label = label
        self._out = out
        self._done = 0
        self._live = out.isatty() and total > 1

    def advance(self) -> None:
        self._done += 1
        if self._live:
            filled = 30 * self._done // self._total
            self._out.write(
                f"\r{self._label} [{'#' * filled}{'.' * (30 - filled)}] "
                f"{self._done}/{self._total}"
            )
            self._out.flush()

    def close(self) -> None:
        if self._live:
            self._out.write("\n")


async def publish_command(
    paths: Sequence[Path],
    *,
    client_kwargs: Mapping[str, object],
    producer_options: ProducerOptions,
    topics: Topics,
    request_options: RequestOptions,
    wait: bool,
    timeout_s: float,
    show_progress: bool,
    out: TextIO = sys.stdout,
    on_result: Callable[[OcrResult], None] | None = None,
) -> int:
    """Exit status: 0 all published (and OK), 1 some FAILED, 2 results missing at timeout."""
    scans = find_scans(paths)
    if not scans:
        print("no PNG, JPEG or TIFF files found", file=sys.stderr)
        return 2
    waiter = None
    if wait:
        waiter = ResultWaiter(
            build_waiter_consumer(client_kwargs, producer_options.max_document_bytes),
            topics.results,
            topics.progress if show_progress else None,
        )
        await waiter.start()
    producer = build_producer(client_kwargs, producer_options)
    await producer.start()
    ids: list[str] = []
    try:
        publisher = ScanPublisher(producer, topics.requests)
        bar = ProgressBar(len(scans), "publishing")
        deliveries = []
        for path in scans:
            # Reading megabytes of scan off the loop lets the producer send the
            # previous record meanwhile instead of after the whole burst is read.
            request = await asyncio.to_thread(build_request, path, request_options)
            deliveries.append(await publisher.publish(request))
            ids.append(request.document_id)
            bar.advance()
        for delivery in deliveries:
            await delivery
        bar.close()
    finally:
        await producer.stop()
    print(f"published {len(ids)} documents to {topics.requests}", file=sys.stderr)
    if waiter is None:
        return 0
    try:
        return await _wait(waiter, ids, timeout_s, show_progress, out, on_result)
    finally:
        await waiter.stop()


async def _wait(
    waiter: ResultWaiter,
    ids: list[str],
    timeout_s: float,
    show_progress: bool,
    out: TextIO,
    also: Callable[[OcrResult], None] | None,
) -> int:
    failed = 0
    bar = ProgressBar(len(ids), "waiting")

    def on_result(result: OcrResult) -> None:
        nonlocal failed
        failed += result.status is DocumentStatus.FAILED
        bar.advance()
        print(format_result(result), file=out, flush=True)
        if also is not None:
            also(result)

    def on_progress(progress: PageProgress) -> None:
        print(
            f"… {progress.document_id} page {progress.page_number}/{progress.page_count} "
            f"{progress.status}: {progress.text[:200]}",
            file=out,
            flush=True,
        )

    missing = await waiter.wait(
        ids, timeout_s, on_result, on_progress if show_progress else None
    )
    bar.close()
    if missing:
        print(
            f"timed out waiting for {len(missing)} results: {sorted(missing)[:10]}",
            file=sys.stderr,
        )
        return 2
    return 1 if failed else 0


def format_result(result: OcrResult) -> str:
    head = (
        f"== {result.document_id}: {result.status.value} "
        f"({result.page_count} pages, {result.processing_time_ms} ms, {result.engine})"
    )
    if result.status is DocumentStatus.FAILED:
        head += f" {result.error_code}: {result.error_message}"
    return head + (
        "\n" + result.text.replace("\f", "\n--- page break ---\n")
        if result.text
        else ""
    )
