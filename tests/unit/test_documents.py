"""One record in, one outcome out: DocumentRecognizer over the scriptable engine."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from consumers.budget import PageBudget, PagePlaces
from consumers.documents import DocumentRecognizer, RecognizerOptions
from consumers.engines import (
    PageListener,
    PageRequest,
    PageResult,
)
from consumers.engines.fake import FakeEngine
from consumers.errors import EngineDeadError
from consumers.inputs import (
    INPUTS,
    DecodedDocument,
    ImageLimits,
    InputRegistry,
    Page,
    RasterDocument,
    open_document,
)
from consumers.inputs.raster import RasterDecoder
from consumers.intake import RequestLimits
from consumers.metrics import WorkerMetrics
from consumers.outcomes import Msg, Outcome, OutcomeBuilder
from consumers.recognition import (
    PageCallback,
    PageEventHook,
    PageOptions,
    PageRecognizer,
)
from consumers.retry import RetriesExhaustedError, RetryPolicy
from schemas import DocumentStatus, OcrDeadLetter, OcrRequest, OcrResult
from tests.support.records import (
    SUBMITTED,
    consumer_record,
    decode_record,
    encode_record,
    sender_request,
)
from tests.support.scans import encode, multipage_tiff

FAST_RETRY = RetryPolicy(attempts=3, base_s=0.001, max_s=0.002)

DocumentOpener = Callable[[bytes, ImageLimits], DecodedDocument]


def png(width: int = 30, height: int = 20) -> bytes:
    return encode(Image.new("L", (width, height), 255), "PNG")


def truncated_png() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 64), 64).save(out, "PNG")
    return out.getvalue()[:-300]


def request(**fields: object) -> OcrRequest:
    return sender_request(**{"image": png(), **fields})


record = consumer_record


def tiff_records(tiff: bytes, count: int) -> list[Msg]:
    """``count`` records of the same TIFF, ``d0``, ``d1``, ... at offsets 0, 1, ..."""
    return [
        record(
            encode_record(
                request(document_id=f"d{i}", image=tiff, content_type="image/tiff")
            ),
            offset=i,
        )
        for i in range(count)
    ]


class OpenerDecoder:
    """The raster types, opened by a test's function (documents that misbehave)."""

    content_types: tuple[str, ...] = RasterDecoder.content_types

    def __init__(
        self, opener: DocumentOpener, concurrency: int = RasterDecoder.concurrency
    ) -> None:
        self._open = opener
        self.concurrency = concurrency

    def open(self, raw: bytes, limits: ImageLimits) -> DecodedDocument:
        return self._open(raw, limits)


