"""The arithmetic and plumbing of the online benchmark (no GPU, no broker: runs in CI)."""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.gpu.online_load import (
    Arrival,
    Outcome,
    at_arrivals,
    max_sustainable,
    percentile,
    poisson_schedule,
    summarize_rate,
)
from tests.gpu.online_peer import serve_argv


def test_schedule_is_seeded_and_a_shorter_one_is_a_prefix() -> None:
    long = poisson_schedule(10.0, 60.0, pages=64, seed=7)
    short = poisson_schedule(10.0, 30.0, pages=64, seed=7)
    assert long == poisson_schedule(10.0, 60.0, pages=64, seed=7)
    assert long[: len(short)] == short
    assert 450 < len(long) < 750  # 600 expected
    assert all(0 <= a.page < 64 for a in long)


@pytest.mark.parametrize(
    ("share", "expected"), [(0.5, 50.0), (0.9, 90.0), (0.99, 99.0), (1.0, 100.0)]
)
def test_percentile_is_nearest_rank(share: float, expected: float) -> None:
    assert percentile([float(v) for v in range(1, 101)], share) == expected


def steady(rate: float, duration_s: float, latency_s: float) -> list[Outcome]:
    return [
        Outcome(Arrival(i, i / rate, 0), i / rate, i / rate + latency_s)
        for i in range(int(rate * duration_s))
    ]


def test_a_steady_stream_is_not_saturated() -> None:
    row = summarize_rate(10.0, 60.0, 10.0, steady(10.0, 60.0, 2.0))
    assert row["p99_s"] == pytest.approx(2.0)
    assert row["sustained_per_s"] == pytest.approx(10.0, rel=0.02)
    assert not row["saturated"]
    assert row["within_bound"]


def test_a_growing_backlog_is_saturated() -> None:
    # served at 8/s while 10/s arrive: the wait grows by 0.25 s per arrival second
    outcomes = [
        Outcome(Arrival(i, i / 10, 0), i / 10, max(i / 10 + 1.0, i / 8))
        for i in range(600)
    ]
    row = summarize_rate(10.0, 60.0, 10.0, outcomes)
    assert row["saturated"]
    assert row["backlog_slope_per_s"] == pytest.approx(2.0, rel=0.1)
    assert not row["within_bound"]


def test_an_unanswered_page_is_infinitely_late() -> None:
    outcomes = steady(10.0, 60.0, 1.0)
    outcomes[-1] = Outcome(outcomes[-1].arrival, outcomes[-1].sent_s, None, False)
    row = summarize_rate(10.0, 60.0, 10.0, outcomes)
    assert math.isinf(outcomes[-1].latency_s)
    assert row["unanswered"] == 1
    assert row["max_s"] is None
    assert not row["within_bound"]


def test_max_sustainable_strict_and_p99_only() -> None:
    rows = [
        {"offered_rate": 5.0, "p99_s": 4.0, "within_bound": True},
        {"offered_rate": 8.0, "p99_s": 9.0, "within_bound": False},  # saturated
        {"offered_rate": 9.0, "p99_s": 15.0, "within_bound": False},
    ]
    assert max_sustainable(rows) == 5.0
    assert max_sustainable(rows, bound_s=12.0) == 8.0
    assert max_sustainable(rows[2:]) is None


async def test_each_arrival_starts_at_its_time_and_late_ones_are_cancelled() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    arrivals = [Arrival(0, 0.0, 0), Arrival(1, 0.1, 0), Arrival(2, 0.2, 0)]
    started: dict[int, float] = {}
    finished: list[int] = []

    async def one(arrival: Arrival) -> None:
        started[arrival.seq] = loop.time() - start
        if arrival.seq == 1:
            raise ValueError("refused")
        await asyncio.sleep(0.05 if arrival.seq == 0 else 60)  # the last never ends
        finished.append(arrival.seq)

    errors = await at_arrivals(arrivals, one, start, drain_timeout_s=0.2)
    assert [round(started[n], 1) for n in (0, 1, 2)] == [0.0, 0.1, 0.2]
    assert finished == [0]
    assert [type(e) for e in errors] == [ValueError]  # the cancelled one is no error
    assert loop.time() - start < 1


def test_the_peer_gets_the_workers_engine_settings_as_flags() -> None:
    kwargs = {
        "max_num_seqs": 128,
        "quantization": None,  # unset: vLLM's own default, no flag
        "kv_cache_dtype": "fp8",
        "enforce_eager": False,
        "limit_mm_per_prompt": {"image": 1, "video": 0},
    }
    argv = serve_argv(kwargs, 8123)
    assert "--quantization" not in argv
    assert argv[argv.index("--kv-cache-dtype") + 1] == "fp8"
    assert argv[argv.index("--max-num-seqs") + 1] == "128"
    assert "--no-enforce-eager" in argv
    limit = argv[argv.index("--limit-mm-per-prompt") + 1]
    assert limit == '{"image": 1, "video": 0}'
    assert argv[argv.index("--port") + 1] == "8123"
