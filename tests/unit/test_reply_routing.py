"""Reply partitions without a broker: the choice, the rebalance, the worker's fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from prometheus_client import CollectorRegistry

from consumers.errors import InvalidRequestError
from consumers.outcomes import OutcomeBuilder
from consumers.settings import Settings
from producers.gateway.app import build_gateway
from producers.gateway.config import GatewayConfig
from producers.gateway.source import PendingReply, ReaderStatus, unroutable
from producers.progress import ProgressSender
from producers.replies import (
    NoReplyPartitionError,
    ReplyReader,
    ReplyReaderError,
    ReplyReassignedError,
)
from producers.results import ResultPublisher
from producers.routing import (
    CopartitionedAssignor,
    GroupAssignment,
    ReplyPartitions,
    check_copartitioned,
    sticky_shares,
)
from schemas import DocumentStatus, OcrPage, OcrRequest, OcrResult, PageStatus
from schemas.records import utc_now
from tests.support.records import consumer_record, encode_record, png_request

RESULTS, PROGRESS = "res", "prog"


# -- the choice -------------------------------------------------------------------


def test_requests_name_the_assigned_partitions_round_robin() -> None:
    partitions = ReplyPartitions()
    assert partitions.choose() is None  # nothing assigned yet
    partitions.assign([4, 1, 1])
    assert [partitions.choose() for _ in range(5)] == [1, 4, 1, 4, 1]
    partitions.revoke()
    assert partitions.choose() is None and partitions.routable == ()


async def test_a_submit_waits_for_an_assignment_within_its_time() -> None:
    partitions = ReplyPartitions()
    waiting = asyncio.create_task(partitions.wait(5))
    await asyncio.sleep(0)
    partitions.assign([2])
    assert await waiting == 2
    partitions.revoke()
    started = time.monotonic()
    assert await partitions.wait(0.05) is None
    assert time.monotonic() - started < 1


async def test_closing_wakes_a_submit_waiting_for_a_partition() -> None:
    partitions = ReplyPartitions()
    waiting = asyncio.create_task(partitions.wait(30))
    await asyncio.sleep(0)
    partitions.close()
    assert await asyncio.wait_for(waiting, 1) is None
    partitions.assign([0])  # a late assignment after the close changes nothing
    assert partitions.choose() is None


@pytest.mark.parametrize(
    ("counts", "ok"),
    [
        ({RESULTS: 6, PROGRESS: 6}, True),
        ({RESULTS: 6}, True),
        ({RESULTS: 6, PROGRESS: 4}, False),
    ],
)
def test_the_result_and_progress_topics_need_as_many_partitions(
    counts: dict[str, int], ok: bool
) -> None:
    if ok:
        check_copartitioned(counts)
    else:
        with pytest.raises(ValueError, match="res: 6, prog: 4"):
            check_copartitioned(counts)


# -- the group's assignor: the same numbers in both topics, kept where it can ---------


def check_balanced(shares: dict[str, list[int]], partitions: int) -> None:
    flat = sorted(p for share in shares.values() for p in share)
    assert flat == list(range(partitions))  # each partition once
    sizes = [len(share) for share in shares.values()]
    assert max(sizes) - min(sizes) <= 1


def test_a_first_assignment_shares_every_partition_out() -> None:
    shares = sticky_shares({"b": [], "a": [], "c": []}, 6)
    check_balanced(shares, 6)
    assert shares == {"a": [0, 1], "b": [2, 3], "c": [4, 5]}


@pytest.mark.parametrize("leaving", ["a", "b", "c"])
def test_a_member_leaving_moves_only_its_own_partitions(leaving: str) -> None:
    before = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    after = sticky_shares({m: p for m, p in before.items() if m != leaving}, 6)
    check_balanced(after, 6)
    for member, share in after.items():
        assert set(before[member]) <= set(share)


@pytest.mark.parametrize(
    ("before", "partitions"),
    [
        ({"a": [0, 1, 2, 3]}, 4),
        ({"a": [0, 1, 2], "b": [3, 4, 5]}, 6),
        ({"a": [0, 2, 4], "c": [1, 3, 5]}, 6),
        ({"a": [0, 1], "b": [2, 3], "c": [4, 5]}, 6),
    ],
)
def test_a_member_joining_takes_its_share_from_the_others_only(
    before: dict[str, list[int]], partitions: int
) -> None:
    after = sticky_shares({**before, "new": []}, partitions)
    check_balanced(after, partitions)
    for member, share in before.items():
        assert set(after[member]) <= set(share)  # nobody gets another's partition


def test_claims_past_the_topic_or_held_twice_are_dropped() -> None:
    shares = sticky_shares({"a": [0, 1, 7], "b": [1, 2]}, 4)
    check_balanced(shares, 4)
    assert shares["a"][:2] == [0, 1] and 2 in shares["b"]


class FourPartitions:
    """What the assignor reads of the cluster's metadata: 4 partitions a topic."""

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(4))