class Harness:
    """A recognizer over a fake engine, with the budget the worker would hold."""

    def __init__(
        self,
        engine: FakeEngine,
        limits: ImageLimits,
        *,
        budget_limit: int = 64,
        on_page: PageCallback | None = None,
        on_event: PageEventHook | None = None,
        opener: DocumentOpener | None = None,
        inputs: InputRegistry = INPUTS,
        decode_timeout_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, engine.name)
        self.budget = PageBudget(limit=budget_limit)
        pages = PageRecognizer(
            engine,
            self.metrics,
            PageOptions(
                default_prompt="prompt", default_max_tokens=256, retry=FAST_RETRY
            ),
            on_page=on_page,
            on_event=on_event,
        )
        if opener is not None:
            inputs = InputRegistry([OpenerDecoder(opener)])
        self.recognizer = DocumentRecognizer(
            pages,
            RecognizerOptions(
                limits=limits,
                uri_roots=(),
                request_limits=RequestLimits(
                    max_id_chars=32,
                    max_attributes=3,
                    max_attributes_bytes=64,
                    max_prompt_bytes=100,
                ),
                decode_timeout_s=decode_timeout_s,
            ),
            OutcomeBuilder(engine="fake", model="fake-1", worker_id="worker-a"),
            inputs=inputs,
        )

    async def recognize(self, msg: Msg) -> Outcome:
        """As the worker does: admitted with one place; every place comes back."""
        try:
            return await self.recognizer.recognize(msg, PagePlaces.admit(self.budget))
        finally:
            assert self.budget.used == 0

    async def recognize_request(self, req: OcrRequest) -> Outcome:
        """``req`` as the worker consumes it: encoded, in a record of its own."""
        return await self.recognize(record(encode_record(req)))

    async def recognize_all(self, msgs: list[Msg]) -> list[Outcome]:
        """Records admitted together, as one fetched batch, recognised concurrently."""
        places = [PagePlaces.admit(self.budget) for _ in msgs]
        return list(
            await asyncio.gather(
                *(
                    self.recognizer.recognize(m, p)
                    for m, p in zip(msgs, places, strict=True)
                )
            )
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make_harness() -> MakeHarness:
    def make(engine: FakeEngine | None = None, **limits: Any) -> Harness:
        return Harness(engine or FakeEngine(), ImageLimits(**limits))

    return make


async def test_good_document_is_ok(make_harness: MakeHarness) -> None:
    harness = make_harness()
    req = request()
    outcome = await harness.recognize_request(req)
    result = outcome.result
    assert outcome.dead_letter is None
    assert result.status is DocumentStatus.OK
    assert result.document_id == "doc-1"
    assert result.text == "doc-1 p1 30x20"
    assert [(p.page_number, p.status.value) for p in result.pages] == [(1, "OK")]
    assert result.page_count == 1
    assert result.error_code is None
    assert (result.engine, result.model) == ("fake", "fake-1")
    assert result.content_sha256 == hashlib.sha256(req.image or b"").hexdigest()
    assert result.submitted_at == SUBMITTED
    assert result.end_to_end_ms is not None and result.end_to_end_ms > 0
    assert (result.source_system, result.correlation_id) == ("emr-test", "acc-1")
    assert result.attributes == {"ward": "7"}
    assert (result.source_topic, result.source_partition, result.source_offset) == (
        "ocr.requests",
        3,
        42,
    )
    assert result.worker_id == "worker-a"
    raw = encode_record(result, "ocr.results")
    assert encode_record(decode_record(OcrResult, raw), "ocr.results") == raw  # fits
    assert harness.sample("ocr_pages_total", status="OK") == 1


def _raster(raw: bytes, limits: ImageLimits) -> RasterDocument:
    """The registry's document for a scan, with the checks every scan gets."""
    document = open_document(raw, limits)
    assert isinstance(document, RasterDocument)
    return document


class SlowDocument(RasterDocument):
    """A real document whose page decodes take ``delay_s`` and are counted."""

    decoding = 0
    most = 0
    lock = threading.Lock()

    def __init__(self, raw: bytes, limits: ImageLimits, delay_s: float) -> None:
        document = _raster(raw, limits)
        super().__init__(document._image, document.sizes, 4096)
        self.delay_s = delay_s

    def page(self, index: int) -> Page:
        cls = SlowDocument
        with cls.lock:
            cls.decoding += 1
            cls.most = max(cls.most, cls.decoding)
        time.sleep(self.delay_s)
        try:
            return super().page(index)
        finally:
            with cls.lock:
                cls.decoding -= 1


def slow_opener(delay_s: float) -> DocumentOpener:
    def open_slowly(raw: bytes, limits: ImageLimits) -> RasterDocument:
        return SlowDocument(raw, limits, delay_s)

    return open_slowly


async def test_scans_are_decoded_a_few_at_a_time() -> None:
    """A fetched batch decodes in turns (the first pages reach the engine early)."""
    SlowDocument.most = 0
    harness = Harness(FakeEngine(), ImageLimits(), opener=slow_opener(0.02))
    msgs = [
        record(encode_record(request(document_id=f"doc-{i}")), offset=i)
        for i in range(12)
    ]
    outcomes = await harness.recognize_all(msgs)
    assert [o.result.status for o in outcomes] == [DocumentStatus.OK] * 12
    assert SlowDocument.most == RasterDecoder.concurrency < len(msgs)
    assert harness.budget.used == 0


async def test_multipage_tiff_keeps_page_order_and_joins_with_form_feed(
    make_harness: MakeHarness,
) -> None:
    sizes = [(30, 20), (31, 20), (32, 20)]
    finished: list[int] = []

    class BackwardsEngine(FakeEngine):
        """Later pages finish first: order must come from page numbers."""

        async def recognize(
            self, page: PageRequest, on_event: PageListener | None = None
        ) -> PageResult:
            await asyncio.sleep((4 - page.page_number) * 0.05)
            result = await super().recognize(page, on_event)
            finished.append(page.page_number)
            return result

    engine = BackwardsEngine()
    harness = make_harness(engine)
    req = request(image=multipage_tiff(sizes), content_type="image/tiff")
    result = (await harness.recognize_request(req)).result
    assert result.status is DocumentStatus.OK
    assert [p.page_number for p in result.pages] == [1, 2, 3]
    assert result.text.split("\f") == [
        f"doc-1 p{n} {w}x{h}" for n, (w, h) in enumerate(sizes, start=1)
    ]
    assert result.page_count == 3
    assert finished == [3, 2, 1]


async def test_decoded_pages_never_exceed_the_budget() -> None:
    """A long document decodes a page only once it has a place: the worker never
    holds more decoded pages than its limit, however many pages a document has."""
    seen: list[int] = []

    class WatchingEngine(FakeEngine):
        async def recognize(
            self, page: PageRequest, on_event: PageListener | None = None
        ) -> PageResult:
            seen.append(harness.budget.used)
            return await super().recognize(page, on_event)

    harness = Harness(WatchingEngine(delay_s=0.01), ImageLimits(), budget_limit=2)
    req = request(image=multipage_tiff([(10, 10)] * 7), content_type="image/tiff")
    outcome = await harness.recognize_request(req)
    assert outcome.result.status is DocumentStatus.OK
    assert outcome.result.page_count == 7
    assert len(seen) == 7
    assert max(seen) == 2  # pages overlap in the engine, within the limit


async def test_two_long_documents_share_a_small_budget_without_deadlock() -> None:
    harness = Harness(FakeEngine(delay_s=0.005), ImageLimits(), budget_limit=2)
    tiff = multipage_tiff([(10, 10)] * 5)
    msgs = tiff_records(tiff, 2)
    outcomes = await asyncio.wait_for(harness.recognize_all(msgs), 10)
    assert [o.result.page_count for o in outcomes] == [5, 5]
    assert harness.budget.used == 0


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"not avro at all", id="garbage"),
        pytest.param(b"\xc3\x01" + b"\x00" * 8 + b"body", id="unknown_fingerprint"),
        pytest.param(None, id="tombstone"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_undecodable_record_is_dead_lettered_with_its_original_bytes(
    make_harness: MakeHarness, value: bytes | None
) -> None:
    harness = make_harness()
    headers = (("trace", b"\x01\x02"), ("source", b"emr"))
    outcome = await harness.recognize(record(value, key=b"doc-9", headers=headers))
    result, letter = outcome.result, outcome.dead_letter
    assert result.status is DocumentStatus.FAILED
    assert result.error_code == "UNDECODABLE_RECORD"
    assert result.document_id == "doc-9"  # from the key, so waiters get an answer
    assert result.content_sha256 is None
    assert letter is not None
    assert letter.error_code == "UNDECODABLE_RECORD"
    assert letter.error_class == "UndecodableRecordError"
    assert (letter.key, letter.value) == (b"doc-9", value)
    assert [(h.key, h.value) for h in letter.headers] == list(headers)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "ocr.requests",
        3,
        42,
    )
    assert letter.document_id == "doc-9"
    assert letter.worker_id == "worker-a"
    raw = encode_record(letter, "ocr.requests.dlq")
    assert encode_record(decode_record(OcrDeadLetter, raw), "ocr.requests.dlq") == raw
    assert harness.engine.calls == []


