"""Worker metrics that are read from their owner at each scrape."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumers.metrics import WorkerMetrics


@dataclass
class Counts:
    """A progress sender's counters, as ``ProgressSender`` keeps them."""

    dropped: int = 0
    failures: int = 0


def test_progress_counts_are_counters_read_at_each_scrape() -> None:
    registry = CollectorRegistry()
    counts = Counts()
    WorkerMetrics(registry, "fake").watch_progress(counts)
    sample = registry.get_sample_value
    assert sample("ocr_progress_events_dropped_total") == 0
    assert sample("ocr_progress_events_failed_total") == 0
    counts.dropped, counts.failures = 7, 2
    assert sample("ocr_progress_events_dropped_total") == 7
    assert sample("ocr_progress_events_failed_total") == 2
    exposed = generate_latest(registry).decode()
    assert "# TYPE ocr_progress_events_dropped_total counter" in exposed


def test_a_second_progress_watch_on_one_registry_is_refused() -> None:
    """The names are registered: two senders cannot hide behind one series."""
    metrics = WorkerMetrics(CollectorRegistry(), "fake")
    metrics.watch_progress(Counts())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.watch_progress(Counts())
