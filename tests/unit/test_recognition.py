"""One page through PageRecognizer: the engine's events on their way to a listener."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from consumers.budget import PageBudget, PagePlaces
from consumers.engines import (
    PageEvent,
    PageListener,
    PageRequest,
    PageResult,
    StreamRestarted,
    TextDelta,
)
from consumers.engines.fake import FakeEngine
from consumers.inputs import Page
from consumers.metrics import WorkerMetrics
from consumers.recognition import PageEventHook, PageOptions, PageRecognizer
from consumers.retry import RetryPolicy
from schemas import OcrPage, OcrRequest, PageStatus
from tests.support.records import consumer_record, sender_request

FAST_RETRY = RetryPolicy(attempts=3, base_s=0.001, max_s=0.002)
Seen = list[tuple[str, int, PageEvent]]


async def recognize_page(
    engine: FakeEngine,
    on_event: PageEventHook | None,
    number: int = 1,
    *,
    stream: bool = True,
) -> tuple[OcrPage, PageBudget]:
    """Page ``number`` of doc-1 (30 x 20 px) through a recognizer over ``engine``, for
    a request that asks to stream (or not)."""
    recognizer = PageRecognizer(
        engine,
        WorkerMetrics(CollectorRegistry(), engine.name),
        PageOptions(default_prompt="p", default_max_tokens=16, retry=FAST_RETRY),
        on_event=on_event,
    )
    budget = PageBudget(limit=4)
    page = Page(number, Image.new("L", (30, 20), 255), None)
    text = await recognizer.recognize(
        consumer_record(b""),
        sender_request(stream=stream),
        page,
        3,
        PagePlaces.admit(budget),
    )
    return text, budget


def recorder(seen: Seen) -> PageEventHook:
    def hook(request: OcrRequest, number: int, event: PageEvent) -> None:
        seen.append((request.document_id, number, event))

    return hook


def streamed(seen: Seen) -> str:
    """The text a listener shows: each restart drops what came before it."""
    shown = ""
    for _, _, event in seen:
        shown = shown + event.text if isinstance(event, TextDelta) else ""
    return shown


async def test_deltas_reach_the_hook_with_their_page_and_add_up_to_the_text() -> None:
    seen: Seen = []
    text, budget = await recognize_page(FakeEngine(), recorder(seen), number=2)
    assert text.status is PageStatus.OK
    assert len(seen) > 1  # the fake streams word by word
    assert {(doc, number) for doc, number, _ in seen} == {("doc-1", 2)}
    assert streamed(seen) == text.text == "doc-1 p2 30x20"
    assert budget.used == 0


async def test_a_quality_retry_restarts_the_stream() -> None:
    seen: Seen = []
    engine = FakeEngine(restarts={("doc-1", 1)})
    text, _ = await recognize_page(engine, recorder(seen))
    events = [event for _, _, event in seen]
    assert events[:2] == [
        TextDelta("____ ____", attempt=1),
        StreamRestarted(attempt=2, reason="REPETITIVE"),
    ]
    assert {e.attempt for e in events[2:] if isinstance(e, TextDelta)} == {2}
    assert streamed(seen) == text.text
    assert text.attempts == 2


async def test_a_transient_retry_restarts_the_stream() -> None:
    seen: Seen = []
    engine = FakeEngine(transient_failures=Counter({"doc-1": 1}))
    text, _ = await recognize_page(engine, recorder(seen))
    assert text.status is PageStatus.OK
    assert seen[0] == ("doc-1", 1, StreamRestarted(attempt=1, reason="ENGINE_BUSY"))
    assert streamed(seen) == text.text


class ListenerRecordingEngine(FakeEngine):
    listeners: list[PageListener | None]

    async def recognize(
        self, page: PageRequest, on_event: PageListener | None = None
    ) -> PageResult:
        self.listeners.append(on_event)
        return await super().recognize(page, on_event)


@pytest.mark.parametrize(
    ("hooked", "stream"),
    [(False, True), (True, False), (False, False)],
    ids=["no_hook", "request_not_streaming", "neither"],
)
async def test_the_engine_streams_only_for_a_streaming_request_with_a_hook(
    hooked: bool, stream: bool
) -> None:
    seen: Seen = []
    engine = ListenerRecordingEngine()
    engine.listeners = []
    hook = recorder(seen) if hooked else None
    text, _ = await recognize_page(engine, hook, stream=stream)
    assert text.status is PageStatus.OK
    assert engine.listeners == [None]
    assert seen == []


async def test_a_failing_hook_never_fails_the_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: OcrRequest, number: int, event: PageEvent) -> None:
        raise ConnectionError("stream consumer gone")

    with caplog.at_level(logging.WARNING, logger="consumers.recognition"):
        text, budget = await recognize_page(FakeEngine(), broken)
    assert (text.status, text.text) == (PageStatus.OK, "doc-1 p1 30x20")
    assert budget.used == 0
    warnings = [
        r for r in caplog.records if "page event not delivered" in r.getMessage()
    ]
    assert len(warnings) == 1  # once a page, not once a delta