@pytest.mark.parametrize(
    ("key", "document_id"),
    [(None, "ocr.requests-3-42"), (b"\xff\xfe", "ocr.requests-3-42"), (b"k", "k")],
)
async def test_undecodable_record_without_a_readable_key_uses_its_position(
    make_harness: MakeHarness, key: bytes | None, document_id: str
) -> None:
    outcome = await make_harness().recognize(record(b"junk", key=key))
    assert outcome.result.document_id == document_id
    assert outcome.dead_letter is not None
    assert outcome.dead_letter.document_id == document_id


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"content_type": "image/jpeg"}, "INVALID_REQUEST", id="mismatch"),
        pytest.param({"content_type": "image/gif"}, "INVALID_REQUEST", id="gif_type"),
        pytest.param({"document_id": "  "}, "INVALID_REQUEST", id="blank_id"),
        pytest.param({"temperature": 3.0}, "INVALID_REQUEST", id="temperature"),
        pytest.param({"max_tokens": -1}, "INVALID_REQUEST", id="max_tokens"),
        pytest.param(
            {"image_uri": "file:///x.png"}, "INVALID_REQUEST", id="image_and_uri"
        ),
        pytest.param({"image": b""}, "EMPTY_DOCUMENT", id="zero_bytes"),
        pytest.param({"image": b"GIF89a..."}, "UNSUPPORTED_FORMAT", id="gif"),
        pytest.param({"image": b"%PDF-1.4 ..."}, "INVALID_REQUEST", id="pdf_as_png"),
        pytest.param({"image": truncated_png()}, "UNREADABLE_IMAGE", id="truncated"),
        pytest.param({"image": png(200, 200)}, "PIXEL_LIMIT", id="pixel_limit"),
    ],
)
async def test_bad_requests_are_failed_results_and_dead_letters(
    make_harness: MakeHarness, fields: dict[str, object], code: str
) -> None:
    harness = make_harness(max_pixels=10_000)
    req = request(**fields)
    value = encode_record(req)
    outcome = await harness.recognize(record(value))
    assert outcome.result.status is DocumentStatus.FAILED
    assert outcome.result.error_code == code
    assert outcome.result.error_message
    assert outcome.dead_letter is not None
    assert outcome.dead_letter.error_code == code
    assert outcome.dead_letter.value == value
    assert harness.engine.calls == []


