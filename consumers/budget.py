"""How many pages the worker holds at once; fetching pauses while the budget is spent."""

from __future__ import annotations

import asyncio


class PageBudget:
    """A counter of pages in flight with a limit and a wake-up for whoever waits for room.

    Reservations never block: a record is admitted with one page, then grows to its real
    page count once decoded. The worker stops fetching while ``room()`` is zero, so the
    overshoot is bounded by one batch.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the page budget needs a limit of at least 1")
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Event()

    def room(self) -> int:
        return max(self.limit - self.used, 0)

    def reserve(self, pages: int) -> None:
        self.used += pages

    def release(self, pages: int) -> None:
        self.used -= pages
        self._changed.set()

    async def wait_for_room(self, timeout_s: float) -> None:
        self._changed.clear()
        if self.room() > 0:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return
