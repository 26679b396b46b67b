"""A scriptable engine beside the protocol, for tests of the worker's semantics
(batching, commits, errors) here and in code built on medocr.

It does no OCR: it reports each page's size, so tests can tell pages apart, and it can be
told to be slow, fail transiently, fail a page for good, cut a page short (``TRUNCATED``,
finish reason ``length``), or die. A listener gets the text word by word; a page in
``restarts`` first streams a loop it then throws away, as an engine's quality retry
does. Its token counts are plausible, not real: a token per word of text, and for the
prompt a token per word plus one per 28x28 px of the page (as Qwen2-VL sees an image),
unless ``prompt_tokens`` fixes the count.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from consumers.engines import (
    EngineHealth,
    PageListener,
    PageRequest,
    PageResult,
    StreamRestarted,
    TextDelta,
)
from consumers.errors import EngineBusyError, EngineDeadError, PageFailedError
from schemas import PageStatus

PATCH_PX = 28  # one visual token per 28x28 px, as Qwen2-VL counts an image


@dataclass
class FakeEngine:
    name: str = "fake"
    model: str = "fake-1"
    delay_s: float = 0.0
    slow: dict[str, float] = field(default_factory=dict)  # document_id -> delay
    transient_failures: Counter[str] = field(default_factory=Counter)  # doc id -> count
    bad_pages: set[tuple[str, int]] = field(default_factory=set)
    restarts: set[tuple[str, int]] = field(default_factory=set)  # retried once
    truncated: set[tuple[str, int]] = field(default_factory=set)  # stop at max_tokens
    prompt_tokens: int | None = None  # every page's prompt count (None: estimated)
    dead_on: set[str] = field(default_factory=set)
    gates: dict[str, asyncio.Event] = field(
        default_factory=dict
    )  # doc waits for its gate
    capacity_pages: int = 8
    loaded: bool = False
    calls: list[tuple[str, int]] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0

    async def start(self) -> None:
        self.loaded = True

    async def close(self) -> None:
        self.loaded = False

    def capacity(self) -> int:
        return self.capacity_pages

    def health(self) -> EngineHealth:
        return EngineHealth(loaded=self.loaded, gpu_available=False)

    async def recognize(
        self, page: PageRequest, on_event: PageListener | None = None
    ) -> PageResult:
        doc = page.document_id
        self.calls.append((doc, page.page_number))
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await asyncio.sleep(self.slow.get(doc, self.delay_s))
            if doc in self.gates:
                await self.gates[doc].wait()
            if doc in self.dead_on:
                raise EngineDeadError("engine process gone")
            if self.transient_failures[doc] > 0:
                self.transient_failures[doc] -= 1
                raise EngineBusyError("try again")
            if (doc, page.page_number) in self.bad_pages:
                raise PageFailedError("page cannot be read")
            width, height = page.image.size
            text = f"{doc} p{page.page_number} {width}x{height}"
            attempts = 2 if (doc, page.page_number) in self.restarts else 1
            if on_event is not None:
                await _stream(text, attempts, on_event)
            cut = (doc, page.page_number) in self.truncated
            return PageResult(
                text=text,
                status=PageStatus.TRUNCATED if cut else PageStatus.OK,
                token_count=len(text.split()),
                attempts=attempts,
                finish_reason="length" if cut else "stop",
                prompt_tokens=self._prompt_tokens(page),
            )
        finally:
            self.concurrent -= 1

    def _prompt_tokens(self, page: PageRequest) -> int:
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        width, height = page.image.size
        patches = math.ceil(width / PATCH_PX) * math.ceil(height / PATCH_PX)
        return len(page.prompt.split()) + patches


async def _stream(text: str, attempts: int, on_event: PageListener) -> None:
    """The text in word-sized deltas, after a looping attempt when there are two."""
    if attempts == 2:
        on_event(TextDelta("____ ____", attempt=1))
        on_event(StreamRestarted(attempt=2, reason="REPETITIVE"))
    for piece in re.findall(r"\s*\S+", text):
        on_event(TextDelta(piece, attempt=attempts))
        await asyncio.sleep(0)  # as a real stream does, other pages run in between