async def test_content_type_mismatch_names_both_types(
    make_harness: MakeHarness,
) -> None:
    req = request(content_type="image/tiff")  # the bytes are a PNG
    outcome = await make_harness().recognize_request(req)
    assert outcome.result.error_code == "INVALID_REQUEST"
    assert "image/tiff" in (outcome.result.error_message or "")
    assert "image/png" in (outcome.result.error_message or "")


async def test_a_bad_page_fails_alone(make_harness: MakeHarness) -> None:
    engine = FakeEngine(bad_pages={("doc-1", 2)})
    harness = make_harness(engine)
    req = request(
        image=multipage_tiff([(10, 10), (11, 10), (12, 10)]), content_type="image/tiff"
    )
    value = encode_record(req)
    outcome = await harness.recognize(record(value))
    result = outcome.result
    assert result.status is DocumentStatus.FAILED
    assert result.error_code == "PAGE_FAILED"
    assert [(p.page_number, p.status.value) for p in result.pages] == [
        (1, "OK"),
        (2, "FAILED"),
        (3, "OK"),
    ]
    assert result.pages[1].error_code == "PAGE_FAILED"
    assert result.pages[0].text == "doc-1 p1 10x10"
    assert result.pages[2].text == "doc-1 p3 12x10"
    assert result.text == "doc-1 p1 10x10\f\fdoc-1 p3 12x10"
    assert "2" in (result.error_message or "")
    letter = outcome.dead_letter
    assert letter is not None
    assert letter.error_code == "PAGE_FAILED"
    assert letter.value == value
    assert letter.document_id == "doc-1"
    assert harness.sample("ocr_pages_total", status="FAILED") == 1
    assert harness.sample("ocr_pages_total", status="OK") == 2


async def test_transient_engine_failure_is_retried_then_ok(
    make_harness: MakeHarness,
) -> None:
    engine = FakeEngine(transient_failures=Counter({"doc-1": 2}))
    harness = make_harness(engine)
    outcome = await harness.recognize_request(request())
    assert outcome.result.status is DocumentStatus.OK
    assert outcome.dead_letter is None
    assert engine.calls == [("doc-1", 1)] * 3
    assert harness.sample("ocr_retries_total", reason="transient") == 2


async def test_transient_failures_past_the_retry_budget_are_fatal(
    make_harness: MakeHarness,
) -> None:
    engine = FakeEngine(transient_failures=Counter({"doc-1": 10}))
    harness = make_harness(engine)
    with pytest.raises(RetriesExhaustedError):
        await harness.recognize_request(request())
    assert len(engine.calls) == FAST_RETRY.attempts


async def test_dead_engine_propagates(make_harness: MakeHarness) -> None:
    harness = make_harness(FakeEngine(dead_on={"doc-1"}))
    with pytest.raises(EngineDeadError):
        await harness.recognize_request(request())


