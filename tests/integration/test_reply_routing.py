"""Replies routed by partition: gateway-style clients in one group, a real broker and
worker (the fake engine), and the every-partition path beside them.

Rebalances on the embedded broker take seconds (a member's join waits for the others):
every wait here is generous, and what a test asserts never depends on how long one took.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from consumers.engines.fake import FakeEngine
from consumers.local.broker import ensure_topics, free_port
from consumers.settings import Settings
from producers.cli import PublishOptions, publish_command
from producers.client import OcrClient
from producers.gateway.config import GatewayConfig
from producers.gateway.server import GatewayStartError, run_gateway
from producers.kafka import build_waiter_consumer
from producers.replies import PageTexts, Reply, ReplyReader, ReplyReassignedError
from schemas import OcrResult
from tests.support.gateway import served_gateway
from tests.support.kafka import from_the_beginning
from tests.support.records import png_request
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

ASSIGNED_S = 90  # a join, and the rebalance it starts, on the embedded broker
KEY = "gw-test-key-0123456789"
PNG = png_request("page").image or b""


def streaming(settings: Settings) -> Settings:
    """One DELTA per word the fake engine streams."""
    batch = settings.batch.model_copy(update={"stream_flush_deltas": 1})
    return settings.model_copy(update={"batch": batch})


def group_of(settings: Settings) -> str:
    return f"gw-{settings.kafka.consumer_group}"


def routed(settings: Settings) -> OcrClient:
    return settings.client(progress=True, reply_group=group_of(settings))


async def until_split(*clients: OcrClient, partitions: int) -> None:
    """Until every client holds its share: disjoint, together every partition."""
    async with asyncio.timeout(ASSIGNED_S):
        while True:
            held = [c.reply_partitions() or () for c in clients]
            flat = [p for share in held for p in share]
            if all(c.ready() for c in clients) and sorted(flat) == list(
                range(partitions)
            ):
                return
            await asyncio.sleep(0.1)


async def placed(settings: Settings, topic: str) -> list[tuple[int, str]]:
    """Every record of ``topic`` so far: (partition, key)."""
    async with from_the_beginning(settings, topic) as consumer:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        records: list[tuple[int, str]] = []
        async with asyncio.timeout(60):
            while len(records) < sum(ends.values()):
                batch = await consumer.getmany(timeout_ms=200)
                records.extend(
                    (tp.partition, msg.key.decode())
                    for tp, msgs in batch.items()
                    for msg in msgs
                )
        return records


async def streamed(reply: Reply) -> tuple[str, OcrResult]:
    """The text the reply's events told, and its result."""
    texts = PageTexts()
    async with asyncio.timeout(60):
        async for event in reply.events():
            texts.apply(event)
    return texts.text(), await reply.result(0)


