"""The wire contract: golden single-object bytes, plain-Avro readability, evolution,
and the serde's seams (a framing of one's own, records as plain data)."""

from __future__ import annotations

import copy
import io
import json
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any, ClassVar, Self

import fastavro
import pytest
from fastavro.schema import parse_schema, to_parsing_canonical_form

from schemas import (
    AvroRecord,
    AvroSchema,
    AvroSerde,
    CodecError,
    DocumentStatus,
    OcrDeadLetter,
    OcrPage,
    OcrProgress,
    OcrRequest,
    OcrResult,
    PageStatus,
    SerdeContext,
    SingleObjectFraming,
)
from schemas.avro import read_schema, schema_fingerprint
from schemas.framing import HEADER_BYTES
from schemas.records import ProgressKind
from tests.support.records import decode_record, encode_record

AT = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)  # 1704164645678 ms

# The Avro specification's 64-bit Rabin fingerprint, written out from the spec.
_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> bytes:
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def _zigzag(value: int) -> str:
    """Avro's long encoding, as hex, for building expectations by hand."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return out.hex()


def _string(text: str) -> str:
    raw = text.encode("utf-8")
    return _zigzag(len(raw)) + raw.hex()


def _fingerprint_hex(name: str) -> str:
    canonical = to_parsing_canonical_form(read_schema(name))
    return crc64_avro(canonical.encode("utf-8")).hex()


def small_request() -> OcrRequest:
    return OcrRequest(
        document_id="doc-1",
        content_type="image/png",
        submitted_at=AT,
        image=b"\x89PNG",
    )


def small_result() -> OcrResult:
    return OcrResult(
        document_id="doc-1",
        status=DocumentStatus.OK,
        completed_at=AT,
        text="a\fb",
        pages=[
            OcrPage(
                1, PageStatus.OK, "a", prompt_token_count=1300, finish_reason="stop"
            ),
            OcrPage(2, PageStatus.OK, "b"),
        ],
        page_count=2,
        prompt_token_count=1300,
    )


def delta_progress() -> OcrProgress:
    return OcrProgress(
        document_id="doc-1",
        page_number=2,
        page_count=0,
        status=PageStatus.OK,
        emitted_at=AT,
        text="환자",
        kind=ProgressKind.DELTA,
        attempt=2,
        sequence=7,
    )


def restart_progress() -> OcrProgress:
    return replace(
        delta_progress(),
        text="",
        kind=ProgressKind.RESTART,
        sequence=8,
        reason="REPETITIVE",
    )


def small_dead_letter() -> OcrDeadLetter:
    return OcrDeadLetter(
        source_topic="ocr.requests",
        source_partition=0,
        source_offset=7,
        error_class="EmptyDocumentError",
        error_code="EMPTY_DOCUMENT",
        error_message="document has zero bytes",
        failed_at=AT,
        key=b"doc-1",
        value=b"",
    )


# Golden bodies, field by field in schema order; a change here breaks other teams.
REQUEST_BODY = (
    _string("doc-1")
    + _string("image/png")
    + "02"  # image: union branch 1 (bytes)
    + "0889504e47"  # 4 bytes
    + "00"  # image_uri: null
    + "00"  # prompt: null
    + "8040"  # max_tokens 4096
    + "00000000"  # temperature 0.0f
    + "dcec86829963"  # submitted_at
    + "00"  # source_system: null
    + "00"  # correlation_id: null
    + "00"  # attributes: empty map
    + "00"  # stream: false
    + "00"  # reply_partition: null
)
# page_number, status OK, text, error_code null, token_count 0, prompt_token_count,
# finish_reason, time 0, attempts 1, source_page null, text_source OCR
PAGE_A = (
    "02" + "00" + _string("a") + "00" + "00"
    + _zigzag(1300)  # prompt_token_count 1300
    + "02" + _string("stop")  # finish_reason: union branch 1 (string)
    + "00" + "02" + "00" + "00"
)  # fmt: skip
PAGE_B = (
    "04" + "00" + _string("b") + "00" + "00"
    + "00"  # prompt_token_count 0
    + "00"  # finish_reason: null
    + "00" + "02" + "00" + "00"
)  # fmt: skip
RESULT_BODY = (
    _string("doc-1")
    + "00"  # status: OK (enum index 0)
    + _string("a\fb")
    + "04"  # pages: block of 2
    + PAGE_A
    + PAGE_B
    + "00"  # end of array
    + "04"  # page_count 2
    + "00" * 3  # error_code, error_message: null; model ""
    + "00"  # engine ""
    + "00"  # processing_time_ms 0
    + "00"  # token_count 0
    + _zigzag(1300)  # prompt_token_count
    + "00"  # submitted_at: null
    + "dcec86829963"  # completed_at
    + "00" * 5  # end_to_end_ms, content_sha256, source_system, correlation_id: null; {}
    + "00"  # source_topic ""
    + "01"  # source_partition -1
    + "01"  # source_offset -1
    + "00"  # worker_id ""
    + "00"  # source_format ""
    + "00"  # source_attributes: {}
    + "00"  # omitted_fields: []
)
DEAD_LETTER_BODY = (
    "02"
    + _string("doc-1")  # key
    + "02"
    + "00"  # value: b"" (empty, not null)
    + "00"  # headers: []
    + _string("ocr.requests")
    + "00"  # source_partition 0
    + "0e"  # source_offset 7
    + "00"  # document_id: null
    + _string("EmptyDocumentError")
    + _string("EMPTY_DOCUMENT")
    + _string("document has zero bytes")
    + "02"  # attempts 1
    + "dcec86829963"  # failed_at
    + "00"  # worker_id ""
    + "00"  # omitted_fields: []
)

DELTA_BODY = (
    _string("doc-1")
    + "04"  # page_number 2
    + "00"  # page_count 0 (not said on a DELTA)
    + _string("OK")
    + _string("환자")
    + "dcec86829963"  # emitted_at
    + "02"  # kind: DELTA (enum index 1)
    + "04"  # attempt 2
    + "0e"  # sequence 7
    + "00"  # reason: null
)
RESTART_BODY = (
    _string("doc-1")
    + "04"  # page_number 2
    + "00"  # page_count 0
    + _string("OK")
    + _string("")
    + "dcec86829963"  # emitted_at
    + "04"  # kind: RESTART (enum index 2)
    + "04"  # attempt 2
    + "10"  # sequence 8
    + "02"  # reason: union branch 1 (string)
    + _string("REPETITIVE")
)

GOLDEN = [
    pytest.param(small_request, "medocr.OcrRequest", REQUEST_BODY, id="request"),
    pytest.param(small_result, "medocr.OcrResult", RESULT_BODY, id="result"),
    pytest.param(
        small_dead_letter, "medocr.OcrDeadLetter", DEAD_LETTER_BODY, id="dead_letter"
    ),
    pytest.param(delta_progress, "medocr.OcrProgress", DELTA_BODY, id="delta"),
    pytest.param(restart_progress, "medocr.OcrProgress", RESTART_BODY, id="restart"),
]


def test_crc64_avro_matches_the_spec_test_vector() -> None:
    # From the Avro specification's schema-tests: "null" -> 7195948357588979594.
    expected = (7195948357588979594).to_bytes(8, "little")
    assert crc64_avro(b'"null"') == expected


def test_timestamp_helper_matches_the_golden_literal() -> None:
    millis = int(AT.timestamp() * 1000)
    assert millis == 1704164645678
    assert _zigzag(millis) == "dcec86829963"


@pytest.mark.parametrize(("build", "name", "body"), GOLDEN)
def test_golden_wire_bytes(build: Any, name: str, body: str) -> None:
    raw = encode_record(build())
    assert raw[:2] == b"\xc3\x01"
    assert raw[2:10].hex() == _fingerprint_hex(name)
    assert raw.hex() == "c301" + _fingerprint_hex(name) + body


@pytest.mark.parametrize(
    ("name", "fingerprint"),
    [
        ("medocr.OcrRequest", "62228b957941aab4"),  # v1 e3a7d03724c37882
        # v1 fd4c2f6fbc50438a, v2 a51cf9a82eb3b21f
        ("medocr.OcrResult", "831d041878769d7b"),
        ("medocr.OcrDeadLetter", "4f32807a74d2b824"),  # v1 d1da9b310e52f746
        ("medocr.OcrProgress", "46ee95334400ac43"),  # v1 ef062621b7669131
    ],
)
def test_fingerprints_are_pinned_and_independently_computed(
    name: str, fingerprint: str
) -> None:
    assert AvroSchema.load(name).fingerprint.hex() == fingerprint
    assert _fingerprint_hex(name) == fingerprint


@pytest.mark.parametrize(("build", "name", "body"), GOLDEN)
def test_plain_fastavro_reads_the_bytes(build: Any, name: str, body: str) -> None:
    """A consumer with only the .avsc file and any Avro library can decode a record."""
    raw = encode_record(build())
    schema_text = resources.files("schemas").joinpath(f"{name}.avsc").read_text()
    schema = json.loads(schema_text)
    assert raw[:2] == b"\xc3\x01"
    expected_fp = fastavro.schema.fingerprint(
        to_parsing_canonical_form(schema), "CRC-64-AVRO"
    )
    assert raw[2:10].hex() == expected_fp
    record = fastavro.schemaless_reader(io.BytesIO(raw[10:]), parse_schema(schema))
    assert record == build().to_avro() | _plain_enums(build())


def _plain_enums(record: Any) -> dict[str, Any]:
    return {"status": record.status.value} if isinstance(record, OcrResult) else {}


@pytest.mark.parametrize(
    "record",
    [
        small_request(),
        small_result(),
        small_dead_letter(),
        OcrRequest(
            document_id="한글-문서",
            content_type="image/tiff",
            submitted_at=AT,
            image_uri="file:///scans/a.tif",
            prompt="이 의료 문서의 모든 텍스트를 정확하게 추출하라.",
            max_tokens=128,
            temperature=0.5,
            source_system="emr-prod",
            correlation_id="acc-42",
            attributes={"ward": "3"},
            stream=True,
            reply_partition=5,
        ),
        OcrProgress("doc-1", 1, 2, PageStatus.TRUNCATED, AT, "a", sequence=3),
        delta_progress(),
        restart_progress(),
    ],
    ids=[
        "request",
        "result",
        "dead_letter",
        "request_full",
        "page",
        "delta",
        "restart",
    ],
)
def test_round_trip(record: Any) -> None:
    assert decode_record(type(record), encode_record(record)) == record


# Records valid for the first version of each schema that has changed since, keyed by
# full name.
V1_RECORDS: dict[str, dict[str, Any]] = {
    "medocr.OcrRequest": {
        "document_id": "d1",
        "content_type": "image/png",
        "image": b"\x89PNG",
        "submitted_at": AT,
        "attributes": {"ward": "3"},
    },
    "medocr.OcrProgress": {
        "document_id": "d1",
        "page_number": 2,
        "page_count": 3,
        "status": "REPETITIVE",
        "text": "환자",
        "emitted_at": AT,
    },
    "medocr.OcrResult": {
        "document_id": "d1",
        "status": "FAILED",
        "completed_at": AT,
        "error_code": "EMPTY_DOCUMENT",
    },
    "medocr.OcrDeadLetter": {
        "source_topic": "t",
        "source_partition": 1,
        "source_offset": 2,
        "error_class": "EmptyDocumentError",
        "error_code": "EMPTY_DOCUMENT",
        "error_message": "zero bytes",
        "failed_at": AT,
        "key": b"k",
        "value": b"v",
    },
}


def _history_files() -> list[str]:
    folder = resources.files("schemas").joinpath("history")
    return sorted(e.name for e in folder.iterdir() if e.name.endswith(".avsc"))


def _full_name(file_name: str) -> str:
    return ".".join(file_name.split(".")[:2])


def _frame(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    canonical = to_parsing_canonical_form(schema)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parse_schema(schema), record)
    return b"\xc3\x01" + crc64_avro(canonical.encode()) + body.getvalue()


def read_fields(schema: AvroSchema, raw: bytes) -> dict[str, Any]:
    """The fields of single-object bytes, read with ``schema`` (no record class)."""
    writer, body = SingleObjectFraming().unframe(raw, schema, SerdeContext("t"))
    return schema.read_body(body, writer)


def _history_schema(file_name: str) -> dict[str, Any]:
    text = resources.files("schemas").joinpath("history", file_name).read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _read_as_history(file_name: str, record: AvroRecord) -> dict[str, Any]:
    """``record``'s current bytes as read by a reader still on a history schema."""
    old = parse_schema(_history_schema(file_name))
    current = parse_schema(read_schema(record.SCHEMA))
    read = fastavro.schemaless_reader(
        io.BytesIO(encode_record(record)[HEADER_BYTES:]), current, old
    )
    assert isinstance(read, dict)
    return read


