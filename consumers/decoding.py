"""When a document may decode: turns per decoder, a worker-wide pixel bound, a clock.

Pages are decoded a few at a time, not all at once: everything decoding together would
share the cores evenly, so every page would be ready late; in turns, the first pages
reach the engine early (an idle GPU starts on the first page it gets) and later ones
follow at the same rate. How many is worth running at once is the decoder's to say
(``InputDecoder.concurrency``: Pillow threads for a scan, a pool of renderer processes
for a PDF); the pixels being decoded together are the worker's to bound, whatever the
decoder, so a batch of large documents cannot decode its way out of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from consumers.errors import DecodeTimeoutError
from consumers.inputs import InputDecoder
from consumers.threads import run_abandonable

T = TypeVar("T")


class DecodeClock:
    """Seconds spent decoding one document, against its limit; waits do not count."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.spent_s = 0.0

    async def run(self, decode: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return await run_abandonable(
                decode, timeout_s=max(self.limit_s - self.spent_s, 0.0), name="decode"
            )
        except TimeoutError:
            raise DecodeTimeoutError(
                f"decoding took longer than {self.limit_s:g} s (OCR_DECODE_TIMEOUT_S)"
            ) from None
        finally:
            self.spent_s += time.monotonic() - started


class DecodeTurns:
    """Decodes in flight across the worker: at most ``decoder.concurrency`` at once of
    each decoder, and at most ``max_pixels`` pixels being decoded together (one page at
    the per-page limit, or several ordinary ones). A decode's share comes back when its
    thread ends, not when its caller gives up on it: an abandoned decode still counts
    while it runs."""

    def __init__(self, max_pixels: int) -> None:
        self._max_pixels = max_pixels
        self._running: Counter[int] = Counter()  # decodes in flight, by id(decoder)
        self._pixels = 0
        self._changed = asyncio.Condition()
        self._notifying: set[asyncio.Task[None]] = set()

    async def run(
        self,
        decoder: InputDecoder,
        pixels: int,
        clock: DecodeClock,
        decode: Callable[[], T],
    ) -> T:
        """``decode()`` in a thread once ``decoder`` has a turn and ``pixels`` fit."""
        lane, limit = id(decoder), max(1, decoder.concurrency)
        share = min(pixels, self._max_pixels)
        async with self._changed:
            await self._changed.wait_for(
                lambda: (
                    self._running[lane] < limit
                    and self._pixels + share <= self._max_pixels
                )
            )
            self._running[lane] += 1
            self._pixels += share
        loop = asyncio.get_running_loop()

        def in_thread() -> T:
            try:
                return decode()
            finally:
                with contextlib.suppress(RuntimeError):  # the loop may be closed
                    loop.call_soon_threadsafe(self._give_back, lane, share)

        return await clock.run(in_thread)

    def _give_back(self, lane: int, share: int) -> None:
        self._running[lane] -= 1
        if not self._running[lane]:
            del self._running[lane]  # ids are reused: none may keep a stale count
        self._pixels -= share
        task = asyncio.ensure_future(self._notify())
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