def test_the_assignor_gives_a_member_the_same_numbers_in_each_topic() -> None:
    cluster = FourPartitions()
    first, second = CopartitionedAssignor(), CopartitionedAssignor()
    first.on_assignment(
        ConsumerProtocolMemberAssignment(0, [(RESULTS, [0, 1, 2, 3])], b"")
    )
    members = {
        "m1": first.metadata({RESULTS, PROGRESS}),
        "m2": second.metadata({RESULTS, PROGRESS}),
    }
    assignment = CopartitionedAssignor().assign(cluster, members)
    held = {
        member: {topic: parts for topic, parts in a.assignment}
        for member, a in assignment.items()
    }
    assert held["m1"] == {PROGRESS: [0, 1], RESULTS: [0, 1]}  # kept what it held
    assert held["m2"] == {PROGRESS: [2, 3], RESULTS: [2, 3]}


# -- the worker's side: where a result and its progress go ---------------------------


@dataclass
class RoutingProducer:
    """A producer of ``partitions`` partitions a topic that records where each send
    went (None: the key's partition)."""

    partitions: int = 4
    sent: list[tuple[str, int | None, bytes]] = field(default_factory=list)
    lookups: int = 0

    async def partitions_for(self, topic: str) -> set[int]:
        self.lookups += 1
        return set(range(self.partitions))

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[None]:
        assert key is not None
        self.sent.append((topic, partition, key))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def publisher(producer: RoutingProducer) -> ResultPublisher:
    return ResultPublisher(
        producer, result_topic=RESULTS, dlq_topic="dlq", progress_topic=PROGRESS
    )


def result(document_id: str = "doc-1") -> OcrResult:
    return OcrResult(document_id, DocumentStatus.OK, utc_now())


