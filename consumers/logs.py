"""Logging set-up for the console script: broker-outage lines rate limited.

While the broker is unreachable aiokafka logs the same few ERROR lines some 80 times a
second ("Unable connect to node with id %s: %s", ...). ``RepeatLimitFilter`` lets the
first record of each message template through, then at most one per interval, and that
one says how many it stood for. Only counts are added to a line: never record content.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

OUTAGE_INTERVAL_S = 10.0
MAX_TEMPLATES = 256  # distinct templates remembered; the oldest is forgotten first


@dataclass
class _Seen:
    passed_at: float
    suppressed: int = 0


class RepeatLimitFilter(logging.Filter):
    """At most one record per ``interval_s`` for each (logger, level, template) below
    ``prefix``; the one let through after a pause carries the count it suppressed."""

    def __init__(
        self,
        prefix: str = "aiokafka",
        interval_s: float = OUTAGE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        max_templates: int = MAX_TEMPLATES,
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._interval_s = interval_s
        self._clock = clock
        self._max_templates = max_templates
        self._seen: OrderedDict[tuple[str, int, str], _Seen] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name != self._prefix and not name.startswith(self._prefix + "."):
            return True
        key = (name, record.levelno, str(record.msg))
        with self._lock:
            now = self._clock()
            seen = self._seen.get(key)
            if seen is not None and now - seen.passed_at < self._interval_s:
                seen.suppressed += 1
                return False
            self._remember(key, now)
        if seen is not None and seen.suppressed:
            record.msg = (
                f"{record.msg} [{seen.suppressed} more like this in the last"
                f" {now - seen.passed_at:.0f} s]"
            )
        return True

    def _remember(self, key: tuple[str, int, str], now: float) -> None:
        self._seen[key] = _Seen(now)
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_templates:
            self._seen.popitem(last=False)


def limit_broker_outage_logs(
    handlers: Iterable[logging.Handler], interval_s: float = OUTAGE_INTERVAL_S
) -> None:
    """One filter per handler: a filter on the ``aiokafka`` logger itself would miss
    the records of its child loggers (``aiokafka.consumer.group_coordinator``)."""
    for handler in handlers:
        handler.addFilter(RepeatLimitFilter("aiokafka", interval_s))
