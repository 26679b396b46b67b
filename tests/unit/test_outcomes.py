"""Results and dead letters never exceed the producer's size limit, and say what went."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from consumers.errors import ImageUriError, InvalidRequestError, UndecodableRecordError
from consumers.outcomes import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_ERROR_MESSAGE_CHARS,
    MIN_RECORD_BYTES,
    RECORD_OVERHEAD_BYTES,
    Msg,
    OutcomeBuilder,
    document_id_of,
    fallback_document_id,
)
from producers.results import ResultPublisher, dead_letter_key, result_key
from schemas import (
    AvroSchema,
    AvroSerde,
    DocumentStatus,
    OcrDeadLetter,
    OcrPage,
    OcrResult,
    PageStatus,
    SerdeContext,
    SingleObjectFraming,
)
from tests.support.records import (
    consumer_record,
    decode_record,
    encode_record,
    sender_request,
)
from tests.support.source import MemoryProducer

MIB = 1024 * 1024
HUGE = 11 * MIB
POSITION = "ocr.requests-3-42"
SMALL_LIMIT = MIB


request = sender_request


def record(
    value: bytes | None,
    key: bytes | None = b"doc-1",
    headers: tuple[tuple[str, bytes], ...] = (),
) -> Msg:
    return consumer_record(value, key, headers=headers)


def builder(max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> OutcomeBuilder:
    return OutcomeBuilder("fake", "fake-model", "w-1", max_record_bytes)


def pages(*texts: str) -> list[OcrPage]:
    return [OcrPage(n, PageStatus.OK, t, token_count=3) for n, t in enumerate(texts, 1)]


def producer_bytes(value: bytes, key: bytes | None) -> int:
    """What aiokafka's producer checks against max_request_size."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []))


def assert_result_fits(result: OcrResult, limit: int) -> None:
    raw = encode_record(result, "ocr.results")
    assert producer_bytes(raw, result_key(result)) <= limit
    decoded = decode_record(OcrResult, raw)  # timestamps travel in whole milliseconds
    assert replace(decoded, completed_at=result.completed_at) == result


def assert_letter_fits(letter: OcrDeadLetter, limit: int) -> None:
    raw = encode_record(letter, "ocr.requests.dlq")
    assert producer_bytes(raw, dead_letter_key(letter)) <= limit
    decoded = decode_record(OcrDeadLetter, raw, "ocr.requests.dlq")
    assert replace(decoded, failed_at=letter.failed_at) == letter


def test_the_default_limit_is_the_default_producers() -> None:
    """build_producer's max_request_size for ProducerOptions(): 20 MiB + 1 MiB."""
    assert DEFAULT_MAX_RECORD_BYTES == 21 * MIB


def test_the_overhead_covers_kafkas_framing() -> None:
    assert producer_bytes(b"", b"") < RECORD_OVERHEAD_BYTES


def test_a_normal_outcome_keeps_every_field() -> None:
    req = request()
    msg = record(encode_record(req), headers=(("trace", b"t-1"),))
    ok = builder().finished(msg, req, "ab" * 32, pages("a", "b"), time.monotonic())
    assert ok.dead_letter is None
    assert ok.result.status is DocumentStatus.OK
    assert (ok.result.document_id, ok.result.text) == ("doc-1", "a\fb")
    assert ok.result.attributes == {"ward": "7"}
    assert (ok.result.source_system, ok.result.correlation_id) == ("emr-test", "acc-1")
    assert ok.result.omitted_fields == []

    failed = builder().failed(
        msg, req, None, InvalidRequestError("bad"), time.monotonic()
    )
    letter = failed.dead_letter
    assert letter is not None
    assert (letter.key, letter.value) == (b"doc-1", msg.value)
    assert [(h.key, h.value) for h in letter.headers] == [("trace", b"t-1")]
    assert letter.document_id == "doc-1"
    assert letter.omitted_fields == failed.result.omitted_fields == []


def test_an_11_mib_document_id_and_key_fall_back_to_the_position() -> None:
    huge_id = "d" * HUGE
    req = request(document_id=huge_id)
    msg = record(encode_record(req), key=huge_id.encode())
    outcome = builder().failed(
        msg, req, None, InvalidRequestError("id too long"), time.monotonic()
    )
    result, letter = outcome.result, outcome.dead_letter
    assert letter is not None
    assert result.document_id == letter.document_id == POSITION
    assert result.omitted_fields == ["document_id"]
    assert result.attributes == {"ward": "7"}  # room enough for the rest
    assert_result_fits(result, DEFAULT_MAX_RECORD_BYTES)
    # The 11 MiB request fits a dead letter; its 11 MiB key is never sent.
    assert letter.value == msg.value
    assert letter.key is None
    assert letter.omitted_fields == ["document_id", "key"]
    assert_letter_fits(letter, DEFAULT_MAX_RECORD_BYTES)


def test_an_unusable_request_id_falls_back_to_a_usable_key() -> None:
    req = request(document_id="d" * HUGE)
    outcome = builder().failed(
        record(b"", key=b"doc-9"), req, None, InvalidRequestError("x"), 0.0
    )
    assert outcome.result.document_id == "doc-9"
    assert outcome.result.omitted_fields == ["document_id"]