async def test_clients_in_one_group_each_hear_only_their_own_replies(
    settings: Settings,
) -> None:
    settings = streaming(settings)
    partitions = settings.kafka.partitions
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_worker(settings, FakeEngine()))
        a = await stack.enter_async_context(routed(settings))
        b = await stack.enter_async_context(routed(settings))
        await a.start()
        await b.start()
        await until_split(a, b, partitions=partitions)
        shares = {
            "a": set(a.reply_partitions() or ()),
            "b": set(b.reply_partitions() or ()),
        }
        replies = {
            f"{name}-{i}": await client.submit(png_request(f"{name}-{i}"), stream=True)
            for name, client in (("a", a), ("b", b))
            for i in range(4)
        }
        told = await asyncio.gather(*map(streamed, replies.values()))
        answers = dict(zip(replies, told, strict=True))
        counts = {"a": a.reader_counts(), "b": b.reader_counts()}
    for doc_id, (text, result) in answers.items():
        assert result.document_id == doc_id and result.status.value == "OK"
        assert text == result.text == f"{doc_id} p1 64x32"
    results = await placed(settings, settings.kafka.result_topic)
    progress = await placed(settings, settings.kafka.progress_topic)
    assert len(results) == len(replies) and len(progress) > len(replies)
    for partition, key in results + progress:
        owner = key.split("-")[0]
        assert partition in shares[owner], (key, partition, shares)
    for owner in ("a", "b"):
        # Round robin over its share: each of its partitions named as often.
        named = Counter(p for p, key in results if key.startswith(owner))
        assert named == dict.fromkeys(shares[owner], 4 // len(shares[owner]))
        # It read the records of its partitions only, and every one was its own.
        own = sum(1 for _, key in results + progress if key.startswith(owner))
        owner_counts = counts[owner]
        assert owner_counts is not None
        assert owner_counts.read == owner_counts.decoded == own


@pytest.mark.parametrize("answered", ["after", "during"])
async def test_a_rebalance_fails_the_replies_of_partitions_that_moved_only(
    settings: Settings, answered: str
) -> None:
    """A's replies wait in the engine while B joins; answered after the rebalance, or
    during it (A holds no partition then: a kept one goes on from where A left it)."""
    partitions = settings.kafka.partitions
    gates = {f"a-{p}": asyncio.Event() for p in range(partitions)}
    engine = FakeEngine(gates=dict(gates))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_worker(settings, engine))
        a = await stack.enter_async_context(routed(settings))
        await a.start()
        await until_split(a, partitions=partitions)
        # One request a partition (round robin), held in the engine.
        replies = [await a.submit(png_request(doc_id)) for doc_id in gates]
        b = await stack.enter_async_context(routed(settings))
        await b.start()
        if answered == "during":
            async with asyncio.timeout(ASSIGNED_S):
                while a.ready():  # noqa: ASYNC110 - the revocation has no event
                    await asyncio.sleep(0.01)
            for gate in gates.values():
                gate.set()
            async with asyncio.timeout(60):
                topic = settings.kafka.result_topic
                while len(await placed(settings, topic)) < 4:  # noqa: ASYNC110 - a topic
                    await asyncio.sleep(0.05)
            assert not a.ready(), "the results came after the rebalance ended"
        await until_split(a, b, partitions=partitions)
        kept = set(a.reply_partitions() or ())
        for gate in gates.values():
            gate.set()
        outcomes = await asyncio.gather(
            *(reply.result(60) for reply in replies), return_exceptions=True
        )
    where = {key: p for p, key in await placed(settings, settings.kafka.result_topic)}
    for reply, outcome in zip(replies, outcomes, strict=True):
        if where[reply.document_id] in kept:
            assert isinstance(outcome, OcrResult), outcome
        else:  # its result went to b's partition, where nobody waits for it
            assert isinstance(outcome, ReplyReassignedError), outcome
            assert reply.partition == outcome.partition == where[reply.document_id]
    assert 0 < len(kept) < partitions


async def test_a_replica_leaving_fails_no_reply_of_the_others(
    settings: Settings,
) -> None:
    partitions = settings.kafka.partitions
    engine = FakeEngine(gates={})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_worker(settings, engine))
        a = await stack.enter_async_context(routed(settings))
        async with routed(settings) as b:
            await a.start()
            await b.start()
            await until_split(a, b, partitions=partitions)
            held = set(a.reply_partitions() or ())
            gates = {f"a-{p}": asyncio.Event() for p in held}
            engine.gates.update(gates)
            replies = [await a.submit(png_request(doc_id)) for doc_id in gates]
        await until_split(a, partitions=partitions)  # b left: a holds every one
        for gate in gates.values():
            gate.set()
        results = [await reply.result(60) for reply in replies]
    assert [r.document_id for r in results] == list(gates)
    assert {reply.partition for reply in replies} == held


