"""Reply partitions: which result partitions a gateway replica reads, and which one its
next request names.

Several gateway replicas share one consumer group on the result and progress topics
(``build_reply_group_consumer``: never committing, from the end). Its assignor
(``CopartitionedAssignor``) gives each replica the same partition numbers of both
topics (they must have as many partitions: ``check_copartitioned``), and each request a
replica publishes names one of its result partitions, round robin, as
``reply_partition``; the worker sends that request's result and progress events there.
So each replica reads about 1/N of the answers instead of all of them.

Rebalances are eager: every partition is revoked, then the new assignment arrives;
between the two no request is stamped (``ReplyPartitions.wait``). The assignor is
sticky: a replica keeps what it held where balance allows, so one that leaves moves
only its own partitions and one that joins takes its share from those holding the
most. A partition kept goes on from where this reader left it (nothing is committed:
``GroupAssignment`` remembers); a new one starts at its end, resolved before any
request names it (nothing addressed to this replica can be there yet). Replies pending
on a partition that moved away are the reader's to fail (``on_assigned``): their
results go to the partition's new reader, which skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger(__name__)


class ReplyPartitions:
    """The result partitions requests may name now, and the next one to name."""

    def __init__(self) -> None:
        self._routable: tuple[int, ...] = ()
        self._turn = 0
        self._held = asyncio.Event()  # set while there is a partition to name
        self._closed = False

    @property
    def routable(self) -> tuple[int, ...]:
        return self._routable

    def choose(self) -> int | None:
        """The next partition, round robin; None while none is assigned."""
        if not self._routable:
            return None
        partition = self._routable[self._turn % len(self._routable)]
        self._turn += 1
        return partition

    async def wait(self, timeout_s: float) -> int | None:
        """``choose()``, once a partition is assigned, or None once ``timeout_s``
        passed or the reader closed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                # an assignment may be revoked again before this task runs
                while not self._routable and not self._closed:
                    await self._held.wait()
        return self.choose()

    def assign(self, partitions: Iterable[int]) -> None:
        if self._closed:
            return
        self._routable = tuple(sorted(set(partitions)))
        if self._routable:
            self._held.set()
        else:
            self._held.clear()

    def revoke(self) -> None:
        self.assign(())

    def close(self) -> None:
        """No partition any more: waiters return None at once."""
        self._routable = ()
        self._closed = True
        self._held.set()


def check_copartitioned(counts: dict[str, int]) -> None:
    """Every topic read in the group has as many partitions: the range assignor then
    gives a replica partition p of each (``ValueError`` otherwise)."""
    if len(set(counts.values())) > 1:
        described = ", ".join(f"{topic}: {n}" for topic, n in counts.items())
        raise ValueError(
            f"a gateway group routes replies by partition, so the result and progress"
            f" topics need as many partitions each ({described})"
        )


class CopartitionedAssignor:
    """The group's assignor: partition numbers, the same in every topic a member reads,
    each member keeping the numbers it held where balance allows.

    One instance a consumer (it remembers what its member holds, and says so in its
    join metadata); the group's leader shares the numbers out (``sticky_shares``).
    """

    name = "medocr-copartitioned"
    version = 0

    def __init__(self) -> None:
        self._held: list[int] = []

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        held = ",".join(map(str, self._held)).encode()
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), held)

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self._held = sorted({p for _, parts in assignment.assignment for p in parts})

    def assign(
        self,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = {topic for meta in members.values() for topic in meta.subscription}
        counts = [len(cluster.partitions_for_topic(t) or ()) for t in sorted(topics)]
        shares = sticky_shares(
            {member: _held(meta.user_data) for member, meta in members.items()},
            min(counts, default=0),  # numbers every topic has
        )
        return {
            member: ConsumerProtocolMemberAssignment(
                self.version,
                [(topic, shares[member]) for topic in sorted(meta.subscription)],
                b"",
            )
            for member, meta in members.items()
        }


def sticky_shares(
    held: Mapping[str, list[int]], partitions: int
) -> dict[str, list[int]]:
    """Partitions ``0..partitions-1`` shared out among the members of ``held`` (what
    each holds now): balanced (shares differ by one at most), each member keeping as
    much of what it holds as the balance allows; deterministic."""
    members = sorted(held)
    if not members:
        return {}
    base, extra = divmod(partitions, len(members))
    kept: dict[str, list[int]] = {}
    taken: set[int] = set()
    for member in members:  # what each still may hold, never twice
        mine = sorted({p for p in held[member] if 0 <= p < partitions} - taken)
        kept[member] = mine
        taken.update(mine)
    # Those keeping the most get the larger shares; the others give their excess back.
    by_kept = sorted(members, key=lambda m: (-len(kept[m]), m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_kept)}
    for member in members:
        kept[member] = kept[member][: quota[member]]
    free = sorted(set(range(partitions)) - {p for mine in kept.values() for p in mine})
    for member in members:
        while len(kept[member]) < quota[member]:
            kept[member].append(free.pop(0))
        kept[member].sort()
    return kept


def _held(user_data: bytes) -> list[int]:
    """The partitions a member says it holds (nothing, from one that says nothing)."""
    try:
        return [int(p) for p in user_data.decode().split(",") if p]
    except (UnicodeDecodeError, ValueError):
        return []


class GroupAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """The rebalance listener of a reader in a group: where each partition goes on
    from, and which result partitions requests may name.

    ``on_assigned(routable)`` runs once the new partitions are positioned, before any
    request names them: the reader fails the replies waiting on any other partition.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        result_topic: str,
        progress_topic: str | None,
        on_assigned: Callable[[tuple[int, ...]], None],
    ) -> None:
        self.partitions = ReplyPartitions()
        self._consumer = consumer
        self._result_topic = result_topic
        self._progress_topic = progress_topic
        self._on_assigned = on_assigned
        self._positions: dict[TopicPartition, int] = {}  # next offset to hand over

    def read(self, tp: TopicPartition, next_offset: int) -> None:
        """Everything before ``next_offset`` of ``tp`` was handed to the replies."""
        self._positions[tp] = next_offset

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.partitions.revoke()  # until the next assignment, no request names one

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Before any await: the fetcher must not start a kept partition at its end,
        # past answers that arrived during the rebalance.
        kept = {tp: self._positions[tp] for tp in assigned if tp in self._positions}
        for tp, offset in kept.items():
            self._consumer.seek(tp, offset)
        self._positions = kept
        for tp in assigned - kept.keys():  # from the end: resolved before it is named
            offset = await self._consumer.position(tp)
            self._positions.setdefault(tp, offset)
        routable = self._routable(assigned)
        log.info(
            "reply partitions of %s assigned: %s (%d kept)",
            self._result_topic,
            list(routable),
            len(kept),
        )
        self.partitions.assign(routable)
        self._on_assigned(routable)

    def _routable(self, assigned: set[TopicPartition]) -> tuple[int, ...]:
        """The result partitions whose progress partition this reader holds too."""
        results = {tp.partition for tp in assigned if tp.topic == self._result_topic}
        if self._progress_topic is None:
            return tuple(sorted(results))
        progress = {tp.partition for tp in assigned if tp.topic == self._progress_topic}
        if results != progress:  # a member that reads only one of the topics
            log.warning(
                "result partitions %s and progress partitions %s differ: requests"
                " name only the partitions of both",
                sorted(results),
                sorted(progress),
            )
        return tuple(sorted(results & progress))