def test_history_holds_exactly_the_changed_schemas() -> None:
    assert {_full_name(f) for f in _history_files()} == set(V1_RECORDS)


@pytest.mark.parametrize("file_name", _history_files())
def test_a_history_schema_differs_from_the_current_one(file_name: str) -> None:
    """A history file equal to today's schema tests nothing: the codec reads it as current."""
    old = schema_fingerprint(_history_schema(file_name))
    assert old != AvroSchema.load(_full_name(file_name)).fingerprint


def _added_defaults(file_name: str) -> dict[str, Any]:
    """The fields added since a history schema, with their defaults as read."""
    old_fields = {f["name"] for f in _history_schema(file_name)["fields"]}
    current = read_schema(_full_name(file_name))["fields"]
    return {f["name"]: f["default"] for f in current if f["name"] not in old_fields}


@pytest.mark.parametrize("file_name", _history_files())
def test_bytes_written_with_a_history_schema_decode(file_name: str) -> None:
    name = _full_name(file_name)
    raw = _frame(_history_schema(file_name), V1_RECORDS[name])
    assert raw[2:10] != AvroSchema.load(name).fingerprint
    record = read_fields(AvroSchema.load(name), raw)
    for field, value in V1_RECORDS[name].items():
        assert record[field] == value
    added = _added_defaults(file_name)
    assert added  # the history file is an earlier version, with fewer fields
    for field, default in added.items():
        assert record[field] == default, field