def test_an_11_mib_key_of_an_undecodable_record() -> None:
    msg = record(b"\x00garbage", key=b"k" * HUGE)
    outcome = builder().failed(
        msg, None, None, UndecodableRecordError("not Avro"), time.monotonic()
    )
    letter = outcome.dead_letter
    assert letter is not None
    assert outcome.result.document_id == POSITION
    assert outcome.result.omitted_fields == []  # nothing was echoed
    assert_result_fits(outcome.result, DEFAULT_MAX_RECORD_BYTES)
    assert (letter.key, letter.value) == (None, b"\x00garbage")
    assert letter.omitted_fields == ["key"]
    assert_letter_fits(letter, DEFAULT_MAX_RECORD_BYTES)


def test_100_000_attributes_are_dropped_from_the_result_and_the_letter() -> None:
    attributes = {f"k{i:06d}": "v" * 256 for i in range(100_000)}
    req = request(attributes=attributes)
    msg = record(encode_record(req))
    assert len(msg.value) > DEFAULT_MAX_RECORD_BYTES
    outcome = builder().failed(
        msg, req, None, InvalidRequestError("attributes"), time.monotonic()
    )
    result, letter = outcome.result, outcome.dead_letter
    assert letter is not None
    assert result.attributes == {}
    assert result.omitted_fields == ["attributes"]
    assert (result.source_system, result.correlation_id) == ("emr-test", "acc-1")
    assert_result_fits(result, DEFAULT_MAX_RECORD_BYTES)
    assert (letter.value, letter.key) == (None, b"doc-1")
    assert letter.omitted_fields == ["value"]
    assert_letter_fits(letter, DEFAULT_MAX_RECORD_BYTES)