async def test_a_reply_partition_the_topic_lacks_falls_back_to_the_key(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    partitions = settings.kafka.partitions
    lost = replace(png_request("nowhere"), reply_partition=partitions + 3)
    routed_there = replace(png_request("there"), reply_partition=partitions - 1)
    with caplog.at_level(logging.WARNING, logger="producers.results"):
        async with (
            running_worker(settings, FakeEngine()),
            settings.client() as client,  # every partition: it hears both
        ):
            replies = [await client.submit(r) for r in (lost, routed_there)]
            results = [await reply.result(60) for reply in replies]
    assert [r.status.value for r in results] == ["OK", "OK"]
    where = {key: p for p, key in await placed(settings, settings.kafka.result_topic)}
    key_partition = DefaultPartitioner()(b"nowhere", list(range(partitions)), None)
    assert where["nowhere"] == key_partition
    assert where["there"] == partitions - 1
    assert f"reply partition {partitions + 3} of document nowhere" in caplog.text


async def test_every_partition_readers_still_hear_routed_and_unrouted_results(
    settings: Settings, tmp_path: Path
) -> None:
    """The CLI path beside a gateway group: it reads every partition, so it hears
    its own results and those routed to a gateway replica."""
    scan = tmp_path / "cli-doc.png"
    scan.write_bytes(PNG)
    out = io.StringIO()
    kafka = settings.kafka
    subscriber = ReplyReader(
        build_waiter_consumer(
            kafka.client_kwargs(), settings.limits.max_document_bytes
        ),
        kafka.result_topic,
    )
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_worker(settings, FakeEngine()))
        client = await stack.enter_async_context(routed(settings))
        cli = await stack.enter_async_context(settings.client())
        await client.start()
        await subscriber.start()
        stack.push_async_callback(subscriber.stop)
        await until_split(client, partitions=kafka.partitions)
        heard = subscriber.expect("gw-doc")
        routed_reply = await client.submit(png_request("gw-doc"))
        status = await publish_command(
            [scan], cli, PublishOptions(wait=True, timeout_s=60), out=out
        )
        assert (await routed_reply.result(60)).document_id == "gw-doc"
        assert (await heard.result(60)).document_id == "gw-doc"
    assert status == 0 and "== cli-doc: OK (1 pages" in out.getvalue()


@asynccontextmanager
async def gateway(
    settings: Settings, client: OcrClient
) -> AsyncIterator[httpx.AsyncClient]:
    """``medocr gateway`` on a free port in front of ``client``."""
    config = GatewayConfig(
        api_key=KEY, result_topic=settings.kafka.result_topic, timeout_s=60
    )
    async with served_gateway(
        client,
        config,
        settings.kafka.client_kwargs(),
        until="/ready",
        timeout_s=ASSIGNED_S,
        poll_s=0.1,
    ) as served:
        yield served.http


async def test_two_gateway_replicas_answer_over_http(settings: Settings) -> None:
    settings = streaming(settings)
    page = base64.b64encode(PNG).decode()
    auth = {"Authorization": f"Bearer {KEY}"}
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_worker(settings, FakeEngine()))
        clients = [await stack.enter_async_context(routed(settings)) for _ in range(2)]
        https = [await stack.enter_async_context(gateway(settings, c)) for c in clients]
        await until_split(*clients, partitions=settings.kafka.partitions)
        ready = [(await http.get("/ready")).json() for http in https]
        answers = await asyncio.gather(
            *(
                http.post(
                    "/v1/ocr",
                    json={"image_base64": page, "request_id": f"http-{i}"},
                    headers=auth,
                )
                for i, http in enumerate(https)
            )
        )
        streams = [
            await http.post(
                "/v1/ocr/stream",
                json={"image_base64": page, "request_id": f"sse-{i}"},
                headers=auth,
            )
            for i, http in enumerate(https)
        ]
    assert all(r["ready"] and r["reader_ready"] for r in ready), ready
    shares = [set(r["reply_partitions"]) for r in ready]
    assert not shares[0] & shares[1] and shares[0] and shares[1]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["text"] for a in answers] == ["http-0 p1 64x32", "http-1 p1 64x32"]
    assert all(s.status_code == 200 for s in streams)
    assert all(s.text.endswith("data: [DONE]\n\n") for s in streams)
    assert all("sse-" in s.text for s in streams)


async def test_a_group_refuses_topics_with_different_partition_counts(
    settings: Settings,
) -> None:
    kafka = settings.kafka
    progress = f"{kafka.progress_topic}-odd"
    await ensure_topics(kafka.client_kwargs(), [progress], kafka.partitions + 1)
    odd = settings.model_copy(
        update={"kafka": kafka.model_copy(update={"progress_topic": progress})}
    )
    config = GatewayConfig(api_key=KEY, result_topic=kafka.result_topic)
    async with routed(odd) as client:
        with pytest.raises(GatewayStartError, match="as many partitions"):
            await run_gateway(
                client,
                config,
                client_kwargs=kafka.client_kwargs(),
                host="127.0.0.1",
                port=free_port(),
                stop=asyncio.Event(),
            )
