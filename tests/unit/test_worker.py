"""The worker loop through its consumer seam, without a broker: budget pauses,
rebalances, fatal failures, the commit rule and the counts in flight (data: generated
blank PNG pages)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.budget import PageBudget
from consumers.documents import DocumentRecognizer, RecognizerOptions
from consumers.engines.fake import FakeEngine
from consumers.inputs import ImageLimits
from consumers.metrics import WorkerMetrics
from consumers.outcomes import OutcomeBuilder
from consumers.recognition import PageOptions, PageRecognizer
from consumers.retry import RetryPolicy
from consumers.state import DEFAULT_STALL_TIMEOUT_S, WorkerState
from consumers.worker import LoopOptions, OcrWorker, WorkerFailedError
from producers.results import ResultPublisher
from schemas import OcrResult
from tests.support.records import decode_record, encode_record, png_request
from tests.support.source import MemoryProducer, MemorySource

P0 = TopicPartition("ocr.requests", 0)
P1 = TopicPartition("ocr.requests", 1)
FAST = RetryPolicy(attempts=2, base_s=0.001, max_s=0.002)


class Loop:
    """A worker over a memory source and producer, with a fake engine."""

    def __init__(
        self,
        engine: FakeEngine,
        *partitions: TopicPartition,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.source = MemorySource(assigned=set(partitions))
        self.producer = MemoryProducer()
        self.registry = CollectorRegistry()
        metrics = WorkerMetrics(self.registry, engine.name)
        self.state = WorkerState(engine=engine, stall_timeout_s=stall_timeout_s)
        self.budget = PageBudget(engine.capacity())
        pages = PageRecognizer(
            engine,
            metrics,
            PageOptions(default_prompt="p", default_max_tokens=16, retry=FAST),
            state=self.state,
        )
        recognizer = DocumentRecognizer(
            pages,
            RecognizerOptions(limits=ImageLimits(), uri_roots=()),
            OutcomeBuilder(engine="fake", model="fake-1", worker_id="w"),
        )
        self.worker = OcrWorker(
            self.source,
            ResultPublisher(
                self.producer,
                result_topic="res",
                dlq_topic="dlq",
                progress_topic="prog",
            ),
            recognizer,
            self.budget,
            metrics,
            self.state,
            options=LoopOptions(max_records=4, max_wait_ms=5, drain_timeout_s=10),
            publish_retry=FAST,
        )
        self.stop = asyncio.Event()

    def publish(self, tp: TopicPartition, document_id: str) -> None:
        request = encode_record(png_request(document_id), tp.topic)
        self.source.append(tp, request, document_id.encode())

    def results(self) -> list[OcrResult]:
        return [
            decode_record(OcrResult, v, t)
            for t, v, _ in self.producer.sent
            if t == "res"
        ]

    def answered(self) -> set[str]:
        return {r.document_id for r in self.results()}

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[asyncio.Task[None]]:
        task = asyncio.create_task(self.worker.run(self.stop))
        try:
            yield task
        finally:
            self.stop.set()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)

    async def until(self, done: Callable[[], object], timeout_s: float = 30) -> None:
        async def wait() -> None:
            while not done():  # noqa: ASYNC110 - a condition of the worker's, polled
                await asyncio.sleep(0.005)

        await asyncio.wait_for(wait(), timeout_s)


def gated(*ids: str) -> tuple[FakeEngine, dict[str, asyncio.Event]]:
    gates = {doc: asyncio.Event() for doc in ids}
    return FakeEngine(gates=gates, capacity_pages=2), gates


async def test_fetching_pauses_while_the_budget_is_spent_and_resumes() -> None:
    ids = [f"d{n}" for n in range(5)]
    engine, gates = gated(*ids)
    loop = Loop(engine, P0)
    await engine.start()
    for doc in ids:
        loop.publish(P0, doc)
    async with loop.running():
        await loop.until(lambda: engine.concurrent == 2)
        await loop.until(lambda: loop.source.paused == {P0})
        fetches = loop.source.fetches
        await asyncio.sleep(0.2)  # spent budget: the loop waits, it does not fetch
        assert loop.source.fetches == fetches
        assert loop.source.positions[P0] == 2  # no record taken beyond the budget
        for gate in gates.values():
            gate.set()
        await loop.until(lambda: loop.answered() == set(ids))
        await loop.until(lambda: loop.source.paused == set())
        await loop.until(lambda: loop.source.commits[-1:] == [{P0: 5}])


async def test_a_revoke_drains_and_commits_only_the_revoked_partitions() -> None:
    engine, gates = gated("slow-p0", "held-p1")
    engine.capacity_pages = 8
    loop = Loop(engine, P0, P1)
    await engine.start()
    loop.publish(P0, "slow-p0")
    loop.publish(P1, "held-p1")
    revoke_commits: list[dict[TopicPartition, int]] = []

    async def revoke(tps: set[TopicPartition]) -> None:
        before = len(loop.source.commits)
        asyncio.get_running_loop().call_later(0.05, gates["slow-p0"].set)
        await loop.worker.on_revoked(tps)
        revoke_commits.extend(loop.source.commits[before:])

    async with loop.running():
        await loop.until(lambda: engine.concurrent == 2)
        loop.source.revoke_at_next_fetch({P0}, revoke)
        await loop.until(lambda: bool(revoke_commits))
        assert revoke_commits == [{P0: 1}]  # drained, committed, and only P0
        assert "slow-p0" in loop.answered()
        assert "held-p1" not in loop.answered()
        gates["held-p1"].set()
        await loop.until(lambda: {P1: 1} in loop.source.commits)
    assert all(P0 not in commit for commit in loop.source.commits[1:])


async def test_a_fatal_failure_commits_nothing_more() -> None:
    engine, gates = gated("after")
    engine.dead_on = {"dies"}
    engine.capacity_pages = 8
    loop = Loop(engine, P0)
    await engine.start()
    for doc in ("first", "dies", "after"):
        loop.publish(P0, doc)
    async with loop.running() as task:
        await loop.until(task.done)
        with pytest.raises(WorkerFailedError):
            task.result()
        commits = len(loop.source.commits)
        gates["after"].set()
        await asyncio.sleep(0.05)
    assert len(loop.source.commits) == commits
    assert all(commit.get(P0, 0) <= 1 for commit in loop.source.commits)
    assert "dies" not in loop.answered()
    # the cancelled records left the count and gave their places back
    assert loop.state.inflight_records == 0
    assert loop.budget.used == 0


def seeds() -> Iterator[int]:
    yield from range(12)


@pytest.mark.parametrize("seed", list(seeds()))
async def test_a_commit_never_passes_an_unfinished_record(seed: int) -> None:
    """Random page times on two partitions: every commit covers finished records only."""
    rng = random.Random(seed)
    ids = {tp: [f"{tp.partition}-{n}" for n in range(12)] for tp in (P0, P1)}
    engine = FakeEngine(capacity_pages=6)
    engine.slow = {doc: rng.uniform(0, 0.02) for docs in ids.values() for doc in docs}
    loop = Loop(engine, P0, P1)
    await engine.start()
    for tp, docs in ids.items():
        for doc in docs:
            loop.publish(tp, doc)
    violations: list[str] = []

    def check(offsets: dict[TopicPartition, int]) -> None:
        answered = loop.answered()
        for tp, offset in offsets.items():
            missing = [d for d in ids[tp][:offset] if d not in answered]
            if missing:
                violations.append(f"{tp.partition}@{offset} before {missing}")

    loop.source.on_commit = check
    async with loop.running():
        await loop.until(lambda: loop.answered() == set(ids[P0] + ids[P1]))
        await loop.until(lambda: merged(loop.source.commits) == {P0: 12, P1: 12})
    assert violations == []


def merged(commits: list[dict[TopicPartition, int]]) -> dict[TopicPartition, int]:
    last: dict[TopicPartition, int] = {}
    for commit in commits:
        last.update(commit)
    return last


async def test_records_in_flight_are_counted_once_by_the_gauge_and_the_state() -> None:
    """The gauge and the stall check read the worker's tasks: both follow the records
    the engine is holding, and both fall to 0 once they finished."""
    ids = ["a", "b", "c"]
    engine, gates = gated(*ids)
    engine.capacity_pages = 8
    loop = Loop(engine, P0)
    await engine.start()
    assert loop.gauge("ocr_inflight_records") == 0
    for doc in ids:
        loop.publish(P0, doc)
    async with loop.running():
        await loop.until(lambda: engine.concurrent == 3)
        assert loop.gauge("ocr_inflight_records") == 3
        assert loop.state.inflight_records == 3
        assert loop.gauge("ocr_inflight_pages") == loop.budget.used == 3
        gates["a"].set()
        await loop.until(lambda: loop.answered() == {"a"})
        await loop.until(lambda: loop.state.inflight_records == 2)
        assert loop.gauge("ocr_inflight_records") == 2
        gates["b"].set()
        gates["c"].set()
        await loop.until(lambda: loop.answered() == set(ids))
        await loop.until(lambda: loop.state.inflight_records == 0)
        assert loop.gauge("ocr_inflight_records") == 0
        assert loop.gauge("ocr_inflight_pages") == loop.budget.used == 0


STALL_S = 0.3


async def test_a_stall_is_seen_while_records_are_in_flight_and_not_after() -> None:
    engine, gates = gated("stuck", "later")
    engine.capacity_pages = 8
    loop = Loop(engine, P0, stall_timeout_s=STALL_S)
    await engine.start()
    loop.publish(P0, "stuck")
    async with loop.running():
        await loop.until(lambda: engine.concurrent == 1)
        assert not loop.state.stalled()
        await asyncio.sleep(STALL_S * 2)  # a record in flight, nothing finished
        assert loop.state.stalled()
        assert loop.state.check().status == "stalled"
        gates["stuck"].set()
        await loop.until(lambda: loop.state.inflight_records == 0)
        assert not loop.state.stalled()
        await asyncio.sleep(STALL_S * 2)  # idle: nothing in flight is never a stall
        assert not loop.state.stalled()
        loop.publish(P0, "later")  # work arriving on an idle worker restarts the clock
        await loop.until(lambda: engine.concurrent == 1)
        assert loop.state.inflight_records == 1
        assert not loop.state.stalled()
        assert loop.state.check().idle_s < STALL_S
        gates["later"].set()
        await loop.until(lambda: loop.answered() == {"stuck", "later"})
