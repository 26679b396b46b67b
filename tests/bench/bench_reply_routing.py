"""Benchmark: what reading replies costs gateway replicas, every partition vs routed.

Starts the embedded broker and, for each mode, result and progress topics of their own
(``--partitions``, 6) and ``--replicas`` (3) reply readers in processes of their own,
as that many ``medocr gateway`` replicas would run them (``ReplyReader`` over both
topics), each waiting for its third of the documents:

- ``all``: every reader reads every partition without a group (one gateway's way, and
  ``medocr publish --wait``'s); the results are published by key, as for any request;
- ``routed``: the readers share a consumer group (``GATEWAY_GROUP``), and each
  replica's results go to a partition assigned to it, round robin (as the worker sends
  a request's result to its ``reply_partition``).

Then it publishes ``--results`` (30,000) small ``OcrResult`` records, as a worker
would, and prints for each replica the records it read, the records it decoded (those
whose key is a document it waits for), its CPU seconds (process time, from just before
the first record is published until it has read everything there is for it) and its
wall seconds; then the ratios all/routed. Usage::

    python tests/bench/bench_reply_routing.py [--results N] [--replicas R]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import cast

# Runnable as a script: the repository root holds consumers/, producers/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from consumers.local.broker import EmbeddedBroker, ensure_topics
from producers.kafka import (
    EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
    MAX_DOCUMENT_BYTES,
    ProducerOptions,
    build_producer,
    build_reply_group_consumer,
    build_waiter_consumer,
)
from producers.replies import ReplyReader
from schemas import (
    AvroSerde,
    DocumentStatus,
    OcrPage,
    OcrResult,
    PageStatus,
    SerdeContext,
)
from schemas.records import utc_now

# all-old: "all" as the reader read before reply routing: every record decoded (each
# replica here waits for every document, so each record is decoded and matched).
MODES = ("all", "routed", "all-old")
# A short page of a medical form: a small result, as most of them are.
LINE = "환자 성명: 홍길동  등록번호: 12345678  진료과: 내과  "
SETTLE_S = 120.0  # joins and rebalances on the embedded broker take seconds
RUN_S = 600.0
IDLE_S = 5.0  # how long each reader's idle CPU is measured before the results come


@dataclass(frozen=True)
class Plan:
    bootstrap: str
    mode: str
    result_topic: str
    progress_topic: str
    group: str
    replica: int
    replicas: int
    results: int

    def documents(self) -> list[str]:
        """The documents this replica waits for: every ``replicas``-th one (all-old:
        every one)."""
        if self.mode == "all-old":
            return [doc_id(i) for i in range(self.results)]
        return [doc_id(i) for i in range(self.replica, self.results, self.replicas)]


@dataclass(frozen=True)
class Row:
    mode: str
    replica: int
    partitions: str
    read: int
    decoded: int
    answered: int
    cpu_s: float
    wall_s: float
    idle_cpu: float  # CPU seconds a second while nothing arrives (fetches, the loop)

    @property
    def busy_cpu_s(self) -> float:
        """CPU seconds above what the reader spends idle in as long a time."""
        return self.cpu_s - self.idle_cpu * self.wall_s


def doc_id(i: int) -> str:
    return f"doc-{i:06d}"


# -- one replica, in a process of its own ----------------------------------------------


def replica_main(plan: Plan, conn: Connection) -> None:
    asyncio.run(run_replica(plan, conn))


async def run_replica(plan: Plan, conn: Connection) -> None:
    kwargs = {"bootstrap_servers": plan.bootstrap}
    routed = plan.mode == "routed"
    consumer = (
        build_reply_group_consumer(
            kwargs,
            MAX_DOCUMENT_BYTES,
            group_id=plan.group,
            fetch_max_wait_ms=EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
        )
        if routed
        else build_waiter_consumer(
            kwargs,
            MAX_DOCUMENT_BYTES,
            fetch_max_wait_ms=EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
        )
    )
    reader = ReplyReader(
        consumer, plan.result_topic, plan.progress_topic, routed=routed
    )
    await reader.start()
    try:
        # No partition named: the bench keeps the group still while it runs.
        replies = [reader.expect(document_id) for document_id in plan.documents()]
        told: tuple[int, ...] | str | None = "nothing yet"
        while not conn.poll():  # tell the parent each share until it says go
            share = reader.reply_partitions()
            if reader.ready() and share != told:
                conn.send(("share", share))
                told = share
            await asyncio.sleep(0.05)
        idle_s = float(conn.recv())
        cpu_before = time.process_time()
        await asyncio.sleep(idle_s)  # the reader polls an empty topic meanwhile
        idle_rate = (time.process_time() - cpu_before) / idle_s
        conn.send(("idle", idle_rate))
        expected = int(conn.recv())
        read_before = reader.counts.read
        cpu_before, started = time.process_time(), time.monotonic()
        conn.send(("started", None))
        async with asyncio.timeout(RUN_S):
            # a counter the reader's task bumps: cheaper polled than signalled
            while reader.counts.read - read_before < expected:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        row = Row(
            plan.mode,
            plan.replica,
            describe(reader.reply_partitions()),
            reader.counts.read - read_before,
            reader.counts.decoded,
            sum(1 for reply in replies if reply.done()),
            time.process_time() - cpu_before,
            time.monotonic() - started,
            idle_rate,
        )
        conn.send(("done", row))
    finally:
        await reader.stop()


def describe(share: tuple[int, ...] | None) -> str:
    return "all" if share is None else ",".join(map(str, share))


# -- the parent: topics, replicas, the results ---------------------------------------


async def run_mode(
    broker: EmbeddedBroker, mode: str, args: argparse.Namespace
) -> tuple[list[Row], float]:
    """The replicas' rows, and the broker's CPU seconds while they read."""
    bootstrap = broker.bootstrap_servers
    suffix = uuid.uuid4().hex[:8]
    results_topic, progress_topic = f"res-{mode}-{suffix}", f"prog-{mode}-{suffix}"
    await ensure_topics(
        {"bootstrap_servers": bootstrap},
        [results_topic, progress_topic],
        args.partitions,
    )
    plans = [
        Plan(
            bootstrap,
            mode,
            results_topic,
            progress_topic,
            f"gw-{suffix}",
            replica,
            args.replicas,
            args.results,
        )
        for replica in range(args.replicas)
    ]
    spawn = multiprocessing.get_context("spawn")
    pipes = [spawn.Pipe() for _ in plans]
    processes = [
        spawn.Process(target=replica_main, args=(plan, child), daemon=True)
        for plan, (_, child) in zip(plans, pipes, strict=True)
    ]
    for process in processes:
        process.start()
    conns = [parent for parent, _ in pipes]
    try:
        shares = await asyncio.to_thread(settle, conns, mode, args.partitions)
        placement = place(shares, args)
        for conn in conns:
            conn.send(IDLE_S)
        for conn in conns:
            assert (await asyncio.to_thread(conn.recv))[0] == "idle"
        for conn, share in zip(conns, shares, strict=True):
            expected = args.results if share is None else placement.count(share)
            conn.send(expected)
        for conn in conns:
            assert (await asyncio.to_thread(conn.recv))[0] == "started"
        broker_before = broker_cpu_s(broker.port)
        await publish(
            bootstrap, results_topic, placement.partitions, page_text(args.lines)
        )
        rows = [await asyncio.to_thread(finished, conn) for conn in conns]
        return rows, broker_cpu_s(broker.port) - broker_before
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def settle(
    conns: list[Connection], mode: str, partitions: int
) -> list[tuple[int, ...] | None]:
    """Each replica's share once every one has one (routed: disjoint, all partitions)."""
    shares: dict[int, tuple[int, ...] | None] = {}
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        for ready in wait(conns, timeout=0.5):
            conn = cast(Connection, ready)
            kind, share = conn.recv()
            assert kind == "share", kind
            shares[conns.index(conn)] = share
        if len(shares) < len(conns):
            continue
        if mode != "routed":
            return [shares[i] for i in range(len(conns))]
        flat = sorted(p for share in shares.values() for p in share or ())
        if flat == list(range(partitions)):
            time.sleep(1.0)  # one more rebalance would show now
            if not any(conn.poll() for conn in conns):
                return [shares[i] for i in range(len(conns))]
    raise TimeoutError(f"the replicas did not settle within {SETTLE_S:g} s: {shares}")