def test_echoed_fields_go_in_order_until_the_result_fits() -> None:
    req = request(
        attributes={"a": "x" * (SMALL_LIMIT // 2)},
        correlation_id="c" * SMALL_LIMIT,
        source_system="emr",
    )
    outcome = builder(SMALL_LIMIT).failed(
        record(b""), req, None, InvalidRequestError("x"), 0.0
    )
    assert outcome.result.omitted_fields == ["attributes", "correlation_id"]
    assert outcome.result.source_system == "emr"
    assert_result_fits(outcome.result, SMALL_LIMIT)


def _letter_for_value(size: int) -> OcrDeadLetter:
    req = request()
    letter = (
        builder(SMALL_LIMIT)
        .failed(record(b"v" * size), req, None, InvalidRequestError("x"), 0.0)
        .dead_letter
    )
    assert letter is not None
    return letter


def _largest_value_that_fits() -> int:
    """The value size that makes the dead letter exactly the limit (with the slack)."""
    empty = _letter_for_value(0)
    base = len(encode_record(empty, "ocr.requests.dlq")) + len(
        dead_letter_key(empty) or b""
    )
    largest = SMALL_LIMIT - RECORD_OVERHEAD_BYTES - base - 2  # 3-byte length, not 1
    full = _letter_for_value(largest)
    assert full.value is not None
    size = len(encode_record(full, "ocr.requests.dlq")) + len(
        dead_letter_key(full) or b""
    )
    assert size + RECORD_OVERHEAD_BYTES == SMALL_LIMIT
    return largest


def test_a_value_just_under_the_limit_is_kept() -> None:
    letter = _letter_for_value(_largest_value_that_fits())
    assert letter.omitted_fields == []
    assert_letter_fits(letter, SMALL_LIMIT)


def test_a_value_one_byte_over_is_dropped_and_the_position_stays() -> None:
    letter = _letter_for_value(_largest_value_that_fits() + 1)
    assert letter.value is None
    assert letter.omitted_fields == ["value"]
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "ocr.requests",
        3,
        42,
    )
    assert_letter_fits(letter, SMALL_LIMIT)


def test_huge_headers_go_after_the_value() -> None:
    headers = (("a", b"h" * SMALL_LIMIT), ("b", b"h"))
    msg = record(b"v" * SMALL_LIMIT, headers=headers)
    letter = builder(SMALL_LIMIT).failed(
        msg, None, None, UndecodableRecordError("x"), 0.0
    )
    assert letter.dead_letter is not None
    assert letter.dead_letter.headers == []
    assert letter.dead_letter.key == b"doc-1"
    assert letter.dead_letter.omitted_fields == ["value", "headers"]
    assert_letter_fits(letter.dead_letter, SMALL_LIMIT)


def test_text_too_large_fails_the_document_instead_of_cutting_it() -> None:
    req = request()
    msg = record(encode_record(req))
    text = "가" * (SMALL_LIMIT // 6)  # 3 bytes each; in text and in pages[]: 1 MiB
    outcome = builder(SMALL_LIMIT).finished(
        msg, req, "ab" * 32, pages(text, "b"), time.monotonic()
    )
    result, letter = outcome.result, outcome.dead_letter
    assert result.status is DocumentStatus.FAILED
    assert result.error_code == "RESULT_TOO_LARGE"
    assert (result.text, result.pages) == ("", [])
    assert (result.page_count, result.token_count) == (2, 6)
    assert result.omitted_fields == ["text", "pages"]
    assert result.attributes == {"ward": "7"}  # echoes come back when they fit
    assert_result_fits(result, SMALL_LIMIT)
    assert letter is not None
    assert letter.error_code == "RESULT_TOO_LARGE"
    assert letter.value == msg.value
    assert_letter_fits(letter, SMALL_LIMIT)


def test_text_that_fits_once_echoes_are_dropped_is_published() -> None:
    req = request(attributes={"a": "x" * (SMALL_LIMIT // 2)})
    text = "t" * (SMALL_LIMIT // 4)  # in text and in pages[]: half the limit
    outcome = builder(SMALL_LIMIT).finished(
        record(b""), req, None, pages(text), time.monotonic()
    )
    assert outcome.result.status is DocumentStatus.OK
    assert outcome.result.text == text
    assert outcome.result.omitted_fields == ["attributes"]
    assert_result_fits(outcome.result, SMALL_LIMIT)


def test_an_error_message_is_bounded() -> None:
    exc = ImageUriError("cannot read file:///" + "u" * HUGE)
    outcome = builder().failed(record(b""), request(), None, exc, 0.0)
    assert outcome.dead_letter is not None
    for message in (outcome.result.error_message, outcome.dead_letter.error_message):
        assert message is not None
        assert len(message) == MAX_ERROR_MESSAGE_CHARS
        assert message.endswith("…")


@pytest.mark.parametrize(
    ("document_id", "key", "expected"),
    [
        ("doc-1", b"other", "doc-1"),
        ("한글-문서-1", None, "한글-문서-1"),
        ("d" * 256, None, "d" * 256),
        ("d" * 257, b"doc-2", "doc-2"),
        ("d" * 257, None, POSITION),
        ("doc\n1", None, POSITION),
        ("doc\x001", b"doc\x1b[31m", POSITION),
        ("\u202edoc", None, POSITION),  # a bidi override is not printable
        ("  ", b"doc-2", "doc-2"),
        ("", b"\xff\xfe", POSITION),
        ("", "가" * 256, "가" * 256),  # 768 bytes of key: 256 characters
        ("", "가" * 257, POSITION),
        ("", b"k" * HUGE, POSITION),
    ],
)
def test_document_id_of(
    document_id: str, key: bytes | str | None, expected: str
) -> None:
    raw_key = key.encode() if isinstance(key, str) else key
    msg = record(b"", key=raw_key)
    assert document_id_of(msg, request(document_id=document_id)) == expected


def test_the_id_limit_is_a_parameter() -> None:
    msg = record(b"", key=b"key-12")
    assert fallback_document_id(msg, max_chars=5) == POSITION
    assert fallback_document_id(msg, max_chars=6) == "key-12"
    assert document_id_of(msg, request(document_id="doc-123"), 6) == "key-12"
    short = OutcomeBuilder("fake", "m", "w", max_id_chars=6)
    result = short.failed(msg, request(document_id="doc-123"), None, ValueError(), 0.0)
    assert result.result.document_id == "key-12"


def test_a_limit_too_small_for_any_record_is_refused() -> None:
    with pytest.raises(ValueError, match="max_record_bytes"):
        OutcomeBuilder("fake", "m", "w", MIN_RECORD_BYTES - 1)


class PaddedFraming(SingleObjectFraming):
    """Single-object bytes plus ``pad_bytes`` on one topic: a framing that costs room."""

    def __init__(self, topic: str, pad_bytes: int) -> None:
        self.topic = topic
        self.pad_bytes = pad_bytes

    def frame(self, body: bytes, schema: AvroSchema, ctx: SerdeContext) -> bytes:
        pad = b"\0" * self.pad_bytes if ctx.topic == self.topic else b""
        return super().frame(body, schema, ctx) + pad


async def test_records_are_sized_as_the_publisher_writes_them() -> None:
    """The builder fits what the publisher will send: its serde, on its topic."""
    producer = MemoryProducer()
    publisher = ResultPublisher(
        producer,
        result_topic="res",
        dlq_topic="dlq",
        progress_topic="prog",
        serde=AvroSerde(PaddedFraming("dlq", 1024)),
    )
    padded = OutcomeBuilder("fake", "m", "w", SMALL_LIMIT, encoder=publisher.encoder)
    msg = record(b"v" * _largest_value_that_fits())
    outcome = padded.failed(msg, request(), None, InvalidRequestError("x"), 0.0)
    letter = outcome.dead_letter
    assert letter is not None
    assert letter.omitted_fields == ["value"]  # it fits plain, not with the padding
    assert outcome.result.omitted_fields == []  # results go elsewhere, unpadded
    await publisher.send_dead_letter(letter)
    await publisher.send_result(outcome.result)
    for topic, value, key in producer.sent:
        assert producer_bytes(value, key) <= SMALL_LIMIT, topic
    assert [len(v) for t, v, _ in producer.sent if t == "dlq"] == [
        len(publisher.encoder.dead_letter(letter))
    ]