@pytest.mark.parametrize(
    ("file_name", "record_type"),
    [
        ("medocr.OcrResult.v1.avsc", OcrResult),
        ("medocr.OcrDeadLetter.v1.avsc", OcrDeadLetter),
    ],
)
def test_v1_bytes_decode_to_records_without_omissions(
    file_name: str, record_type: Any
) -> None:
    raw = _frame(_history_schema(file_name), V1_RECORDS[_full_name(file_name)])
    assert decode_record(record_type, raw).omitted_fields == []


def test_v2_result_pages_decode_without_prompt_tokens_or_finish_reason() -> None:
    """Results from before the engines reported them: 0 prompt tokens, no reason."""
    written = V1_RECORDS["medocr.OcrResult"] | {
        "pages": [{"page_number": 1, "status": "OK", "text": "a", "token_count": 2}],
        "page_count": 1,
        "token_count": 2,
    }
    raw = _frame(_history_schema("medocr.OcrResult.v2.avsc"), written)
    result = decode_record(OcrResult, raw)
    assert (result.token_count, result.prompt_token_count) == (2, 0)
    assert result.pages == [OcrPage(1, PageStatus.OK, "a", token_count=2)]
    assert result.pages[0].finish_reason is None


def test_v1_request_bytes_decode_to_a_request_that_does_not_stream() -> None:
    raw = _frame(
        _history_schema("medocr.OcrRequest.v1.avsc"), V1_RECORDS["medocr.OcrRequest"]
    )
    request = decode_record(OcrRequest, raw)
    assert (request.document_id, request.attributes) == ("d1", {"ward": "3"})
    assert request.stream is False
    assert request.reply_partition is None  # the key's partition, as before