@dataclass(frozen=True)
class Placement:
    partitions: list[int | None]  # each result's partition (None: by its key)

    def count(self, share: tuple[int, ...]) -> int:
        return sum(1 for p in self.partitions if p in share)


def place(shares: list[tuple[int, ...] | None], args: argparse.Namespace) -> Placement:
    """Where each result goes: routed, to one of its replica's partitions in turn."""
    partitions: list[int | None] = []
    for i in range(args.results):
        share = shares[i % args.replicas]
        partitions.append(
            None if share is None else share[i // args.replicas % len(share)]
        )
    return Placement(partitions)


async def publish(
    bootstrap: str, topic: str, partitions: list[int | None], text: str
) -> None:
    serde = AvroSerde()
    ctx = SerdeContext(topic)
    producer = build_producer(
        {"bootstrap_servers": bootstrap}, ProducerOptions(enable_idempotence=False)
    )
    await producer.start()
    try:
        deliveries = []
        for i, partition in enumerate(partitions):
            value = serde.serialize(page_result(doc_id(i), text), ctx)
            routed = {} if partition is None else {"partition": partition}
            deliveries.append(
                await producer.send(topic, value, key=doc_id(i).encode(), **routed)
            )
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


def page_text(lines: int) -> str:
    return LINE * lines


def page_result(document_id: str, text: str) -> OcrResult:
    """A one-page result as the vLLM engine's worker publishes it."""
    return OcrResult(
        document_id=document_id,
        status=DocumentStatus.OK,
        completed_at=utc_now(),
        text=text,
        pages=[OcrPage(1, PageStatus.OK, text, token_count=120)],
        page_count=1,
        model="Qwen/Qwen2.5-VL-7B-Instruct",
        engine="vllm",
        processing_time_ms=850,
        token_count=120,
        worker_id="worker-0",
        source_topic="ocr.requests",
        source_partition=0,
        source_offset=0,
        source_format="image/png",
    )


def broker_cpu_s(port: int) -> float:
    """CPU seconds the embedded broker listening on ``port`` has used (Linux)."""
    listener = f"tcp://127.0.0.1:{port}".encode()
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if listener not in (entry / "cmdline").read_bytes().split(b"\0"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return float("nan")


def finished(conn: Connection) -> Row:
    kind, row = conn.recv()
    assert kind == "done", kind
    assert isinstance(row, Row)
    return row


def decode_cost_us(text: str, count: int = 10_000) -> float:
    """What decoding one of these results costs, the work the key check skips."""
    serde, ctx = AvroSerde(), SerdeContext("t")
    values = [serde.serialize(page_result(doc_id(i), text), ctx) for i in range(count)]
    started = time.process_time()
    for value in values:
        serde.deserialize(OcrResult, value, ctx)
    return (time.process_time() - started) / count * 1e6


def report(rows: list[Row], broker_cpu: dict[str, float]) -> None:
    print(
        f"{'mode':<7} {'replica':>7} {'partitions':>10} {'read':>7} {'decoded':>7}"
        f" {'answered':>8} {'cpu s':>6} {'wall s':>6} {'idle cpu/s':>10}"
        f" {'busy cpu s':>10}"
    )
    for r in rows:
        print(
            f"{r.mode:<7} {r.replica:>7} {r.partitions:>10} {r.read:>7} {r.decoded:>7}"
            f" {r.answered:>8} {r.cpu_s:>6.2f} {r.wall_s:>6.2f} {r.idle_cpu:>10.3f}"
            f" {r.busy_cpu_s:>10.2f}"
        )
    totals = {mode: [r for r in rows if r.mode == mode] for mode in MODES}
    print()
    for mode, of_mode in totals.items():
        print(
            f"{mode:<7} every replica: read {sum(r.read for r in of_mode)},"
            f" decoded {sum(r.decoded for r in of_mode)},"
            f" cpu {sum(r.cpu_s for r in of_mode):.2f} s,"
            f" busy cpu {sum(r.busy_cpu_s for r in of_mode):.2f} s;"
            f" broker cpu {broker_cpu[mode]:.2f} s"
        )
    for mode in ("all", "all-old"):

        def ratio(value: Callable[[Row], float], mode: str = mode) -> str:
            whole = sum(value(r) for r in totals[mode])
            routed = sum(value(r) for r in totals["routed"])
            return f"x{whole / routed:.2f}" if routed > 0 else "n/a"

        print(
            f"ratio {mode}/routed: records read {ratio(lambda r: r.read)},"
            f" decoded {ratio(lambda r: r.decoded)}, cpu {ratio(lambda r: r.cpu_s)},"
            f" busy cpu {ratio(lambda r: r.busy_cpu_s)},"
            f" broker cpu x{broker_cpu[mode] / broker_cpu['routed']:.2f}"
        )


async def main(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    broker_cpu: dict[str, float] = {}
    with EmbeddedBroker() as broker:
        for mode in MODES:
            mode_rows, broker_cpu[mode] = await run_mode(broker, mode, args)
            rows.extend(mode_rows)
    report(rows, broker_cpu)
    text = page_text(args.lines)
    size = len(AvroSerde().serialize(page_result(doc_id(0), text), SerdeContext("t")))
    print(
        f"one result: {size} bytes; decoding it: {decode_cost_us(text):.1f} us"
        " (skipped, by its key, when no one waits for it)"
    )
    complete = all(r.answered == waited_for(r, args) for r in rows)
    return 0 if complete else 1


def waited_for(row: Row, args: argparse.Namespace) -> int:
    results, replicas = int(args.results), int(args.replicas)
    return (
        results if row.mode == "all-old" else len(range(row.replica, results, replicas))
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=int, default=30_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--lines", type=int, default=6, help="lines of text a result's page holds"
    )
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
