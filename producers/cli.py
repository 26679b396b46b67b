"""``medocr publish``: send scans as OCR requests and optionally wait for each result.

With ``--wait --progress`` the requests ask to stream, and each document's text is
printed as it is generated, a line at a time, each line prefixed with its document and
page (pages of one document, and documents of a folder, are read at once, so their
lines interleave); a page that starts over says so, a page's end says its status::

    … scan-01 p1 | 환자 성명: 홍길동
    … scan-01 p1 [retry: page 1 restarts: REPETITIVE]
    … scan-01 p1 | 환자 성명: 홍길동
    … scan-01 page 1/2 OK
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import FIRST_EXCEPTION
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from producers.client import OcrClient
from producers.publisher import RequestOptions, build_request, find_scans
from producers.replies import Reply
from schemas import DocumentStatus, OcrProgress, OcrRequest, OcrResult
from schemas.content_types import FORMAT_NAMES
from schemas.records import ProgressKind

# A page's text shown on its PAGE line when nothing of it was streamed (an older worker).
PAGE_TEXT_CHARS = 200


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


@dataclass(frozen=True)
class PublishOptions:
    """What ``medocr publish`` sends and whether (and how long) it waits."""

    request: RequestOptions = field(default_factory=RequestOptions)
    wait: bool = False
    timeout_s: float = 600.0
    show_progress: bool = False  # streams; needs an OcrClient opened with progress=True

    def request_options(self) -> RequestOptions:
        """What each request asks: to stream too when its progress is shown."""
        if self.show_progress and not self.request.stream:
            return replace(self.request, stream=True)
        return self.request


async def publish_command(
    paths: Sequence[Path],
    client: OcrClient,
    options: PublishOptions,
    *,
    out: TextIO = sys.stdout,
    on_result: Callable[[OcrResult], None] | None = None,
) -> int:
    """Exit status: 0 all published (and OK), 1 some FAILED, 2 results missing at timeout."""
    scans = find_scans(paths)
    if not scans:
        print(f"no {FORMAT_NAMES} files found", file=sys.stderr)
        return 2
    replies = await _publish(client, scans, options)
    print(
        f"published {len(replies)} documents to {client.request_topic}", file=sys.stderr
    )
    if not options.wait:
        return 0
    return await _wait(_first_per_id(replies), options, out, on_result)


async def _publish(
    client: OcrClient, scans: Sequence[Path], options: PublishOptions
) -> list[Reply | None]:
    """Every scan published (and acknowledged); its reply when waiting."""
    bar = ProgressBar(len(scans), "publishing")
    sends: list[asyncio.Task[Reply | None]] = []
    for path in scans:
        # Reading megabytes of scan off the loop lets the producer send the
        # previous record meanwhile instead of after the whole burst is read.
        request = await asyncio.to_thread(
            build_request, path, options.request_options()
        )
        sends.append(asyncio.create_task(_send(client, request, options.wait)))
        bar.advance()
    try:
        replies = await asyncio.gather(*sends)
    finally:
        for task in sends:
            task.cancel()
    bar.close()
    return replies


async def _send(client: OcrClient, request: OcrRequest, wait: bool) -> Reply | None:
    """Submit (a reply to wait on) or publish alone, once the broker has it."""
    if wait:
        return await client.submit(request)
    await (await client.publish(request))
    return None


def _first_per_id(replies: Sequence[Reply | None]) -> list[Reply]:
    """One reply per document id: a repeated id is answered by the same result."""
    firsts: dict[str, Reply] = {}
    for reply in replies:
        if reply is not None:
            firsts.setdefault(reply.document_id, reply)
    return list(firsts.values())


async def _wait(
    replies: list[Reply],
    options: PublishOptions,
    out: TextIO,
    also: Callable[[OcrResult], None] | None,
) -> int:
    failed = 0
    bar = ProgressBar(len(replies), "waiting")

    async def follow(reply: Reply) -> None:
        nonlocal failed
        if options.show_progress:
            printer = ProgressPrinter()
            async for progress in reply.events():
                for line in printer.lines(progress):
                    print(line, file=out, flush=True)
        result = await reply.result()
        failed += result.status is DocumentStatus.FAILED
        bar.advance()
        print(format_result(result), file=out, flush=True)
        if also is not None:
            also(result)

    follows = {asyncio.ensure_future(follow(reply)): reply for reply in replies}
    done: set[asyncio.Future[None]] = set()
    if follows:
        # A reader that died fails every reply at once: its error ends the wait.
        done, _ = await asyncio.wait(
            follows, timeout=options.timeout_s, return_when=FIRST_EXCEPTION
        )
    missing = sorted(reply.document_id for t, reply in follows.items() if t not in done)
    for task in follows:
        task.cancel()
    await asyncio.gather(*follows, return_exceptions=True)
    errors = [t.exception() for t in done if t.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    bar.close()
    if missing:
        print(
            f"timed out waiting for {len(missing)} results: {missing[:10]}",
            file=sys.stderr,
        )
        return 2
    return 1 if failed else 0


class ProgressPrinter:
    """One document's progress events as lines: streamed text a whole line at a time,
    each prefixed with the document and page, restarts, and each page's end."""

    def __init__(self) -> None:
        self._partial: dict[int, str] = {}  # a page's text after its last newline
        self._streamed: set[int] = set()  # pages with text shown

    def lines(self, event: OcrProgress) -> list[str]:
        number = event.page_number
        where = f"… {event.document_id} p{number}"
        if event.kind is ProgressKind.DELTA:
            *whole, self._partial[number] = (
                self._partial.get(number, "") + event.text
            ).split("\n")
            self._streamed.add(number)
            return [f"{where} | {line}" for line in whole]
        rest = self._partial.pop(number, "")  # the page's unfinished line
        if event.kind is ProgressKind.RESTART:  # ... is dropped with the attempt
            return [f"{where} [retry: page {number} restarts: {event.reason}]"]
        lines = [f"{where} | {rest}"] if rest else []
        return [*lines, format_progress(event, number not in self._streamed)]


def format_progress(progress: OcrProgress, with_text: bool = True) -> str:
    """A PAGE event: the page's status, and the start of its text if not streamed."""
    head = (
        f"… {progress.document_id} page {progress.page_number}/{progress.page_count} "
        f"{progress.status.value}"
    )
    return f"{head}: {progress.text[:PAGE_TEXT_CHARS]}" if with_text else head


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
