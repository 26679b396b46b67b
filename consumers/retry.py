"""Capped, jittered retries of transient errors; after the last attempt they escalate."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from consumers.errors import Action, FatalError, classify

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetriesExhaustedError(FatalError):
    error_code = "RETRIES_EXHAUSTED"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_s: float = 0.2
    max_s: float = 10.0

    def delay_s(self, attempt: int) -> float:
        """Full jitter over an exponential step, never above ``max_s``."""
        ceiling: float = min(self.max_s, self.base_s * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``call``; retry only what ``classify`` calls transient, then escalate."""
    for attempt in range(policy.attempts):
        try:
            return await call()
        except Exception as exc:
            if classify(exc) is not Action.RETRY:
                raise
            if attempt + 1 == policy.attempts:
                raise RetriesExhaustedError(
                    f"{what}: still failing after {policy.attempts} attempts: {exc}"
                ) from exc
            delay = policy.delay_s(attempt)
            log.warning(
                "%s: transient %s, retry in %.2fs", what, type(exc).__name__, delay
            )
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