def test_v1_progress_bytes_decode_to_an_unnumbered_page_event() -> None:
    raw = _frame(
        _history_schema("medocr.OcrProgress.v1.avsc"),
        V1_RECORDS["medocr.OcrProgress"],
    )
    progress = decode_record(OcrProgress, raw)
    assert progress == OcrProgress(
        "d1", 2, 3, PageStatus.REPETITIVE, AT, "환자", ProgressKind.PAGE, 1, 0, None
    )


@pytest.mark.parametrize(
    ("file_name", "record", "kept"),
    [
        (
            "medocr.OcrRequest.v1.avsc",
            replace(small_request(), stream=True),
            {"document_id": "doc-1", "image": b"\x89PNG"},
        ),
        (
            "medocr.OcrProgress.v1.avsc",
            delta_progress(),
            {"document_id": "doc-1", "page_number": 2, "text": "환자"},
        ),
    ],
    ids=["request", "progress"],
)
def test_a_v1_reader_reads_current_bytes_without_the_new_fields(
    file_name: str, record: Any, kept: dict[str, Any]
) -> None:
    """Workers and subscribers still on v1 keep reading: the new fields are skipped."""
    read = _read_as_history(file_name, record)
    assert set(_added_defaults(file_name)).isdisjoint(read)
    assert {field: read[field] for field in kept} == kept


