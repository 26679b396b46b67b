"""A scriptable engine beside the protocol, for tests of the worker's semantics
(batching, commits, errors) here and in code built on medocr.

It does no OCR: it reports each page's size, so tests can tell pages apart, and it can be
told to be slow, fail transiently, fail a page for good, or die.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from consumers.engines import EngineHealth, PageRequest, PageResult
from consumers.errors import EngineBusyError, EngineDeadError, PageFailedError


@dataclass
class FakeEngine:
    name: str = "fake"
    model: str = "fake-1"
    delay_s: float = 0.0
    slow: dict[str, float] = field(default_factory=dict)  # document_id -> delay
    transient_failures: Counter[str] = field(default_factory=Counter)  # doc id -> count
    bad_pages: set[tuple[str, int]] = field(default_factory=set)
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

    async def recognize(self, page: PageRequest) -> PageResult:
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
            return PageResult(text=f"{doc} p{page.page_number} {width}x{height}")
        finally:
            self.concurrent -= 1
