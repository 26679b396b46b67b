"""The online (MLPerf "Server") load: one seeded Poisson schedule, and what a run of it
measured.

No Kafka and no HTTP, so both systems of ``bench_online`` are driven and judged alike:

- ``poisson_schedule``: arrival times (exponential gaps at the offered rate) and the
  page each arrival carries, from one seed; the same seed gives the same schedule to
  medocr and to the peer;
- ``summarize_rate``: for the arrivals of the steady window (after ``warmup_s``, before
  the end of arrivals): the sustained completions/s, latency percentiles (nearest rank;
  a page without an answer counts as infinitely late), the backlog's growth and the
  ``saturated`` flag;
- ``max_sustainable``: the highest offered rate whose p99 is within the bound (MLPerf
  v6's VLM server bound, 12 s) and that was not saturated;
- ``at_arrivals``: the one replay loop of both clients: each arrival's request starts at
  its time, and the requests still out after the drain timeout are cancelled.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

P99_BOUND_S = 12.0
# Saturated: the backlog (arrived, not yet answered) grew by more than this share of the
# offered rate over the steady window (least squares), i.e. that share of the arrivals
# was piling up instead of being served.
SATURATION_SLOPE_SHARE = 0.05


@dataclass(frozen=True)
class Arrival:
    seq: int  # 0.. in arrival order; names the request
    at_s: float  # seconds after the schedule's start
    page: int  # index into the page set


@dataclass(frozen=True)
class Outcome:
    """What the client saw of one arrival (times on the client's clock, seconds after
    the schedule's start); ``done_s`` None: no answer before the client gave up."""

    arrival: Arrival
    sent_s: float  # when the request left (submitted_at for medocr)
    done_s: float | None
    ok: bool = True
    out_tokens: int = 0

    @property
    def latency_s(self) -> float:
        return math.inf if self.done_s is None else self.done_s - self.sent_s


def poisson_schedule(
    rate: float, duration_s: float, pages: int, seed: int
) -> list[Arrival]:
    """Arrivals over ``[0, duration_s)`` with exponential gaps of mean ``1/rate``,
    each carrying a page drawn uniformly from ``range(pages)``."""
    if rate <= 0 or duration_s <= 0 or pages < 1:
        raise ValueError("rate, duration and pages must be positive")
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    at_s = rng.expovariate(rate)
    while at_s < duration_s:
        arrivals.append(Arrival(len(arrivals), at_s, rng.randrange(pages)))
        at_s += rng.expovariate(rate)
    return arrivals


def percentile(sorted_values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``share`` in 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def backlog_slope(
    outcomes: Sequence[Outcome], start_s: float, end_s: float, step_s: float = 1.0
) -> float:
    """Least-squares slope (requests/s) of the backlog (sent, not yet answered),
    sampled every ``step_s`` over ``[start_s, end_s]``."""
    times = [start_s + i * step_s for i in range(int((end_s - start_s) / step_s) + 1)]
    if len(times) < 2:
        return 0.0
    sent = sorted(o.sent_s for o in outcomes)
    done = sorted(o.done_s if o.done_s is not None else math.inf for o in outcomes)
    backlog = [_count_le(sent, t) - _count_le(done, t) for t in times]
    mean_t, mean_b = sum(times) / len(times), sum(backlog) / len(backlog)
    cov = sum((t - mean_t) * (b - mean_b) for t, b in zip(times, backlog, strict=True))
    var = sum((t - mean_t) ** 2 for t in times)
    return cov / var


def _count_le(sorted_values: Sequence[float], limit: float) -> int:
    lo, hi = 0, len(sorted_values)
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_values[mid] <= limit:
            lo = mid + 1
        else:
            hi = mid
    return lo


def summarize_rate(
    rate: float,
    duration_s: float,
    warmup_s: float,
    outcomes: Sequence[Outcome],
    bound_s: float = P99_BOUND_S,
) -> dict[str, Any]:
    """One offered rate's figures over the steady window ``[warmup_s, duration_s)``."""
    window_s = duration_s - warmup_s
    steady = [o for o in outcomes if o.arrival.at_s >= warmup_s]
    latencies = sorted(o.latency_s for o in steady)
    finished = [o for o in outcomes if o.done_s is not None]
    completed_in_window = sum(
        1 for o in finished if warmup_s <= (o.done_s or 0.0) < duration_s
    )
    slope = backlog_slope(outcomes, warmup_s, duration_s)
    unanswered = sum(1 for o in outcomes if o.done_s is None)
    p99 = percentile(latencies, 0.99)
    saturated = slope > SATURATION_SLOPE_SHARE * rate or unanswered > 0
    quarter = max(1, len(steady) // 4)
    return {
        "offered_rate": round(rate, 3),
        "duration_s": round(duration_s, 1),
        "arrivals": len(outcomes),
        "steady_arrivals": len(steady),
        "steady_window_s": round(window_s, 1),
        "arrived_per_s": round(len(steady) / window_s, 3),
        "sustained_per_s": round(completed_in_window / window_s, 3),
        "p50_s": _round(percentile(latencies, 0.50)),
        "p90_s": _round(percentile(latencies, 0.90)),
        "p99_s": _round(p99),
        "max_s": _round(latencies[-1]) if latencies else None,
        "mean_s": _round(_mean(latencies)),
        # Latency of the first and the last quarter of the steady arrivals: a rise
        # from one to the other is the backlog showing in the pages' wait.
        "first_quarter_mean_s": _round(_mean(latencies_of(steady[:quarter]))),
        "last_quarter_mean_s": _round(_mean(latencies_of(steady[-quarter:]))),
        "backlog_slope_per_s": round(slope, 3),
        "saturated": saturated,
        "unanswered": unanswered,
        "failed": sum(1 for o in outcomes if o.done_s is not None and not o.ok),
        "max_send_lag_s": round(
            max((o.sent_s - o.arrival.at_s for o in outcomes), default=0.0), 3
        ),
        "out_tokens": sum(o.out_tokens for o in finished),
        "within_bound": bool(p99 <= bound_s and not saturated),
    }


def latencies_of(outcomes: Sequence[Outcome]) -> list[float]:
    return [o.latency_s for o in outcomes]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _round(value: float) -> float | None:
    """JSON has no infinity or NaN: None stands for 'no answer' / 'no data'."""
    return None if math.isinf(value) or math.isnan(value) else round(value, 3)


def max_sustainable(
    rows: Sequence[dict[str, Any]], bound_s: float | None = None
) -> float | None:
    """The highest offered rate that was ``within_bound`` (p99 within the bound and
    not saturated); with ``bound_s``, the highest whose p99 alone was within it (the
    MLPerf rule, which leaves saturation to the run's length). None when none was."""
    passing = [
        row["offered_rate"]
        for row in rows
        if (
            row["within_bound"]
            if bound_s is None
            else row["p99_s"] is not None and row["p99_s"] <= bound_s
        )
    ]
    return max(passing) if passing else None


def outcome_rows(outcomes: Sequence[Outcome]) -> list[list[float | None]]:
    """Per page, for the JSON and the plot: [arrival_s, sent_s, done_s]."""
    return [
        [
            round(o.arrival.at_s, 3),
            round(o.sent_s, 3),
            None if o.done_s is None else round(o.done_s, 3),
        ]
        for o in outcomes
    ]


async def at_arrivals(
    arrivals: Sequence[Arrival],
    one: Callable[[Arrival], Coroutine[Any, Any, None]],
    start: float,
    drain_timeout_s: float,
) -> list[BaseException]:
    """Start ``one(arrival)`` at ``start + arrival.at_s`` (the loop's clock); wait for
    all, at most ``drain_timeout_s`` after the last arrival, then cancel what is still
    out (for the peer, the disconnect aborts the request in vLLM). What the requests
    raised, cancellations of late ones left out."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    for arrival in arrivals:
        await asyncio.sleep(max(0.0, start + arrival.at_s - loop.time()))
        tasks.append(asyncio.create_task(one(arrival)))
    if not tasks:
        return []
    end = start + arrivals[-1].at_s + drain_timeout_s
    await asyncio.wait(tasks, timeout=max(0.0, end - loop.time()))
    for task in tasks:
        task.cancel()
    ended = await asyncio.gather(*tasks, return_exceptions=True)
    return [
        e
        for e in ended
        if isinstance(e, BaseException) and not isinstance(e, asyncio.CancelledError)
    ]