@pytest.mark.parametrize(
    ("file_name", "record"),
    [
        (
            "medocr.OcrResult.v1.avsc",
            replace(small_result(), omitted_fields=["attributes", "correlation_id"]),
        ),
        (
            "medocr.OcrDeadLetter.v1.avsc",
            replace(small_dead_letter(), value=None, omitted_fields=["value"]),
        ),
    ],
    ids=["result", "dead_letter"],
)
def test_a_v1_reader_reads_current_bytes_and_ignores_omitted_fields(
    file_name: str, record: Any
) -> None:
    """Subscribers still on v1 keep working: the new field is skipped."""
    read = _read_as_history(file_name, record)
    assert "omitted_fields" not in read
    assert read["source_topic"] == record.source_topic


@pytest.mark.parametrize("file_name", _history_files())
def test_fields_added_since_a_history_schema_have_defaults(file_name: str) -> None:
    old_fields = {f["name"] for f in _history_schema(file_name)["fields"]}
    current = read_schema(_full_name(file_name))
    added = [f for f in current["fields"] if f["name"] not in old_fields]
    assert all("default" in f for f in added), [f["name"] for f in added]


def _older_result_schema() -> dict[str, Any]:
    """OcrResult as if ``worker_id`` and ``content_sha256`` had not existed yet."""
    schema = copy.deepcopy(read_schema("medocr.OcrResult"))
    schema["fields"] = [
        f for f in schema["fields"] if f["name"] not in ("worker_id", "content_sha256")
    ]
    return schema


def test_an_older_writer_without_defaulted_fields_still_decodes() -> None:
    older = _older_result_schema()
    schema = AvroSchema(read_schema("medocr.OcrResult"), (older,))
    raw = _frame(older, V1_RECORDS["medocr.OcrResult"] | {"model": "m"})
    assert schema.fingerprint != raw[2:10]
    record = read_fields(schema, raw)
    assert record["worker_id"] == ""
    assert record["content_sha256"] is None
    assert record["model"] == "m"
    result = OcrResult.from_avro(record)
    assert result.status is DocumentStatus.FAILED


def test_unknown_fingerprint_is_a_codec_error() -> None:
    """A writer schema the codec was never told about cannot be resolved."""
    older = _older_result_schema()
    raw = _frame(older, V1_RECORDS["medocr.OcrResult"])
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        read_fields(AvroSchema.load("medocr.OcrResult"), raw)


def test_a_record_of_another_schema_is_rejected() -> None:
    with pytest.raises(CodecError, match="unknown schema fingerprint"):
        decode_record(OcrRequest, encode_record(small_result()))


