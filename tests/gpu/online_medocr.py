"""The medocr side of ``bench_online``: publish each page at its arrival time, time its
result read back from the result topic (``replay_medocr``), through a serde that keeps
up with the rates asked for (``UncheckedSerde``)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import Sequence
from typing import Any

from schemas import AvroSerde, SerdeContext
from schemas.framing import SingleObjectFraming
from schemas.serde import AvroRecord
from tests.gpu.bench_pipeline_vs_raw import log
from tests.gpu.online_load import Arrival, Outcome


class UncheckedSerde(AvroSerde):
    """``AvroSerde`` without the validation pass before fastavro writes a record.

    The same bytes (``check_same_bytes``), but a load generator that can keep up:
    ``AvroSchema.write_body`` validates each record first, and fastavro's validation
    of the ``["null", "bytes"]`` image union renders the failed ``null`` branch's
    error with ``json.dumps`` of the whole image, about 80 ms of CPU per 2 MB page,
    which caps one publishing process near 12 pages/s (measured: the first H200 run
    of this script). ``--checked-serde`` publishes with the stock serde instead.
    """

    def __init__(self) -> None:
        self._frame = SingleObjectFraming()
        super().__init__(self._frame)

    def serialize(self, record: AvroRecord, ctx: SerdeContext) -> bytes:
        import fastavro

        schema = self.schema_of(type(record))
        body = io.BytesIO()
        fastavro.schemaless_writer(body, schema.parsed, record.to_avro())
        return self._frame.frame(body.getvalue(), schema, ctx)


def check_same_bytes(serde: AvroSerde, request: Any) -> None:
    from producers.kafka import Topics

    ctx = SerdeContext(Topics().requests)
    if serde.serialize(request, ctx) != AvroSerde().serialize(request, ctx):
        raise RuntimeError("the bench's serde writes other bytes than AvroSerde")


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

    tasks = []
    for arrival in arrivals:
        await asyncio.sleep(max(0.0, start + arrival.at_s - loop.time()))
        tasks.append(asyncio.create_task(one(arrival)))
    end = start + (arrivals[-1].at_s if arrivals else 0.0) + drain_timeout_s
    await asyncio.wait(tasks, timeout=max(0.0, end - loop.time()))
    for task in tasks:
        task.cancel()
    failures = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [f for f in failures if isinstance(f, Exception)]
    if errors:
        log(f"medocr: {len(errors)} request(s) failed, e.g. {errors[0]!r}")
    return [outcomes.get(a.seq) or Outcome(a, a.at_s, None, False) for a in arrivals]
