"""Prometheus metrics of one worker, on a registry passed in (tests use their own).

Labels are bounded and never carry PHI: outcomes, page statuses, error codes, topics and
partition numbers only — no document ids, names or recognised text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_PAGE_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_E2E_SECONDS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ProgressCounts(Protocol):
    """What the progress sender counts (``producers.progress.ProgressSender``)."""

    @property
    def dropped(self) -> int: ...

    @property
    def failures(self) -> int: ...


class ProgressCollector(Collector):
    """The progress sender's counts as counters, read at each scrape: the sender keeps
    plain ints (it lives in ``producers`` and knows nothing of Prometheus)."""

    def __init__(self, counts: ProgressCounts) -> None:
        self._counts = counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        return self._families(0, 0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        return self._families(self._counts.dropped, self._counts.failures)

    @staticmethod
    def _families(dropped: int, failed: int) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "ocr_progress_events_dropped",
            "Progress events never sent: DELTAs over the queue's bound or behind a "
            "refused send, and what still waited at shutdown (best effort: the PAGE "
            "event and the result carry the whole text).",
            value=dropped,
        )
        yield CounterMetricFamily(
            "ocr_progress_events_failed",
            "Progress events the producer or the broker refused.",
            value=failed,
        )


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry, engine: str) -> None:
        self._registry = registry
        self.records = Counter(
            "ocr_records",
            "Consumed records by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        self.pages = Counter(
            "ocr_pages",
            "Pages processed by per-page status.",
            ["status"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "ocr_dead_letters",
            "Records sent to the dead-letter topic, by error code.",
            ["error_code"],
            registry=registry,
        )
        # At 0 from the start: the first INTERNAL_ERROR is then an increase that
        # Prometheus sees (a series born at 1 has no increase), and its alert fires.
        self.dead_letters.labels(error_code="INTERNAL_ERROR")
        self.retries = Counter(
            "ocr_retries",
            "Retries of transient errors and of pages that failed a quality check.",
            ["reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "ocr_batch_size_records",
            "Records per consumer micro-batch.",
            buckets=_BATCH_SIZES,
            registry=registry,
        )
        self.page_seconds = Histogram(
            "ocr_engine_page_seconds",
            "Engine seconds per page.",
            ["engine"],
            buckets=_PAGE_SECONDS,
            registry=registry,
        ).labels(engine=engine)
        self.end_to_end_seconds = Histogram(
            "ocr_end_to_end_seconds",
            "Seconds from a request's submitted_at to its result being acknowledged.",
            buckets=_E2E_SECONDS,
            registry=registry,
        )
        self.inflight_pages = Gauge(
            "ocr_inflight_pages",
            "Pages admitted and not yet finished.",
            registry=registry,
        )
        self.inflight_records = Gauge(
            "ocr_inflight_records",
            "Records admitted and not yet resolved.",
            registry=registry,
        )
        self.inflight_limit = Gauge(
            "ocr_inflight_pages_limit",
            "Pages the worker admits at once (from the engine's capacity).",
            registry=registry,
        )
        self.lag = Gauge(
            "ocr_consumer_lag_records",
            "Records between the committed offset and the end of each assigned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.engine_up = Gauge(
            "ocr_engine_up",
            "1 while the engine is loaded, nothing failed and work is not stalled.",
            registry=registry,
        )
        self.ready = Gauge(
            "ocr_worker_ready",
            "1 while the worker is healthy, has its assignment and reaches the broker.",
            registry=registry,
        )
        self.stalled = Gauge(
            "ocr_worker_stalled",
            "1 while records are in flight and none of their pages finished within "
            "OCR_STALL_TIMEOUT_S.",
            registry=registry,
        )
        self.commits = Counter(
            "ocr_offset_commits",
            "Offset commits sent to the broker.",
            registry=registry,
        )

    def watch_progress(self, counts: ProgressCounts) -> None:
        """Expose the progress sender's counts (``ocr_progress_events_*_total``)."""
        self._registry.register(ProgressCollector(counts))