def _header(name: str) -> bytes:
    return b"\xc3\x01" + AvroSchema.load(name).fingerprint


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc3", id="half_marker"),
        pytest.param(b"\xc3\x01\x00\x01", id="short_fingerprint"),
        pytest.param(b'{"document_id": "d1"}', id="json"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16, id="png"),
        pytest.param(b"\x00\x00\x00\x00\x01" + b"\x00" * 16, id="confluent_framing"),
        pytest.param(b"\xc3\x02" + b"\x00" * 16, id="wrong_marker_version"),
        pytest.param(_header("medocr.OcrRequest"), id="header_only"),
        pytest.param(encode_record(small_request())[:-5], id="truncated_body"),
        pytest.param(_header("medocr.OcrRequest") + b"\x0a\xff\xfe", id="bad_utf8"),
        pytest.param(_header("medocr.OcrRequest") + b"\xff" * 12, id="varint_overflow"),
    ],
)
def test_corrupt_or_foreign_bytes_are_codec_errors(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_record(OcrRequest, raw)


def test_result_with_an_out_of_range_enum_is_a_codec_error() -> None:
    body = _string("d1") + "0a"  # status index 5 of two symbols
    with pytest.raises(CodecError):
        decode_record(OcrResult, _header("medocr.OcrResult") + bytes.fromhex(body))


def test_trailing_bytes_after_the_body_are_a_codec_error() -> None:
    """One record per message: bytes left over mean a corrupt or mis-framed value."""
    with pytest.raises(CodecError):
        decode_record(OcrRequest, encode_record(small_request()) + b"\x00junk")


def test_a_record_that_does_not_fit_its_schema_is_a_codec_error() -> None:
    bad = OcrRequest(
        document_id=None,  # type: ignore[arg-type]
        content_type="image/png",
        submitted_at=AT,
    )
    with pytest.raises(CodecError, match="does not fit"):
        encode_record(bad)


def _request_body(submitted_at_ms: int) -> bytes:
    body = REQUEST_BODY.replace("dcec86829963", _zigzag(submitted_at_ms))
    return _header("medocr.OcrRequest") + bytes.fromhex(body)


def test_the_request_body_helper_builds_a_readable_request() -> None:
    assert decode_record(OcrRequest, _request_body(1704164645678)) == small_request()


@pytest.mark.parametrize(
    "millis", [2**62, -(2**62), 2**63 - 1, 253402300800000], ids=str
)
def test_a_timestamp_out_of_datetime_range_is_a_codec_error(millis: int) -> None:
    """fastavro raises OverflowError here; it must not escape the codec."""
    with pytest.raises(CodecError, match="OverflowError"):
        decode_record(OcrRequest, _request_body(millis))


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    out = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(HEADER_BYTES, len(out) + 1)
        roll = rng.random()
        if roll < 0.5 and at < len(out):
            out[at] = rng.randrange(256)
        elif roll < 0.7:
            out[at:at] = rng.randbytes(rng.randint(1, 10))
        elif roll < 0.85:
            # a long varint where a length, count, index or timestamp was
            out[at:at] = rng.choice([b"\xff" * 9 + b"\x01", b"\x80" * 8 + b"\x40"])
        else:
            del out[at : at + rng.randint(1, 6)]
    return bytes(out)


def _full_request() -> OcrRequest:
    return OcrRequest(
        document_id="doc-1",
        content_type="image/png",
        submitted_at=AT,
        image=b"\x89PNG\r\n\x1a\n" * 4,
        prompt="prompt",
        source_system="emr",
        correlation_id="acc-1",
        attributes={"ward": "3", "bed": "12"},
    )


@pytest.mark.parametrize(
    "build",
    [_full_request, small_result, small_dead_letter, restart_progress],
    ids=lambda b: b.__name__,
)
def test_mutated_records_decode_or_raise_codec_error_only(build: Any) -> None:
    """A fixed-seed fuzz: no byte pattern makes the codec raise anything else."""
    record = build()
    rng = random.Random(20240611)
    raw = encode_record(record)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(2000):
        try:
            decode_record(type(record), _mutate(raw, rng))
        except CodecError:
            outcomes["refused"] += 1
        else:
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 0  # the mutations do reach the decoder


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"max_tokens": 2**31}, id="int_over_32_bits"),
        pytest.param({"max_tokens": 2**70}, id="int_over_64_bits"),
        pytest.param({"submitted_at": 2**70}, id="timestamp_over_64_bits"),
        pytest.param({"document_id": "\ud800"}, id="lone_surrogate"),
        pytest.param({"attributes": {"a": 1}}, id="map_value_not_string"),
        pytest.param({"image": "x" * 5_000_000}, id="long_str_for_bytes"),
    ],
)
def test_a_value_that_cannot_be_written_is_a_codec_error(
    fields: dict[str, Any],
) -> None:
    bad = replace(small_request(), **fields)
    with pytest.raises(CodecError, match="does not fit") as raised:
        encode_record(bad)
    assert len(str(raised.value)) < 400  # never quotes the whole value


class TopicTagFraming:
    """A second framing, for tests: ``7F``, the topic (length, name), the writer's
    fingerprint, the body. It records every context it is handed."""

    MAGIC = b"\x7f"

    def __init__(self) -> None:
        self.seen: list[tuple[str, SerdeContext]] = []

    def frame(self, body: bytes, schema: AvroSchema, ctx: SerdeContext) -> bytes:
        self.seen.append(("frame", ctx))
        topic = ctx.topic.encode()
        return self.MAGIC + bytes([len(topic)]) + topic + schema.fingerprint + body

    def unframe(
        self, raw: bytes, reader: AvroSchema, ctx: SerdeContext
    ) -> tuple[AvroSchema, bytes]:
        self.seen.append(("unframe", ctx))
        if raw[:1] != self.MAGIC:
            raise CodecError("not a topic-tagged record")
        end = 2 + raw[1]
        if raw[2:end] != ctx.topic.encode():
            raise CodecError(f"written for {raw[2:end]!r}, read from {ctx.topic}")
        writer = reader.writers.get(raw[end : end + 8])
        if writer is None:
            raise CodecError("unknown writer")
        return writer, raw[end + 8 :]


