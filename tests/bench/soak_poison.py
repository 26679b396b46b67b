"""Soak: 1,000 documents, 400 of them poison, through one ``medocr worker`` process.

The poison records cycle through the corpus' cheap shapes (``tests/support/poison.py``:
undecodable records, hostile TIFFs, absurd fields, ``file://`` URIs to a FIFO and a
character device); the rest are small generated PNGs with a few words. Everything is
generated in memory. The records are spread over the input topic's partitions, poison
and good interleaved; the worker's RSS is sampled every second. At the end it prints
min/median/max RSS and the counts (results, dead letters, OK, FAILED by code), and
exits 1 unless every document got exactly one result, every poison record a dead
letter and the worker is still running. Usage::

    python tests/bench/soak_poison.py [--documents 1000] [--poison 400] [--timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

# Runnable as a script: the repository root holds consumers/, producers/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from consumers.local.broker import EmbeddedBroker
from tests.bench.bench_bombs import (
    Arrival,
    OutputReader,
    proc_status_kib,
    publish,
    start_worker,
)
from tests.support.poison import Poison, cheap_corpus, good_png, of_request
from tests.support.records import scan_request as request
from tests.support.topics import case_settings

PARTITIONS = 4


def documents(total: int, poison_count: int, uri_root: Path) -> list[Poison | None]:
    """``total`` slots, ``poison_count`` of them poison spread evenly; None = good."""
    shapes = cheap_corpus(uri_root)
    slots: list[Poison | None] = [None] * total
    for n in range(poison_count):
        slots[n * total // poison_count] = shapes[n % len(shapes)]
    return slots


async def sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        kib = proc_status_kib(pid, "VmRSS")
        if kib:
            samples.append(kib * 1024)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            continue


async def soak(total: int, poison_count: int, timeout_s: float) -> int:
    good = good_png()
    with tempfile.TemporaryDirectory() as folder, EmbeddedBroker() as broker:
        uri_root = Path(folder) / "scans"
        slots = documents(total, poison_count, uri_root)
        records = [
            (
                slot
                or of_request(
                    f"good-{n}", request(f"good-{n}", good.raw, "image/png"), "OK"
                ),
                n % PARTITIONS,
            )
            for n, slot in enumerate(slots)
        ]
        settings = await case_settings(broker.bootstrap_servers, partitions=PARTITIONS)
        worker = start_worker(settings, "soak", OCR_FILE_URI_ROOTS=str(uri_root))
        samples: list[int] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(worker.process.pid, samples, stop))
        try:
            async with OutputReader(settings) as reader:
                positions = await publish(settings, records)
                done = await reader.wait_for(positions, worker, timeout_s)
                await asyncio.sleep(2)  # duplicates, late dead letters
                await reader.poll(500)
                seconds = max(
                    (a.seconds for at in positions for a in reader.results.get(at, [])),
                    default=0.0,
                )
            exit_code = worker.process.poll()
        finally:
            stop.set()
            await sampler
            worker.stop()
    return report(records, positions, reader, samples, done, exit_code, seconds)


def code_of(arrivals: Sequence[Arrival]) -> str:
    return arrivals[0].result.error_code or "OK"


def report(
    records: Sequence[tuple[Poison, int]],
    positions: Sequence[tuple[int, int]],
    reader: OutputReader,
    samples: Sequence[int],
    done: bool,
    exit_code: int | None,
    seconds: float,
) -> int:
    poisons = [
        at for (p, _), at in zip(records, positions, strict=True) if p.code != "OK"
    ]
    counts = [len(reader.results.get(at, [])) for at in positions]
    codes = collections.Counter(
        code_of(arrivals) for arrivals in reader.results.values() if arrivals
    )
    wrong = [
        f"{p.name}: {code_of(arrivals)}"
        for (p, _), at in zip(records, positions, strict=True)
        if (arrivals := reader.results.get(at)) and code_of(arrivals) != p.code
    ]
    mib = [s / 2**20 for s in samples] or [0.0]
    print(f"documents {len(positions)} ({len(poisons)} poison), {seconds:.0f} s")
    print(
        f"worker RSS MiB: min {min(mib):.0f}  median {statistics.median(mib):.0f}"
        f"  max {max(mib):.0f}  ({len(samples)} samples)"
    )
    print(
        f"results {sum(counts)} (documents with none: {counts.count(0)},"
        f" with more than one: {sum(c > 1 for c in counts)})"
    )
    letters = sum(len(reader.letters.get(at, [])) for at in poisons)
    print(
        f"dead letters {sum(len(v) for v in reader.letters.values())}"
        f" (poison records with one: {sum(at in reader.letters for at in poisons)})"
    )
    print("by code: " + ", ".join(f"{c} {n}" for c, n in sorted(codes.items())))
    for line in wrong[:20]:
        print(f"  unexpected: {line}")
    print(f"worker: {'running' if exit_code is None else f'exited {exit_code}'}")
    ok = (
        done
        and exit_code is None
        and all(c == 1 for c in counts)
        and letters == len(poisons)
        and not wrong
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--poison", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds in all")
    args = parser.parse_args(argv)
    return asyncio.run(soak(args.documents, args.poison, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
