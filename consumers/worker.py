"""The worker loop: fetch a micro-batch → recognise → publish → commit, at least once.

Every record runs as its own task so that a slow document never blocks the ones behind
it; the page budget pauses fetching instead of buffering without bound. Offsets are
committed only up to each partition's first unresolved record, after the broker has
acknowledged that record's result (and dead letter). A fatal error stops the loop at
once, commits nothing more and is raised to the entry point; a stop request drains the
records in flight, commits them and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumers.budget import PageBudget, PagePlaces
from consumers.documents import DocumentRecognizer
from consumers.errors import Action, FatalError, broker_error, classify
from consumers.metrics import WorkerMetrics
from consumers.offsets import OffsetTracker
from consumers.outcomes import Msg, Outcome, where
from consumers.retry import RetryPolicy, retry_transient
from consumers.source import RecordSource
from consumers.state import WorkerState
from producers.kafka import OFFSET_RESET
from producers.results import ResultPublisher

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 5.0


class WorkerFailedError(FatalError):
    """The worker stopped on a fatal error; the uncommitted records will be replayed."""

    error_code = "WORKER_FAILED"


@dataclass(frozen=True)
class LoopOptions:
    """How the loop fetches and drains; the defaults are the settings' defaults
    (``BatchSettings`` reads them from here)."""

    max_records: int = 16  # per fetch, and never more than the budget's room
    max_wait_ms: int = 200
    drain_timeout_s: float = 60.0
    broker_check_timeout_s: float = 5.0
    offset_reset: Literal["earliest", "latest"] = OFFSET_RESET  # the consumer's own


class _InflightRecords:
    """The records in flight, one task each: the one count of records in flight.

    A record is in flight from its admission until its task is done, however it ended
    (published, failed, cancelled by a drain). Drains, revokes and the burst check wait
    on exactly these tasks, so the ``ocr_inflight_records`` gauge and the stall check
    (``WorkerState.inflight_records``) read this table too, and no second counter can
    drift from it. The ``OffsetTracker``'s pending offsets are not this count: a record
    finished out of order stays pending there until every earlier one finished.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Task[None], tp: TopicPartition) -> None:
        self._tasks[task] = tp

    def discard(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    def of(self, tps: Iterable[TopicPartition]) -> list[asyncio.Task[None]]:
        wanted = set(tps)
        return [task for task, tp in self._tasks.items() if tp in wanted]


class OcrWorker:
    def __init__(
        self,
        consumer: RecordSource,
        publisher: ResultPublisher,
        recognizer: DocumentRecognizer,
        budget: PageBudget,
        metrics: WorkerMetrics,
        state: WorkerState,
        *,
        options: LoopOptions,
        publish_retry: RetryPolicy,
    ) -> None:
        self._consumer = consumer
        self._publisher = publisher
        self._recognizer = recognizer
        self._budget = budget
        self._metrics = metrics
        self._state = state
        self._options = options
        self._publish_retry = publish_retry
        self._offsets = OffsetTracker()
        self._inflight = _InflightRecords()
        self._failure: BaseException | None = None
        self._paused = False
        self._next_check_at = 0.0
        self._beyond_end: dict[TopicPartition, int] = {}  # seen past the end once
        metrics.inflight_limit.set(budget.limit)
        # the gauges and the stall check read the one count each, never a mirror of it
        metrics.inflight_pages.set_function(lambda: budget.used)
        metrics.inflight_records.set_function(self._inflight.__len__)
        state.count_inflight = self._inflight.__len__

    def rebalance_listener(self) -> ConsumerRebalanceListener:
        return _RebalanceListener(self)

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Consume until ``stop`` is set (or, with ``burst``, until the input is drained)."""
        try:
            while not stop.is_set():
                self._raise_if_failed()
                await self._commit_ready()
                await self._check_partitions()
                if self._budget.room() == 0:
                    self._pause()
                    await self._budget.wait_for_room(self._options.max_wait_ms / 1000)
                    continue
                self._resume()
                fetched = await self._fetch()
                if burst and not fetched and await self._drained():
                    log.info("burst: input drained, stopping")
                    break
            self._state.stopping = True
            await self._drain(self._inflight.tasks())
            self._raise_if_failed()
            await self._commit_ready()
        except BaseException:
            self._state.stopping = True
            await self._cancel(self._inflight.tasks())
            raise

    async def _fetch(self) -> int:
        room = self._budget.room()
        batch = await self._consumer.getmany(
            timeout_ms=self._options.max_wait_ms,
            max_records=min(self._options.max_records, room),
        )
        count = sum(len(msgs) for msgs in batch.values())
        if count:
            self._metrics.batch_size.observe(count)
        for tp, msgs in batch.items():
            for msg in msgs:
                self._admit(tp, msg)
        return count

    def _admit(self, tp: TopicPartition, msg: Msg) -> None:
        self._offsets.admit(tp, msg.offset)
        places = PagePlaces.admit(self._budget)
        if not self._inflight:
            self._state.work_arrived()
        task = asyncio.create_task(self._handle(tp, msg, places), name=where(msg))
        self._inflight.add(task, tp)
        task.add_done_callback(partial(self._task_done, places))

    async def _handle(self, tp: TopicPartition, msg: Msg, places: PagePlaces) -> None:
        outcome = await self._recognizer.recognize(msg, places)
        await retry_transient(
            lambda: self._publish(outcome),
            self._publish_retry,
            what=f"{where(msg)} publish",
            on_retry=lambda exc: self._metrics.retries.labels(reason="publish").inc(),
        )
        self._offsets.finish(tp, msg.offset)
        self._account(outcome)

    async def _publish(self, outcome: Outcome) -> None:
        try:
            deliveries = [
                await self._publisher.send_result(
                    outcome.result, partition=outcome.reply_partition
                )
            ]
            if outcome.dead_letter is not None:
                deliveries.append(
                    await self._publisher.send_dead_letter(outcome.dead_letter)
                )
            await asyncio.gather(*deliveries)
        except KafkaError as exc:
            raise broker_error(exc, "publishing a result") from exc

    def _account(self, outcome: Outcome) -> None:
        result = outcome.result
        self._metrics.records.labels(outcome=result.status.value.lower()).inc()
        if outcome.dead_letter is not None:
            self._metrics.dead_letters.labels(
                error_code=outcome.dead_letter.error_code
            ).inc()
        if result.end_to_end_ms is not None and result.end_to_end_ms >= 0:
            self._metrics.end_to_end_seconds.observe(result.end_to_end_ms / 1000)

    def _task_done(self, places: PagePlaces, task: asyncio.Task[None]) -> None:
        """A record's task ended, however: it leaves the table and gives its places
        back here, not in a ``finally``, which a task cancelled before it ran never
        enters."""
        places.give_all()
        self._inflight.discard(task)
        self._state.progressed()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._failure is None:
            log.error("%s: fatal %s: %s", task.get_name(), type(exc).__name__, exc)
            self._failure = exc
            self._state.failure = type(exc).__name__
            self._budget.release(0)  # wake the loop

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise WorkerFailedError(str(self._failure)) from self._failure

    async def _commit_ready(self, only: Iterable[TopicPartition] | None = None) -> None:
        # Only partitions still assigned: a rebalance may have moved the others away.
        keep = set(only) if only is not None else self._consumer.assignment()
        offsets = {tp: off for tp, off in self._offsets.ready().items() if tp in keep}
        if not offsets or self._failure is not None:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (rebalance): the new owner replays from the last commit.
            log.warning("commit rejected after a rebalance: %s", exc)
            return
        except KafkaError as exc:
            error = broker_error(exc, "an offset commit")
            if classify(error) is Action.CRASH:
                raise error from exc
            log.warning("commit failed (%s); retrying with the next batch", exc)
            return
        self._offsets.committed(offsets)
        self._metrics.commits.inc()
        for tp, offset in offsets.items():
            log.debug("committed %s[%d]@%d", tp.topic, tp.partition, offset)

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        if not tasks:
            return
        log.info("draining %d records in flight", len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=self._options.drain_timeout_s)
        if pending:
            log.warning("abandoning %d records after the drain timeout", len(pending))
            await self._cancel(list(pending))

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    def _pause(self) -> None:
        if not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True

    def _resume(self) -> None:
        if self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    async def _drained(self) -> bool:
        assignment = self._consumer.assignment()
        if not self._state.joined or not assignment or self._inflight:
            return False
        ends = await self._consumer.end_offsets(list(assignment))
        for tp in assignment:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    async def _check_partitions(self) -> None:
        """Every few seconds: is the broker reachable, where does each partition end,
        and did a broker lose its log under our position?"""
        now = time.monotonic()
        if now < self._next_check_at:
            return
        self._next_check_at = now + CHECK_INTERVAL_S
        assignment = self._consumer.assignment()
        try:
            async with asyncio.timeout(self._options.broker_check_timeout_s):
                if assignment:
                    ends = await self._consumer.end_offsets(list(assignment))
                    positions = {tp: await self._consumer.position(tp) for tp in ends}
                else:
                    ends, positions = {}, {}
                    await self._consumer.topics()
        except (KafkaError, TimeoutError) as exc:
            self._broker_reachable(False, exc)
            return
        self._broker_reachable(True)
        beyond_end, self._beyond_end = self._beyond_end, {}
        for tp, listed_end in ends.items():
            position = positions[tp]
            # A broker may list an end behind the last fetch's high watermark (the
            # embedded one sometimes gives a batch's first offset): take the larger,
            # and reset only when two checks in a row find the same position past it.
            end = max(listed_end, self._consumer.highwater(tp) or 0)
            if position > end:
                if beyond_end.get(tp) != position:
                    self._beyond_end[tp] = position
                    continue
                await self._reset_beyond_end(tp, position, end)
                position = end  # where the lag is counted from until the next check
            first = self._offsets.first_unfinished(tp)
            self._metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                max(end - (position if first is None else first), 0)
            )

    def _broker_reachable(
        self, reachable: bool, exc: BaseException | None = None
    ) -> None:
        if reachable != self._state.broker_reachable:
            if reachable:
                log.warning("the broker is reachable again")
            else:
                log.error(
                    "the broker is not reachable (%s): not ready until it is",
                    type(exc).__name__,
                )
        self._state.broker_reachable = reachable

    async def _reset_beyond_end(
        self, tp: TopicPartition, position: int, end: int
    ) -> None:
        """Our position is past the partition's end: the broker lost records we had read
        (a broker restarted empty, or a topic recreated). Apache Kafka answers such a
        fetch with OFFSET_OUT_OF_RANGE and the client resets itself; a broker that
        answers with nothing would make the worker skip every record up to our old
        position without a trace. Say so loudly and follow ``auto_offset_reset``."""
        log.error(
            "%s[%d]: position %d is beyond the partition's end %d: the broker lost "
            "records; resetting to the %s offset (auto_offset_reset)",
            tp.topic,
            tp.partition,
            position,
            end,
            self._options.offset_reset,
        )
        await self._drain(self._inflight.of([tp]))
        self._offsets.forget(tp)  # nothing read before the loss may be committed now
        if self._options.offset_reset == "latest":
            await self._consumer.seek_to_end(tp)
        else:
            await self._consumer.seek_to_beginning(tp)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info(
            "partitions revoked: %s", sorted((tp.topic, tp.partition) for tp in revoked)
        )
        self._state.assigned = self._state.assigned - revoked
        await self._drain(self._inflight.of(revoked))
        await self._commit_ready(only=revoked)
        for tp in revoked:
            self._offsets.forget(tp)
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(tp.topic, str(tp.partition))

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions assigned: %s",
            sorted((tp.topic, tp.partition) for tp in assigned),
        )
        self._state.joined = True
        self._state.assigned = frozenset(assigned)
        self._paused = False


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: OcrWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.on_assigned(assigned)