@pytest.mark.parametrize(
    ("asked", "sent", "warned"),
    [(2, 2, False), (None, None, False), (4, None, True), (-1, None, True)],
    ids=["routed", "unrouted", "past-the-end", "negative"],
)
async def test_a_result_goes_to_its_reply_partition_or_else_its_key(
    asked: int | None,
    sent: int | None,
    warned: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = RoutingProducer()
    with caplog.at_level(logging.WARNING, logger="producers.results"):
        await (await publisher(producer).send_result(result(), partition=asked))
    assert producer.sent == [(RESULTS, sent, b"doc-1")]
    assert producer.lookups == (asked is not None)  # no lookup for the key's way
    assert (f"reply partition {asked} of document doc-1" in caplog.text) is warned


async def test_progress_follows_the_request_to_its_reply_partition() -> None:
    producer = RoutingProducer()
    sender = ProgressSender(publisher(producer))
    request = replace(png_request("doc-1"), stream=True, reply_partition=3)
    lost = replace(png_request("doc-2"), stream=True, reply_partition=9)
    for req in (request, lost):
        sender.delta(req, 1, "환자", attempt=1)
        await sender(req, OcrPage(1, PageStatus.OK, "환자"), 1)
    await sender.aclose()
    assert {(p, key) for _, p, key in producer.sent} == {
        (3, b"doc-1"),
        (None, b"doc-2"),
    }
    assert {topic for topic, _, _ in producer.sent} == {PROGRESS}


def test_every_outcome_carries_its_requests_reply_partition() -> None:
    builder = OutcomeBuilder("fake", "m", "w")
    msg = consumer_record(b"v", b"doc-1")
    req = replace(png_request("doc-1"), reply_partition=5)
    pages = [OcrPage(1, PageStatus.OK, "a")]
    finished = builder.finished(msg, req, None, pages, time.monotonic())
    failed = builder.failed(msg, req, None, InvalidRequestError("x"), 0.0)
    undecoded = builder.failed(msg, None, None, InvalidRequestError("x"), 0.0)
    assert (finished.reply_partition, failed.reply_partition) == (5, 5)
    assert undecoded.reply_partition is None  # never decoded: the key's partition


# -- the reader's side: a group member through rebalances ---------------------------


@dataclass
class Msg:
    offset: int
    key: bytes | None
    value: bytes | None


class GroupConsumer:
    """What a routed ``ReplyReader`` needs of a consumer in a group: the test plays the
    coordinator (``listener``) and the fetches (``deliver``)."""

    def __init__(self, partitions: int = 4, progress_partitions: int = 4) -> None:
        self.counts = {RESULTS: partitions, PROGRESS: progress_partitions}
        self.listener: GroupAssignment | None = None
        self.seeks: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int] = {}
        self._batches: asyncio.Queue[dict[TopicPartition, list[Msg]]] = asyncio.Queue()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.counts[topic]))

    def subscribe(self, topics: list[str], listener: GroupAssignment) -> None:
        assert sorted(topics) == sorted(self.counts)
        self.listener = listener

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.ends.get(tp, 0)

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Msg]]:
        return await self._batches.get()

    async def rebalance(
        self, results: set[int], progress: set[int] | None = None
    ) -> None:
        assert self.listener is not None
        await self.listener.on_partitions_revoked(set())
        assigned = {TopicPartition(RESULTS, p) for p in results} | {
            TopicPartition(PROGRESS, p)
            for p in (results if progress is None else progress)
        }
        await self.listener.on_partitions_assigned(assigned)

    async def deliver(self, topic: str, partition: int, *msgs: Msg) -> None:
        self._batches.put_nowait({TopicPartition(topic, partition): list(msgs)})
        for _ in range(5):  # the reader's task takes it
            await asyncio.sleep(0)


@asynccontextmanager
async def routed_reader(
    consumer: GroupConsumer, wait_s: float = 5.0
) -> AsyncIterator[ReplyReader]:
    reader = ReplyReader(
        consumer,
        RESULTS,
        PROGRESS,
        routed=True,
        assignment_wait_s=wait_s,
    )
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


def result_msg(offset: int, document_id: str) -> Msg:
    return Msg(
        offset, document_id.encode(), encode_record(result(document_id), RESULTS)
    )


async def test_a_rebalance_fails_the_replies_of_moved_partitions_and_keeps_the_rest() -> (
    None
):
    consumer = GroupConsumer()
    async with routed_reader(consumer) as reader:
        assert not reader.ready()
        await consumer.rebalance({0, 1, 2, 3})
        assert reader.ready() and reader.reply_partitions() == (0, 1, 2, 3)
        replies = {}
        for doc_id in ("d0", "d1", "d2", "d3"):
            partition = await reader.reply_partition()
            replies[partition] = reader.expect(doc_id, partition)
        await consumer.rebalance({1, 3})  # another replica joined: it took 0 and 2
        for partition in (0, 2):
            with pytest.raises(ReplyReassignedError, match=rf"res\[{partition}\]"):
                await replies[partition].result(0)
        assert not replies[1].done() and not replies[3].done()
        await consumer.deliver(RESULTS, 1, result_msg(0, "d1"))
        assert (await replies[1].result(1)).document_id == "d1"
        assert [await reader.reply_partition() for _ in range(2)] == [1, 3]


