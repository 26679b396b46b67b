"""How many pages the worker holds at once; fetching pauses while the budget is spent."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class PageBudget:
    """A count of pages in flight against a limit.

    A record is admitted holding one page (``reserve``: never blocks; the worker stops
    fetching while ``room()`` is zero, so admission overshoots by one batch at most).
    Each further page of a document waits for its place (``acquire``) before it is
    decoded, so decoded pages never exceed the limit, and pages already in flight wait
    ahead of new records: ``room()`` leaves their places out. A page gives its place
    back (``release``) once the engine is done with it; nothing that holds a place
    waits for another one, so the budget cannot deadlock.

    ``used`` is the one count of pages in flight (the ``ocr_inflight_pages`` gauge reads
    it); a record's ``PagePlaces`` only remembers its share, to give it all back.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the page budget needs a limit of at least 1")
        self.limit = limit
        self._used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._changed = asyncio.Event()

    @property
    def used(self) -> int:
        """Pages in flight: places taken and not yet given back."""
        return self._used

    def room(self) -> int:
        """Places for new records: free places not promised to waiting pages."""
        return max(self.limit - self._used - len(self._waiters), 0)

    def reserve(self, pages: int) -> None:
        self._used += pages

    async def acquire(self) -> None:
        """Wait for one place, first come first served."""
        if not self._waiters and self._used < self.limit:
            self._used += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the place is taken for us in _wake
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(1)  # granted as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):  # _wake may have dropped it
                    self._waiters.remove(waiter)
            raise

    def release(self, pages: int) -> None:
        self._used -= pages
        self._wake()
        self._changed.set()

    def _wake(self) -> None:
        while self._waiters and self._used < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._used += 1
                waiter.set_result(None)

    async def wait_for_room(self, timeout_s: float) -> None:
        self._changed.clear()
        if self.room() > 0:
            return
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see threads.py
                await self._changed.wait()
        except TimeoutError:
            return


class PagePlaces:
    """The places one record holds in the budget; the record gives back all it holds."""

    def __init__(self, budget: PageBudget, held: int = 0) -> None:
        self._budget = budget
        self.held = held

    @classmethod
    def admit(cls, budget: PageBudget) -> PagePlaces:
        """A new record's first place, taken without waiting (see ``PageBudget``)."""
        budget.reserve(1)
        return cls(budget, 1)

    async def take(self) -> None:
        await self._budget.acquire()
        self.held += 1

    def give(self) -> None:
        if self.held > 0:
            self.held -= 1
            self._budget.release(1)

    def give_all(self) -> None:
        held, self.held = self.held, 0
        if held:
            self._budget.release(held)
