"""Retries: only transient errors, capped jittered delays, then escalation to fatal."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from consumers.errors import (
    BrokerUnavailableError,
    EngineBusyError,
    EngineDeadError,
    FatalError,
    PageFailedError,
    TransientError,
    UnreadableImageError,
)
from consumers.retry import RetriesExhaustedError, RetryPolicy, retry_transient

FAST = RetryPolicy(attempts=4, base_s=0.001, max_s=0.004)


class FlakyCall:
    """Raises the queued errors in turn, then returns ``value``."""

    def __init__(self, failures: Sequence[BaseException], value: str = "done") -> None:
        self.failures = list(failures)
        self.value = value
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.value


@pytest.mark.parametrize("failures", [0, 1, 3])
async def test_transient_errors_are_retried_until_success(failures: int) -> None:
    call = FlakyCall([EngineBusyError("busy")] * failures)
    retried: list[BaseException] = []
    assert await retry_transient(call, FAST, what="t", on_retry=retried.append) == (
        "done"
    )
    assert call.calls == failures + 1
    assert len(retried) == failures
    assert all(isinstance(exc, EngineBusyError) for exc in retried)


async def test_every_transient_kind_is_retried() -> None:
    call = FlakyCall(
        [TransientError("x"), EngineBusyError("y"), BrokerUnavailableError("z")]
    )
    assert await retry_transient(call, FAST, what="t") == "done"
    assert call.calls == 4


async def test_exhausted_retries_escalate_to_fatal() -> None:
    last = EngineBusyError("still busy")
    call = FlakyCall([EngineBusyError("busy")] * 3 + [last])
    retried: list[BaseException] = []
    with pytest.raises(RetriesExhaustedError) as caught:
        await retry_transient(call, FAST, what="page 1", on_retry=retried.append)
    assert isinstance(caught.value, FatalError)
    assert caught.value.__cause__ is last
    assert caught.value.error_code == "RETRIES_EXHAUSTED"
    assert "page 1" in str(caught.value)
    assert call.calls == FAST.attempts
    assert len(retried) == FAST.attempts - 1  # no retry after the last attempt


async def test_a_single_attempt_policy_never_retries() -> None:
    call = FlakyCall([EngineBusyError("busy")])
    with pytest.raises(RetriesExhaustedError):
        await retry_transient(call, RetryPolicy(attempts=1, base_s=0.001), what="t")
    assert call.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        PageFailedError("page"),
        UnreadableImageError("image"),
        EngineDeadError("gone"),
        FatalError("fatal"),
        ValueError("bug"),
        RuntimeError("bug"),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_poison_fatal_and_unknown_errors_are_not_retried(
    error: Exception,
) -> None:
    call = FlakyCall([error])
    retried: list[BaseException] = []
    with pytest.raises(type(error)) as caught:
        await retry_transient(call, FAST, what="t", on_retry=retried.append)
    assert caught.value is error
    assert call.calls == 1
    assert retried == []


async def test_a_poison_error_after_a_transient_one_stops_retrying() -> None:
    poison = PageFailedError("page")
    call = FlakyCall([EngineBusyError("busy"), poison, EngineBusyError("busy")])
    with pytest.raises(PageFailedError) as caught:
        await retry_transient(call, FAST, what="t")
    assert caught.value is poison
    assert call.calls == 2


@pytest.mark.parametrize("attempt", range(12))
def test_delay_is_jittered_exponential_and_capped(attempt: int) -> None:
    policy = RetryPolicy(attempts=12, base_s=0.2, max_s=10.0)
    ceiling = min(policy.max_s, policy.base_s * 2**attempt)
    delays = [policy.delay_s(attempt) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert all(d <= policy.max_s for d in delays)
    assert len(set(delays)) > 1  # jitter: retries of many workers spread out


def test_delay_grows_until_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_s=1.0, max_s=8.0)
    lows = [min(policy.delay_s(a) for _ in range(50)) for a in range(6)]
    assert lows[1] >= 1.0  # attempt 1: ceiling 2 s, floor 1 s
    assert lows[3] >= 4.0  # attempt 3: ceiling 8 s
    assert all(max(policy.delay_s(a) for _ in range(50)) <= 8.0 for a in range(20))


async def test_retries_actually_wait_between_attempts() -> None:
    policy = RetryPolicy(attempts=3, base_s=0.02, max_s=0.02)
    call = FlakyCall([EngineBusyError("busy")] * 2)
    started = time.monotonic()
    await retry_transient(call, policy, what="t")
    # Two waits of at least max_s / 2 each.
    assert time.monotonic() - started >= 0.02
