"""Blocking work the worker can walk away from: decoding a scan, reading a file.

``asyncio.to_thread`` uses the loop's default executor, whose threads are joined when
the loop closes and again at interpreter exit: one decode stuck in a hostile image would
hold SIGTERM past the drain timeout. Here every call gets its own daemon thread, so a
caller that times out or is cancelled leaves the thread to finish (or die with the
process) on its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def run_abandonable(
    func: Callable[[], T], *, timeout_s: float | None = None, name: str = "abandonable"
) -> T:
    """``func()`` in a daemon thread; ``TimeoutError`` after ``timeout_s`` seconds."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            value = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
            _call_soon(loop, settle, lambda: future.set_exception(error))
        else:
            _call_soon(loop, settle, lambda: future.set_result(value))

    # an abandoned call's late exception is nobody's to read: no "never retrieved" noise
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    threading.Thread(target=target, name=name, daemon=True).start()
    # shield: a timeout or cancel must not cancel the future the thread will settle.
    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
    # that arrives as the future completes, and the cancelled record would go on.
    async with asyncio.timeout(timeout_s):
        return await asyncio.shield(future)


def _call_soon(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[Callable[[], None]], None],
    outcome: Callable[[], None],
) -> None:
    # The loop may be closed by the time an abandoned thread finishes.
    if not loop.is_closed():
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:
            return