async def test_a_kept_partition_goes_on_from_where_it_was_read() -> None:
    consumer = GroupConsumer()
    kept, new = TopicPartition(RESULTS, 1), TopicPartition(RESULTS, 2)
    consumer.ends = {kept: 7, new: 40}
    async with routed_reader(consumer):
        await consumer.rebalance({1})
        assert consumer.seeks == {}  # a first assignment starts at the end
        await consumer.deliver(RESULTS, 1, result_msg(7, "x"), result_msg(8, "y"))
        consumer.ends[kept] = 12  # where the fetcher would reset it to: past 9..11
        await consumer.rebalance({1, 2})
    assert consumer.seeks == {kept: 9, TopicPartition(PROGRESS, 1): 0}


async def test_only_partitions_held_in_both_topics_are_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = GroupConsumer()
    async with routed_reader(consumer) as reader:
        await consumer.rebalance({0, 1}, progress={1, 2})
        assert reader.reply_partitions() == (1,)
    assert "differ" in caplog.text


async def test_records_for_no_one_waiting_are_skipped_undecoded() -> None:
    consumer = GroupConsumer()
    async with routed_reader(consumer) as reader:
        await consumer.rebalance({0})
        reply = reader.expect("mine", 0)
        await consumer.deliver(
            RESULTS,
            0,
            result_msg(0, "other-1"),
            Msg(1, b"other-2", b"not even avro"),
            result_msg(2, "mine"),
        )
        assert (await reply.result(1)).document_id == "mine"
        assert (reader.counts.read, reader.counts.decoded) == (3, 1)


async def test_no_partition_within_the_wait_publishes_nothing() -> None:
    consumer = GroupConsumer()
    async with routed_reader(consumer, wait_s=0.05) as reader:
        with pytest.raises(NoReplyPartitionError, match="no partition of res"):
            await reader.reply_partition()


async def test_an_every_partition_reader_names_none() -> None:
    reader = ReplyReader(GroupConsumer(), RESULTS)
    assert await reader.reply_partition() is None
    assert reader.reply_partitions() is None


async def test_a_topic_pair_with_other_counts_is_refused_at_start() -> None:
    with pytest.raises(ReplyReaderError, match="as many partitions"):
        async with routed_reader(GroupConsumer(4, 6)):
            pass


# -- the gateway: its group, 503 for a reply it cannot hear, /ready until assigned ----


@pytest.mark.parametrize(
    ("raw", "group"),
    [(None, "medocr-gateways"), ("gw-blue", "gw-blue"), ("", None), ("  ", None)],
)
def test_gateway_group_blank_reads_every_partition(
    raw: str | None, group: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if raw is None:
        monkeypatch.delenv("GATEWAY_GROUP", raising=False)
    else:
        monkeypatch.setenv("GATEWAY_GROUP", raw)
    assert Settings().gateway.group == group


def test_a_reply_lost_to_a_rebalance_answers_503_naming_the_request() -> None:
    error = unroutable(ReplyReassignedError("req-7", RESULTS, 3), "req-7")
    assert (error.status, error.code, error.request_id) == (503, "UNAVAILABLE", "req-7")
    assert error.headers == {"Retry-After": "1"}
    assert "res[3]" in error.message and "still published" in error.message


class AssignedSource:
    """A source whose reader may hold no partition yet."""

    def __init__(self) -> None:
        self.partitions: tuple[int, ...] = ()

    async def submit(self, request: OcrRequest) -> PendingReply:
        raise AssertionError("not submitted in this test")

    def failure(self) -> str | None:
        return None

    async def broker_reachable(self) -> bool:
        return True

    def reader_ready(self) -> bool:
        return bool(self.partitions)

    def reply_partitions(self) -> tuple[int, ...] | None:
        return self.partitions


async def test_ready_waits_for_the_reader_to_hold_a_partition() -> None:
    source = AssignedSource()
    assert isinstance(source, ReaderStatus)
    app = build_gateway(source, GatewayConfig(api_key="k"), CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        before = await http.get("/ready")
        source.partitions = (0, 2)
        after = await http.get("/ready")
    assert before.status_code == 503
    assert (before.json()["reader_ready"], before.json()["reply_partitions"]) == (
        False,
        [],
    )
    assert after.status_code == 200
    assert (after.json()["reader_ready"], after.json()["reply_partitions"]) == (
        True,
        [0, 2],
    )