async def test_dead_engine_on_a_multipage_document_releases_the_budget(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(FakeEngine(dead_on={"doc-1"}))
    req = request(image=multipage_tiff([(10, 10)] * 3), content_type="image/tiff")
    with pytest.raises(EngineDeadError):
        await harness.recognize_request(req)


async def test_prompt_and_max_tokens_defaults_reach_the_engine(
    make_harness: MakeHarness,
) -> None:
    prompts: list[tuple[str, int, float]] = []

    class RecordingEngine(FakeEngine):
        async def recognize(
            self, page: PageRequest, on_event: PageListener | None = None
        ) -> PageResult:
            prompts.append((page.prompt, page.max_tokens, page.temperature))
            return await super().recognize(page, on_event)

    harness = make_harness(RecordingEngine())
    await harness.recognize(
        record(encode_record(request(document_id="a", max_tokens=0)))
    )
    await harness.recognize(
        record(encode_record(request(document_id="b", prompt="p2", max_tokens=9)))
    )
    assert prompts == [("prompt", 256, 0.0), ("p2", 9, 0.0)]


async def test_same_scan_gives_the_same_content_hash(make_harness: MakeHarness) -> None:
    harness = make_harness()
    first = await harness.recognize_request(request(document_id="a"))
    second = await harness.recognize_request(request(document_id="b"))
    assert first.result.content_sha256 == second.result.content_sha256
    assert first.result.content_sha256 == hashlib.sha256(png()).hexdigest()


@pytest.mark.parametrize(
    ("fields", "document_id"),
    [({"temperature": 5.0}, "doc-1"), ({"document_id": "  "}, "doc-1")],
)
async def test_invalid_request_keeps_what_the_sender_sent(
    make_harness: MakeHarness, fields: dict[str, object], document_id: str
) -> None:
    """A request that decodes but fails the checks still echoes its correlation."""
    outcome = await make_harness().recognize_request(request(**fields))
    result = outcome.result
    assert result.error_code == "INVALID_REQUEST"
    assert result.document_id == document_id  # the key stands in for a blank id
    assert result.correlation_id == "acc-1"
    assert result.source_system == "emr-test"
    assert result.attributes == {"ward": "7"}
    assert result.submitted_at == SUBMITTED


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        pytest.param({"document_id": "x" * 33}, "limit is 32", id="long_id"),
        pytest.param({"document_id": "a\x00b"}, "control", id="nul_in_id"),
        pytest.param({"document_id": "\x1b[31mred"}, "control", id="ansi_escape"),
        pytest.param({"document_id": "../../etc/passwd"}, "'..'", id="traversal"),
        pytest.param({"document_id": "a\u202eb"}, "control", id="bidi_override"),
        pytest.param({"correlation_id": "c" * 33}, "correlation_id", id="long_corr"),
        pytest.param({"source_system": "s\n"}, "source_system", id="newline_src"),
        pytest.param(
            {"attributes": {str(n): "v" for n in range(4)}},
            "OCR_MAX_ATTRIBUTES",
            id="too_many_attributes",
        ),
        pytest.param(
            {"attributes": {"k": "v" * 64}},
            "OCR_MAX_ATTRIBUTES_BYTES",
            id="attributes_too_big",
        ),
        pytest.param({"attributes": {"k": "\x07"}}, "attribute", id="bell_in_value"),
        pytest.param({"prompt": "p" * 101}, "OCR_MAX_PROMPT_BYTES", id="long_prompt"),
    ],
)
async def test_absurd_fields_are_refused_before_any_work(
    make_harness: MakeHarness, fields: dict[str, object], words: str
) -> None:
    harness = make_harness()
    outcome = await harness.recognize_request(request(**fields))
    assert outcome.result.error_code == "INVALID_REQUEST"
    assert words in (outcome.result.error_message or "")
    assert outcome.dead_letter is not None
    assert harness.engine.calls == []


async def test_korean_and_uid_identifiers_are_accepted(
    make_harness: MakeHarness,
) -> None:
    fields = {"document_id": "처방전-2024/05/1.2.840.10008", "source_system": "EMR 1"}
    outcome = await make_harness().recognize_request(request(**fields))
    assert outcome.result.status is DocumentStatus.OK


