"""The medocr side of ``bench_online``: publish each page at its arrival time and time
its result read back from the result topic (``replay_medocr``)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from tests.gpu.bench_pipeline_vs_raw import log
from tests.gpu.online_load import Arrival, Outcome, at_arrivals


async def replay_medocr(
    client: Any, templates: Sequence[Any], arrivals: Sequence[Arrival], prefix: str,
    drain_timeout_s: float,
) -> list[Outcome]:  # fmt: skip
    """Publish each arrival's page at its time (``submitted_at`` = now) and time its
    result read back; answers later than ``drain_timeout_s`` after the last arrival
    count as unanswered."""
    from schemas.records import utc_now

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    wall_start = time.time() + (start - loop.time())
    outcomes: dict[int, Outcome] = {}

    async def one(arrival: Arrival) -> None:
        request = dataclasses.replace(
            templates[arrival.page],
            document_id=f"{prefix}{arrival.seq:05d}",
            submitted_at=utc_now(),
        )
        sent = request.submitted_at.timestamp() - wall_start
        outcomes[arrival.seq] = Outcome(arrival, sent, None, False)
        reply = await client.submit(request)
        try:
            result = await reply.result()
        finally:
            reply.cancel()
        done = time.time() - wall_start
        ok = result.status.value == "OK"
        outcomes[arrival.seq] = Outcome(arrival, sent, done, ok, result.token_count)

    errors = await at_arrivals(arrivals, one, start, drain_timeout_s)
    if errors:
        log(f"medocr: {len(errors)} request(s) failed, e.g. {errors[0]!r}")
    return [outcomes.get(a.seq) or Outcome(a, a.at_s, None, False) for a in arrivals]
