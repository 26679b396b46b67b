"""RepeatLimitFilter with real loggers and records: a broker outage is a few lines."""

from __future__ import annotations

import logging
import uuid

import pytest

from consumers.logs import RepeatLimitFilter, limit_broker_outage_logs

CONNECT = "Unable connect to node with id %s: %s"
METADATA = "Unable to update metadata from %s"


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def limited(
    name: str, clock: ManualClock, max_templates: int = 256
) -> tuple[logging.Logger, Lines]:
    """A real logger ``<name>.<unique>`` whose records reach a filtered handler only."""
    handler = Lines()
    handler.addFilter(RepeatLimitFilter("aiokafka", 10.0, clock, max_templates))
    log = logging.getLogger(f"{name}.t{uuid.uuid4().hex[:8]}")
    log.propagate = False
    log.addHandler(handler)
    return log, handler


def test_an_outage_minute_at_82_lines_a_second_is_six_lines(
    clock: ManualClock,
) -> None:
    log, handler = limited("aiokafka", clock)
    for tick in range(60 * 82):
        clock.now = 1000.0 + tick / 82
        log.error(CONNECT, 0, "[Errno 111] Connect call failed ('127.0.0.1', 9092)")
    assert len(handler.lines) == 6  # at 0, 10, 20, 30, 40, 50 s
    assert handler.lines[0].endswith("Connect call failed ('127.0.0.1', 9092)")
    assert handler.lines[1].endswith(
        "Connect call failed ('127.0.0.1', 9092) [819 more like this in the last 10 s]"
    )


def test_first_passes_repeats_wait_and_the_next_says_how_many(
    clock: ManualClock,
) -> None:
    log, handler = limited("aiokafka.consumer", clock)
    log.error(CONNECT, 0, "refused")
    clock.now += 9.9
    log.error(CONNECT, 1, "refused")
    log.error(CONNECT, 2, "refused")
    clock.now += 0.1
    log.error(CONNECT, 3, "reset")
    clock.now += 1
    log.error(CONNECT, 4, "reset")
    clock.now += 30
    log.error(CONNECT, 5, "back")
    assert [line.split(" ", 2)[2] for line in handler.lines] == [
        "Unable connect to node with id 0: refused",
        "Unable connect to node with id 3: reset [2 more like this in the last 10 s]",
        "Unable connect to node with id 5: back [1 more like this in the last 31 s]",
    ]


def test_templates_levels_and_loggers_are_limited_apart(clock: ManualClock) -> None:
    handler = Lines()
    handler.addFilter(RepeatLimitFilter("aiokafka", 10.0, clock))
    suffix = uuid.uuid4().hex[:8]
    client = logging.getLogger(f"aiokafka.{suffix}")
    coordinator = logging.getLogger(f"aiokafka.{suffix}.group_coordinator")
    for log in (client, coordinator):
        log.propagate = False
        log.addHandler(handler)
    for _ in range(3):
        client.error(CONNECT, 0, "refused")
        client.warning(CONNECT, 0, "refused")
        client.error(METADATA, "[0]")
        coordinator.error(CONNECT, 0, "refused")
    assert len(handler.lines) == 4


@pytest.mark.parametrize("name", ["medocr", "consumers.worker", "aiokafkaesque"])
def test_other_loggers_are_never_limited(clock: ManualClock, name: str) -> None:
    log, handler = limited(name, clock)
    for n in range(5):
        log.error("broker unreachable (%d)", n)
    assert len(handler.lines) == 5


def test_the_memory_of_templates_is_bounded(clock: ManualClock) -> None:
    log, handler = limited("aiokafka", clock, max_templates=2)
    for template in ("a %s", "b %s", "c %s", "a %s"):
        log.error(template, 1)
    # "a" was forgotten when "c" came, so it passes again at once
    assert [line.rsplit(" ", 2)[1] for line in handler.lines] == ["a", "b", "c", "a"]


def test_installed_on_handlers_it_sees_child_loggers_records() -> None:
    handler = Lines()
    limit_broker_outage_logs([handler], interval_s=10.0)
    top = logging.getLogger("aiokafka")
    top.addHandler(handler)
    try:
        child = logging.getLogger("aiokafka.consumer.group_coordinator")
        for _ in range(20):
            child.error("Group Coordinator Request failed: %s", "[Error 7] timeout")
    finally:
        top.removeHandler(handler)
    assert handler.lines == [
        "aiokafka.consumer.group_coordinator ERROR"
        " Group Coordinator Request failed: [Error 7] timeout"
    ]