class BrokenDocument(RasterDocument):
    def page(self, index: int) -> Page:
        raise RuntimeError("a bug in a decoder, quoting 홍길동")


def broken_opener(raw: bytes, limits: ImageLimits) -> RasterDocument:
    document = _raster(raw, limits)
    return BrokenDocument(document._image, document.sizes, 4096)


async def test_an_unexpected_exception_ends_the_record_not_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness(FakeEngine(), ImageLimits(), opener=broken_opener)
    value = encode_record(request())
    outcome = await harness.recognize(record(value))
    assert outcome.result.status is DocumentStatus.FAILED
    assert outcome.result.error_code == "INTERNAL_ERROR"
    assert "RuntimeError" in (outcome.result.error_message or "")
    assert "홍길동" not in (outcome.result.error_message or "")  # may be PHI
    letter = outcome.dead_letter
    assert letter is not None
    assert (letter.error_code, letter.error_class) == ("INTERNAL_ERROR", "RuntimeError")
    assert letter.value == value
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "INTERNAL_ERROR" in logged
    assert "홍길동" not in logged


class HangingDocument(RasterDocument):
    def page(self, index: int) -> Page:
        time.sleep(2)
        return super().page(index)


async def test_a_decode_past_its_time_limit_is_abandoned() -> None:
    def hanging(raw: bytes, limits: ImageLimits) -> RasterDocument:
        document = _raster(raw, limits)
        return HangingDocument(document._image, document.sizes, 4096)

    harness = Harness(FakeEngine(), ImageLimits(), opener=hanging, decode_timeout_s=0.2)
    started = time.monotonic()
    outcome = await harness.recognize_request(request())
    assert time.monotonic() - started < 1.5
    assert outcome.result.error_code == "DECODE_TIMEOUT"
    assert outcome.dead_letter is not None