def test_the_serde_hands_the_context_to_its_framing() -> None:
    """Another framing plugs in without touching the records or their mapping."""
    framing = TopicTagFraming()
    serde = AvroSerde(framing)
    ctx = SerdeContext("ocr.results")
    raw = serde.serialize(small_result(), ctx)
    assert raw.startswith(
        b"\x7f\x0bocr.results" + AvroSchema.load(OcrResult.SCHEMA).fingerprint
    )
    assert serde.deserialize(OcrResult, raw, ctx) == small_result()
    key = SerdeContext("ocr.progress", "key")
    serde.serialize(OcrProgress("d", 1, 2, PageStatus.OK, AT), key)
    assert framing.seen == [("frame", ctx), ("unframe", ctx), ("frame", key)]


def test_the_framing_decides_what_the_context_means() -> None:
    serde = AvroSerde(TopicTagFraming())
    raw = serde.serialize(small_request(), SerdeContext("ocr.requests"))
    with pytest.raises(CodecError, match="read from other"):
        serde.deserialize(OcrRequest, raw, SerdeContext("other"))
    with pytest.raises(CodecError, match="C3 01"):
        decode_record(OcrRequest, raw)  # the default serde: single-object only


def test_the_default_framing_is_the_single_object_encoding() -> None:
    schema = AvroSchema.load(OcrRequest.SCHEMA)
    body = schema.write_body(small_request().to_avro())
    framed = SingleObjectFraming().frame(body, schema, SerdeContext("ocr.requests"))
    assert framed == encode_record(small_request())
    assert framed.hex() == "c301" + _fingerprint_hex(schema.name) + REQUEST_BODY


@pytest.mark.parametrize(
    "magic",
    [b"\x00", b"\x00\x00\x00\x00\x01", b"\x7f", b"\xc3\x02", b"\x01\xc3"],
    ids=["confluent_byte", "confluent_header", "other", "next_version", "swapped"],
)
def test_unframing_an_unknown_magic_is_a_codec_error(magic: bytes) -> None:
    schema = AvroSchema.load(OcrRequest.SCHEMA)
    raw = magic + schema.fingerprint + bytes.fromhex(REQUEST_BODY)
    with pytest.raises(CodecError, match="missing C3 01 marker"):
        SingleObjectFraming().unframe(raw, schema, SerdeContext("ocr.requests"))


def test_a_serde_parses_each_schema_once() -> None:
    serde = AvroSerde()
    assert serde.schema_of(OcrResult) is serde.schema_of(OcrResult)
    assert serde.schema_of(OcrResult) is not AvroSerde().schema_of(OcrResult)
    assert serde.schema_of(OcrResult).name == "medocr.OcrResult"


@pytest.mark.parametrize(
    "record_type", [OcrRequest, OcrResult, OcrPage, OcrDeadLetter, OcrProgress]
)
def test_records_are_plain_data(record_type: type[Any]) -> None:
    """No record writes itself: bytes come from a serde, for a topic."""
    for name in ("encode", "decode", "serialize", "deserialize"):
        assert not hasattr(record_type, name)


def test_ocr_page_is_data_only() -> None:
    """A page travels inside a result, never alone: it has no schema of its own."""
    page = OcrPage(1, PageStatus.OK, "a")
    assert not hasattr(page, "encode")
    assert not hasattr(page, "SCHEMA")
    assert not hasattr(page, "to_avro")


@dataclass(frozen=True)
class _NarrowResult:
    """A record class whose fields are not the schema's."""

    SCHEMA: ClassVar[str] = "medocr.OcrResult"
    document_id: str

    def to_avro(self) -> dict[str, Any]:
        return {"document_id": self.document_id}

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Self:
        return cls(**record)


def test_fields_that_do_not_fit_the_record_class_are_a_codec_error() -> None:
    raw = encode_record(small_result())
    with pytest.raises(CodecError, match="record does not fit _NarrowResult"):
        decode_record(_NarrowResult, raw)
    with pytest.raises(CodecError, match=r"does not fit medocr\.OcrResult"):
        encode_record(_NarrowResult("d1"))  # the body misses required fields


def test_a_context_is_a_topic_and_the_value_by_default() -> None:
    assert SerdeContext("ocr.results") == SerdeContext("ocr.results", "value")
    with pytest.raises(AttributeError):
        SerdeContext("t").topic = "u"  # type: ignore[misc]
