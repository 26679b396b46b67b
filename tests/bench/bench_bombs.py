"""Benchmark: TIFF decoding bombs against a real ``medocr worker`` process.

Starts the embedded broker, and for each case a fresh worker (Tesseract engine, default
limits), so that each peak RSS (``VmHWM`` of the worker process) is the case's own:

1. ``palette-50``: 50 deflated palette pages of 1e8 px each (~5 MB on disk);
2. ``g4-50``: 50 blank CCITT G4 pages of 1e8 px each (~70 KB on disk);
3. ``both``: the two at once, on two partitions;
4. ``150k-ifds``: a 15 MB TIFF of 150,000 1x1 IFDs;
5. ``9-page-x8``: eight 9-page TIFFs of 1e8-px pages at once (~0.9 MB each): every one
   within every limit (9e8 px < OCR_MAX_DOCUMENT_PIXELS), together 7.2e9 px in a batch.

Every bomb is generated in memory (``tests/support/poison.py``). Prints each result's
status and error code, the seconds from publish to result and the worker's peak RSS,
against the issue's targets (peak < 1 GB alone, < 1.5 GB together; the 150k-IFD TIFF
refused within 5 s); exits 1 when a target is missed. Usage::

    python tests/bench/bench_bombs.py [--timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Runnable as a script: the repository root holds consumers/, producers/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumers.local.broker import EmbeddedBroker
from consumers.settings import Settings
from schemas import OcrDeadLetter, OcrResult
from tests.support.poison import MiB, Poison, bomb_poisons, slow_decode
from tests.support.records import decode_record
from tests.support.topics import case_settings
from tests.support.workers import WorkerProcess

GB = 1000**3
PARTITIONS = 4

Position = tuple[int, int]  # partition, offset


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_worker(settings: Settings, name: str, **env: str) -> WorkerProcess:
    worker = WorkerProcess(settings, name, **env)
    try:
        worker.wait_ready(120)
    except BaseException:
        worker.stop()
        raise
    return worker


async def publish(
    settings: Settings, records: Sequence[tuple[Poison, int]]
) -> list[Position]:
    """Each poison's record on its partition, in order; where each landed."""
    kafka = settings.kafka
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        acks="all",
        enable_idempotence=kafka.enable_idempotence,
        max_request_size=32 * MiB,
        request_timeout_ms=60_000,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                kafka.input_topic, poison.value, poison.key, partition=partition
            )
            for poison, partition in records
        ]
        return [
            (meta.partition, meta.offset) for meta in await asyncio.gather(*futures)
        ]
    finally:
        await producer.stop()


@dataclass
class Arrival:
    result: OcrResult
    seconds: float  # from the start of waiting to the result read back


