"""What the sidecar reads about the worker: a snapshot written only by the worker loop.

Health is the process's own: the engine is loaded, nothing fatal happened, and work in
flight is moving (a page or record finished within the stall timeout). Readiness adds
what serving needs from outside: the group assignment and a reachable broker.

The state counts nothing itself: the records in flight are asked of their one owner,
the worker's task table (``OcrWorker`` wires ``count_inflight``), and pages in flight
are the ``PageBudget``'s. What the state keeps is the stall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import TopicPartition

from consumers.engines import EngineHealth, OcrEngine

DEFAULT_STALL_TIMEOUT_S = 600.0

HealthStatus = Literal["ok", "starting", "stalled", "failed"]


@dataclass(frozen=True)
class HealthCheck:
    """One look at the worker, taken with a single ``engine.health()`` call."""

    engine: EngineHealth
    failure: str | None
    stalled: bool
    idle_s: float  # since the last finished page or record (or work arriving)
    joined: bool
    stopping: bool
    broker_reachable: bool

    @property
    def status(self) -> HealthStatus:
        """``failed`` and ``stalled`` are unhealthy; ``starting`` is not (yet) a fault."""
        if self.failure is not None:
            return "failed"
        if self.stalled:
            return "stalled"
        return "ok" if self.engine.loaded else "starting"

    @property
    def healthy(self) -> bool:
        return self.status == "ok"

    @property
    def ready(self) -> bool:
        return (
            self.healthy and self.joined and not self.stopping and self.broker_reachable
        )


def _none_in_flight() -> int:
    return 0


@dataclass
class WorkerState:
    engine: OcrEngine
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    joined: bool = False
    assigned: frozenset[TopicPartition] = frozenset()
    failure: str | None = None
    stopping: bool = False
    broker_reachable: bool = True
    # How many records are in flight, asked of the one object that holds them (the
    # worker's task table); a state no worker has wired sees none.
    count_inflight: Callable[[], int] = field(default=_none_in_flight)
    # monotonic time of the last finished page or record, or of the moment work
    # arrived on an idle worker: an idle worker is never stalled
    last_progress_at: float = field(default_factory=time.monotonic)

    @property
    def inflight_records(self) -> int:
        return self.count_inflight()

    def work_arrived(self) -> None:
        """Work arrived on an idle worker: the stall clock starts now, not at the last
        page finished before the worker went idle."""
        self.last_progress_at = time.monotonic()

    def progressed(self) -> None:
        """A page or a record finished: the worker is moving."""
        self.last_progress_at = time.monotonic()

    def stalled(self, now: float | None = None) -> bool:
        """Records are in flight and nothing finished for longer than the stall timeout."""
        now = time.monotonic() if now is None else now
        idle_s = now - self.last_progress_at
        return self.inflight_records > 0 and idle_s > self.stall_timeout_s

    def check(self, now: float | None = None) -> HealthCheck:
        now = time.monotonic() if now is None else now
        return HealthCheck(
            engine=self.engine.health(),
            failure=self.failure,
            stalled=self.stalled(now),
            idle_s=now - self.last_progress_at,
            joined=self.joined,
            stopping=self.stopping,
            broker_reachable=self.broker_reachable,
        )

    def healthy(self) -> bool:
        """The engine is loaded, nothing fatal has happened and work is not stuck."""
        return self.check().healthy

    def ready(self) -> bool:
        return self.check().ready