async def test_document_pixels_are_limited_before_decoding(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(max_document_pixels=250)
    req = request(image=multipage_tiff([(10, 10)] * 3), content_type="image/tiff")
    outcome = await harness.recognize_request(req)
    assert outcome.result.error_code == "PIXEL_LIMIT"
    assert "OCR_MAX_DOCUMENT_PIXELS" in (outcome.result.error_message or "")
    assert harness.engine.calls == []


class BuggyEngine(FakeEngine):
    """Raises a foreign exception on one page; ``dies`` says whether it survives."""

    dies: bool = False

    async def recognize(
        self, page: PageRequest, on_event: PageListener | None = None
    ) -> PageResult:
        if page.page_number == 2:
            if self.dies:
                self.loaded = False
            raise IndexError("engine bug")
        return await super().recognize(page, on_event)


async def test_an_engine_bug_that_leaves_it_healthy_fails_only_that_page() -> None:
    engine = BuggyEngine()
    await engine.start()
    harness = Harness(engine, ImageLimits())
    req = request(image=multipage_tiff([(10, 10)] * 3), content_type="image/tiff")
    outcome = await harness.recognize_request(req)
    pages = outcome.result.pages
    assert [(p.status.value, p.error_code) for p in pages] == [
        ("OK", None),
        ("FAILED", "INTERNAL_ERROR"),
        ("OK", None),
    ]
    assert outcome.result.error_code == "PAGE_FAILED"
    assert outcome.dead_letter is not None


async def test_an_engine_bug_that_leaves_it_unhealthy_stops_the_worker() -> None:
    engine = BuggyEngine()
    engine.dies = True
    await engine.start()
    harness = Harness(engine, ImageLimits())
    req = request(image=multipage_tiff([(10, 10)] * 3), content_type="image/tiff")
    with pytest.raises(EngineDeadError) as caught:
        await harness.recognize_request(req)
    assert isinstance(caught.value.__cause__, IndexError)


async def test_a_failing_progress_send_never_fails_the_record() -> None:
    async def broken_send(request: OcrRequest, page: object, count: int) -> None:
        raise ConnectionError("progress topic down")

    harness = Harness(FakeEngine(), ImageLimits(), on_page=broken_send)
    req = request(image=multipage_tiff([(10, 10)] * 2), content_type="image/tiff")
    outcome = await harness.recognize_request(req)
    assert outcome.result.status is DocumentStatus.OK
    assert outcome.dead_letter is None


async def test_a_refused_field_is_not_echoed_back(make_harness: MakeHarness) -> None:
    fields = {"correlation_id": "c" * 40, "attributes": {"k": "v" * 70}}
    outcome = await make_harness().recognize_request(request(**fields))
    result = outcome.result
    assert result.error_code == "INVALID_REQUEST"
    assert result.correlation_id is None
    assert result.attributes == {}
    assert result.source_system == "emr-test"  # what was within its limit stays


async def test_large_pages_decode_one_at_a_time() -> None:
    """Pixels being decoded together stay within one page at the per-page limit."""
    SlowDocument.most = 0
    harness = Harness(
        FakeEngine(), ImageLimits(max_pixels=1000), opener=slow_opener(0.02)
    )
    tiff = multipage_tiff([(30, 30)] * 2)  # 900 px a page: two would be 1800
    msgs = tiff_records(tiff, 4)
    outcomes = await harness.recognize_all(msgs)
    assert [o.result.status for o in outcomes] == [DocumentStatus.OK] * 4
    assert SlowDocument.most == 1


class DecodeMeter:
    """Page decodes in flight at once (counted from their threads), and the most."""

    def __init__(self) -> None:
        self.decoding = 0
        self.most = 0
        self._lock = threading.Lock()

    def change(self, step: int) -> None:
        with self._lock:
            self.decoding += step
            self.most = max(self.most, self.decoding)


class MeteredDocument(RasterDocument):
    """A real document whose page decodes take a while and are counted."""

    def __init__(
        self, raw: bytes, limits: ImageLimits, meters: tuple[DecodeMeter, ...]
    ) -> None:
        document = _raster(raw, limits)
        super().__init__(document._image, document.sizes, 4096)
        self.meters = meters

    def page(self, index: int) -> Page:
        for meter in self.meters:
            meter.change(1)
        time.sleep(0.03)
        try:
            return super().page(index)
        finally:
            for meter in self.meters:
                meter.change(-1)


class MeteredDecoder(OpenerDecoder):
    """Opens ``content_types`` into documents counted by its meter and ``shared``."""

    def __init__(
        self, content_types: tuple[str, ...], concurrency: int, shared: DecodeMeter
    ) -> None:
        super().__init__(self._open_metered, concurrency)
        self.content_types = content_types
        self.meter = DecodeMeter()
        self._meters = (self.meter, shared)

    def _open_metered(self, raw: bytes, limits: ImageLimits) -> RasterDocument:
        return MeteredDocument(raw, limits, self._meters)


def png_and_tiff_records(side: int, count: int) -> list[Msg]:
    """``count`` one-page PNGs and ``count`` two-page TIFFs, pages ``side`` px square."""
    pngs = [
        record(encode_record(request(document_id=f"p{i}", image=png(side, side))))
        for i in range(count)
    ]
    return pngs + tiff_records(multipage_tiff([(side, side)] * 2), count)


async def test_each_decoder_decodes_in_the_turns_it_states() -> None:
    """Turns are per decoder (a PDF renderer pool is not Pillow's threads): the
    decoders decode side by side, each at most as many at once as it says."""
    both = DecodeMeter()
    pngs = MeteredDecoder(("image/png",), 2, both)
    tiffs = MeteredDecoder(("image/tiff",), 3, both)
    harness = Harness(FakeEngine(), ImageLimits(), inputs=InputRegistry([pngs, tiffs]))
    outcomes = await harness.recognize_all(png_and_tiff_records(10, 8))
    assert [o.result.status for o in outcomes] == [DocumentStatus.OK] * 16
    assert (pngs.meter.most, tiffs.meter.most) == (2, 3)
    assert both.most == 2 + 3


async def test_the_pixel_bound_is_the_workers_whatever_the_decoder() -> None:
    both = DecodeMeter()
    pngs = MeteredDecoder(("image/png",), 4, both)
    tiffs = MeteredDecoder(("image/tiff",), 4, both)
    harness = Harness(
        FakeEngine(),
        ImageLimits(max_pixels=1000),
        inputs=InputRegistry([pngs, tiffs]),
    )
    outcomes = await harness.recognize_all(png_and_tiff_records(30, 3))
    assert [o.result.status for o in outcomes] == [DocumentStatus.OK] * 6
    assert both.most == 1  # 900 px a page: two would be 1800