class OutputReader:
    """Results and dead letters as they arrive, by the input position they answer."""

    def __init__(self, settings: Settings) -> None:
        self._kafka = settings.kafka
        self._consumer = AIOKafkaConsumer(
            **self._kafka.client_kwargs(),
            enable_auto_commit=False,
            max_partition_fetch_bytes=64 * MiB,
            fetch_max_bytes=64 * MiB,
        )
        self.results: dict[Position, list[Arrival]] = {}
        self.letters: dict[Position, list[OcrDeadLetter]] = {}
        self.started = time.monotonic()

    async def __aenter__(self) -> OutputReader:
        await self._consumer.start()
        topics = (self._kafka.result_topic, self._kafka.dlq_topic)
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self.started = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 100) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        now = time.monotonic() - self.started
        for tp, msgs in batch.items():
            for msg in msgs:
                if msg.value is None:
                    continue
                if tp.topic == self._kafka.result_topic:
                    result = decode_record(OcrResult, msg.value, tp.topic)
                    at = (result.source_partition, result.source_offset)
                    self.results.setdefault(at, []).append(Arrival(result, now))
                else:
                    letter = decode_record(OcrDeadLetter, msg.value, tp.topic)
                    at = (letter.source_partition, letter.source_offset)
                    self.letters.setdefault(at, []).append(letter)

    async def wait_for(
        self, positions: Sequence[Position], worker: WorkerProcess, timeout_s: float
    ) -> bool:
        """Until every position has a result (True), the worker exits or time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and worker.process.poll() is None:
            await self.poll()
            if all(at in self.results for at in positions):
                return True
        return False


@dataclass
class Row:
    case: str
    outcome: str
    seconds: float | None
    peak_bytes: int
    target: str
    met: bool


async def run_case(
    bootstrap_servers: str,
    name: str,
    poisons: Sequence[Poison],
    timeout_s: float,
    peak_limit: int,
    seconds_limit: float | None = None,
) -> Row:
    """A fresh worker, the bombs published at once (one partition each), their results."""
    settings = await case_settings(bootstrap_servers, partitions=PARTITIONS)
    worker = start_worker(settings, f"bomb-{name}")
    try:
        idle_kib = proc_status_kib(worker.process.pid, "VmHWM")
        async with OutputReader(settings) as reader:
            positions = await publish(
                settings, [(p, i % PARTITIONS) for i, p in enumerate(poisons)]
            )
            done = await reader.wait_for(positions, worker, timeout_s)
            peak = proc_status_kib(worker.process.pid, "VmHWM") * 1024
        exit_code = worker.process.poll()
    finally:
        worker.stop()
    arrivals = [reader.results.get(at, [None])[0] for at in positions]
    counted = collections.Counter(
        f"{a.result.status.value} {a.result.error_code or ''}".strip()
        if a
        else "no result"
        for a in arrivals
    )
    outcomes = [
        f"{n}x {outcome}" if n > 1 else outcome for outcome, n in counted.items()
    ]
    if exit_code is not None:
        outcomes.append(f"worker exited {exit_code}")
    elif not done:
        outcomes.append(f"timed out after {timeout_s:.0f} s")
    seconds = max((a.seconds for a in arrivals if a), default=None)
    met = done and exit_code is None and peak < peak_limit
    target = f"peak < {peak_limit / GB:.1f} GB"
    if seconds_limit is not None:
        met = met and seconds is not None and seconds < seconds_limit
        target += f", < {seconds_limit:.0f} s"
    print(f"  {name}: idle worker peak {idle_kib / 1024:.0f} MiB", flush=True)
    return Row(name, "; ".join(outcomes), seconds, peak, target, met)


def print_table(rows: Sequence[Row]) -> None:
    header = f"{'case':<11} {'result':<40} {'s to result':>11} {'peak RSS':>10}  target"
    print(header)
    print("-" * (len(header) + 28))
    for row in rows:
        seconds = f"{row.seconds:.1f}" if row.seconds is not None else "-"
        print(
            f"{row.case:<11} {row.outcome:<40} {seconds:>11} "
            f"{row.peak_bytes / GB:>7.2f} GB  {row.target}: "
            f"{'met' if row.met else 'MISSED'}"
        )


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=300, help="seconds a case")
    parser.add_argument(
        "--cases", nargs="*", default=None, help="run only these cases (default: all)"
    )
    args = parser.parse_args(argv)
    print("generating the bombs...", flush=True)
    palette, g4, many = bomb_poisons()
    within = slow_decode(9)
    for bomb in (palette, g4, many):
        print(f"  {bomb.name}: {bomb.size_bytes / 1e6:.2f} MB", flush=True)
    rows = []
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        for name, bombs, peak, seconds in [
            ("palette-50", [palette], GB, None),
            ("g4-50", [g4], GB, None),
            ("both", [palette, g4], 1.5 * GB, None),
            ("150k-ifds", [many], GB, 5.0),
            ("9-page-x8", [within] * 8, 1.5 * GB, None),
        ]:
            if args.cases is not None and name not in args.cases:
                continue
            print(f"case {name}...", flush=True)
            rows.append(
                await run_case(servers, name, bombs, args.timeout, int(peak), seconds)
            )
    print()
    print_table(rows)
    return 0 if all(row.met for row in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
