"""The gateway's pure pieces: auth, the error table, scans, remote fetches, live text
and the chunk shapes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionChunk

from consumers.errors import INTERNAL_ERROR, PipelineError
from producers.gateway.answers import finish_reason, usage
from producers.gateway.auth import BearerAuth
from producers.gateway.config import GatewayConfig
from producers.gateway.errors import HTTP_STATUS, GatewayError, status_for
from producers.gateway.images import ScanReader, base64_chars
from producers.gateway.intake import IntakeLimits
from producers.gateway.remote import RemoteFetcher
from producers.gateway.sse import ChunkWriter
from producers.gateway.streaming import Discard, LiveText
from schemas import DocumentStatus, OcrPage, OcrProgress, OcrResult, PageStatus
from schemas.records import ProgressKind, utc_now

KEY = "k3y-visible"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)


def _codes(exc: pytest.ExceptionInfo[GatewayError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], (401, "UNAUTHORIZED")),
        ([(b"authorization", b"Basic " + KEY.encode())], (401, "UNAUTHORIZED")),
        ([(b"authorization", b"Bearer  " + KEY.encode())], (401, "UNAUTHORIZED")),
        ([(b"authorization", b"Bearer \xff\xfe")], (401, "UNAUTHORIZED")),
        (
            [(b"authorization", b"Bearer " + KEY.encode())] * 2,
            (401, "UNAUTHORIZED"),
        ),
        ([(b"authorization", b"Bearer wrong")], (403, "FORBIDDEN")),
        ([(b"authorization", b"Bearer " + KEY.encode() + b"x")], (403, "FORBIDDEN")),
    ],
)
def test_auth_refuses(headers: list[tuple[bytes, bytes]], expected: object) -> None:
    with pytest.raises(GatewayError) as refused:
        BearerAuth(KEY).check(headers)
    assert _codes(refused) == expected
    if expected == (401, "UNAUTHORIZED"):
        assert refused.value.headers == {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER"])
def test_auth_passes_the_key(scheme: bytes) -> None:
    BearerAuth(KEY).check([(b"Authorization", scheme + b" " + KEY.encode())])


@pytest.mark.parametrize("key", ["", " ", "with blank", "ключ"])
def test_the_gateway_needs_a_usable_key(key: str) -> None:
    with pytest.raises(ValueError, match="API_KEY"):
        GatewayConfig(api_key=key)
    assert KEY not in repr(GatewayConfig(api_key=KEY))


def _pipeline_codes() -> set[str]:
    found: set[str] = set()
    pending: list[type[PipelineError]] = [PipelineError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.retriable and cls.__subclasses__() == []:
            found.add(cls.error_code)
    return found - {"PIPELINE_ERROR", "FATAL"} | {INTERNAL_ERROR}


def test_every_code_a_result_can_carry_has_a_status() -> None:
    from consumers.errors import FatalError

    fatal = {cls.error_code for cls in FatalError.__subclasses__()}
    assert _pipeline_codes() - fatal <= set(HTTP_STATUS)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("INVALID_REQUEST", 400),
        ("EMPTY_DOCUMENT", 400),
        ("DOCUMENT_TOO_LARGE", 413),
        ("UNSUPPORTED_FORMAT", 415),
        ("UNREADABLE_IMAGE", 422),
        ("PAGE_FAILED", 422),
        ("INTERNAL_ERROR", 500),
        ("TOO_MANY_WAITS", 429),
        ("RESULT_TIMEOUT", 504),
        ("SOMETHING_NEW", 500),
        (None, 500),
    ],
)
def test_status_table(code: str | None, status: int) -> None:
    assert status_for(code) == status


def test_error_bodies_name_the_request() -> None:
    error = GatewayError("RESULT_TIMEOUT", "late", request_id="r-1")
    assert error.ocr_body() == {
        "request_id": "r-1",
        "error_code": "RESULT_TIMEOUT",
        "detail": "late",
    }
    assert error.openai_body()["error"] == {
        "message": "late",
        "type": "server_error",
        "code": "RESULT_TIMEOUT",
        "param": None,
        "request_id": "r-1",
    }


def _reader(max_bytes: int = 1000, roots: tuple[str, ...] = ()) -> ScanReader:
    return ScanReader(max_bytes, roots)


def test_base64_forms_decode_to_the_same_scan() -> None:
    encoded = base64.b64encode(PNG).decode()
    wrapped = "\n".join(encoded[i : i + 8] for i in range(0, len(encoded), 8))
    reader = _reader()
    scans = [
        reader.from_base64(encoded),
        reader.from_base64(wrapped),
        reader.from_base64(f"data:image/jpeg;base64,{encoded}"),  # the bytes say PNG
    ]
    assert {(s.content_type, s.image) for s in scans} == {("image/png", PNG)}


@pytest.mark.parametrize(
    ("size", "code"), [(999, None), (1000, None), (1001, "DOCUMENT_TOO_LARGE")]
)
def test_the_cap_counts_decoded_bytes(size: int, code: str | None) -> None:
    encoded = base64.b64encode(PNG + bytes(size - len(PNG))).decode()
    if code is None:
        assert _reader().from_base64(encoded).image is not None
    else:
        with pytest.raises(GatewayError) as refused:
            _reader().from_base64(encoded)
        assert _codes(refused) == (413, code)


def test_base64_past_the_cap_is_refused_before_decoding() -> None:
    with pytest.raises(GatewayError) as refused:
        _reader().from_base64("!" * (base64_chars(1000) + 4))  # not even base64
    assert _codes(refused) == (413, "DOCUMENT_TOO_LARGE")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("not base64!", (400, "INVALID_REQUEST")),
        ("", (400, "EMPTY_DOCUMENT")),
        (base64.b64encode(b"GIF89a....").decode(), (415, "UNSUPPORTED_FORMAT")),
        ("data:image/png;base64", (400, "INVALID_REQUEST")),
    ],
)
def test_bad_base64_scans(given: str, expected: tuple[int, str]) -> None:
    with pytest.raises(GatewayError) as refused:
        _reader().from_base64(given)
    assert _codes(refused) == expected


async def test_data_url_without_base64_is_percent_decoded() -> None:
    url = "data:image/png," + "".join(f"%{b:02X}" for b in PNG)
    assert (await _reader().from_url(url)).image == PNG


async def test_file_urls_go_by_reference_inside_the_roots(tmp_path: Path) -> None:
    scan = tmp_path / "in" / "scan 1.png"
    scan.parent.mkdir()
    scan.write_bytes(PNG)
    outside = tmp_path / "out.png"
    outside.write_bytes(PNG)
    (tmp_path / "in" / "link.png").symlink_to(outside)
    os.mkfifo(tmp_path / "in" / "fifo")
    reader = _reader(roots=(str(tmp_path / "in"),))
    found = await reader.from_url(scan.as_uri())
    assert found.image is None and found.image_uri == scan.as_uri()
    assert found.content_type == "image/png"
    for url, expected in [
        (outside.as_uri(), "IMAGE_URI"),
        ((tmp_path / "in" / "link.png").as_uri(), "IMAGE_URI"),  # resolved: outside
        ((tmp_path / "in" / "fifo").as_uri(), "IMAGE_URI"),
        ((tmp_path / "in" / "missing.png").as_uri(), "IMAGE_URI"),
        ("file://elsewhere/in/scan.png", "IMAGE_URI"),
        ("ftp://host/scan.png", "IMAGE_URI"),
        ("https://host/scan.png", "IMAGE_URI"),  # no fetcher: off
    ]:
        with pytest.raises(GatewayError) as refused:
            await reader.from_url(url)
        assert refused.value.code == expected, url
    with pytest.raises(GatewayError) as no_roots:
        await _reader().from_url(scan.as_uri())
    assert "OCR_FILE_URI_ROOTS" in no_roots.value.message


async def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    scan = tmp_path / "big.png"
    scan.write_bytes(PNG + bytes(2000))
    with pytest.raises(GatewayError) as refused:
        await _reader(roots=(str(tmp_path),)).from_url(scan.as_uri())
    assert _codes(refused) == (413, "DOCUMENT_TOO_LARGE")


def _fetcher(handler: httpx.MockTransport, max_bytes: int = 100) -> RemoteFetcher:
    client = httpx.AsyncClient(transport=handler)
    return RemoteFetcher(client, max_bytes=max_bytes, timeout_s=0.5)


async def test_remote_fetch_is_bounded_in_bytes_and_time() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ok":
            return httpx.Response(200, content=PNG)
        if request.url.path == "/big":
            return httpx.Response(200, content=bytes(101))
        if request.url.path == "/lies":  # no length stated, more than allowed
            return httpx.Response(200, content=_chunks(bytes(60), bytes(60)))
        if request.url.path == "/slow":
            await asyncio.sleep(5)
        return httpx.Response(404)

    fetcher = _fetcher(httpx.MockTransport(answer))
    reader = ScanReader(100, fetcher=fetcher)
    assert (await reader.from_url("https://h/ok")).image == PNG
    for path, expected in [
        ("/big", "DOCUMENT_TOO_LARGE"),
        ("/lies", "DOCUMENT_TOO_LARGE"),
        ("/slow", "IMAGE_URI"),
        ("/gone", "IMAGE_URI"),
    ]:
        with pytest.raises(GatewayError) as refused:
            await reader.from_url(f"https://h{path}")
        assert refused.value.code == expected, path
    await fetcher.aclose()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_intake_caps_fit_the_largest_document() -> None:
    limits = IntakeLimits(20 * 1024 * 1024, 256, 16384)
    assert limits.json_cap() > base64_chars(20 * 1024 * 1024) * 78 // 76
    assert limits.upload_cap() > 20 * 1024 * 1024


DELTA, RESTART, PAGE = ProgressKind.DELTA, ProgressKind.RESTART, ProgressKind.PAGE


def _event(
    kind: ProgressKind, page: int, text: str = "", **fields: object
) -> OcrProgress:
    return OcrProgress(
        document_id="d",
        page_number=page,
        page_count=fields.pop("page_count", 0),  # type: ignore[arg-type]
        status=PageStatus.OK,
        emitted_at=utc_now(),
        text=text,
        kind=kind,
        **fields,  # type: ignore[arg-type]
    )


def _applied(live: LiveText, *events: OcrProgress) -> list[object]:
    return [emission for event in events for emission in live.apply(event)]


@pytest.mark.parametrize(
    ("events", "emitted", "final", "rest"),
    [
        pytest.param(
            [
                _event(DELTA, 1, "Hello", sequence=1),
                _event(DELTA, 2, "later", sequence=2),  # waits for page 1
                _event(DELTA, 1, " world ", sequence=3),  # the blank is held back
                _event(PAGE, 1, "Hello world", page_count=2, sequence=4),
                _event(PAGE, 2, "later on", page_count=2, sequence=5),
            ],
            ["Hello", " world", "\flater", " on"],
            "Hello world\flater on",
            [],
            id="pages_in_order",
        ),
        pytest.param(
            [
                _event(PAGE, 2, "two", page_count=3),
                _event(PAGE, 1, "one", page_count=3),
            ],
            ["one\ftwo\f"],
            "one\ftwo\fthree",
            ["three"],
            id="page_events_only",
        ),
    ],
)
def test_live_text_streams_pages_in_order_and_the_rest_at_the_end(
    events: list[OcrProgress], emitted: list[object], final: str, rest: list[object]
) -> None:
    live = LiveText()
    assert _applied(live, *events) == emitted
    assert live.finish(final) == rest


def test_live_text_takes_back_a_restart_and_a_differing_final_text() -> None:
    live = LiveText()
    assert _applied(
        live,
        _event(DELTA, 1, "____ ____", sequence=1),
        _event(RESTART, 1, attempt=2, sequence=2),
        _event(DELTA, 1, "Real", attempt=2, sequence=3),
    ) == ["____ ____", Discard(9), "Real"]
    assert live.finish("Real text") == [" text"]
    assert live.finish("Rea1 text") == [Discard(6), "1 text"]


def test_live_text_holds_a_page_that_lost_events_until_it_is_final() -> None:
    live = LiveText()
    assert _applied(live, _event(DELTA, 1, "one", sequence=1)) == ["one"]
    assert _applied(live, _event(DELTA, 1, " three", sequence=3)) == [Discard(3)]
    assert live.apply(_event(PAGE, 1, "one two three", page_count=1, sequence=4)) == [
        "one two three"
    ]


def test_chunks_are_openai_chat_completion_chunks() -> None:
    writer = ChunkWriter("chatcmpl-x", 1700000000, "medocr")
    lines = [
        writer.role(),
        writer.emission("text"),
        writer.emission(Discard(2)),
        writer.finish("length", "qwen"),
        writer.usage(
            {"prompt_tokens": 1300, "completion_tokens": 3, "total_tokens": 1303},
            "qwen",
        ),
    ]
    parsed = []
    for line in lines:
        assert line.startswith(b"data: ") and line.endswith(b"\n\n")
        parsed.append(ChatCompletionChunk.model_validate(json.loads(line[6:])))
    assert parsed[0].choices[0].delta.role == "assistant"
    assert parsed[1].choices[0].delta.content == "text"
    assert json.loads(lines[2][6:])["medocr"] == {"discard": 2}
    assert parsed[3].choices[0].finish_reason == "length"
    assert parsed[3].model == "qwen"
    assert parsed[4].usage is not None and parsed[4].usage.completion_tokens == 3
    assert parsed[4].usage.prompt_tokens == 1300


def _page(number: int, reason: str | None, status: str = "OK") -> OcrPage:
    return OcrPage(number, PageStatus(status), finish_reason=reason)


@pytest.mark.parametrize(
    ("pages", "expected"),
    [
        pytest.param([], "stop", id="no_pages"),
        pytest.param([_page(1, "stop"), _page(2, "stop")], "stop", id="stopped"),
        pytest.param(
            [_page(1, "length", "TRUNCATED"), _page(2, "stop")], "length", id="cut"
        ),
        pytest.param(
            [_page(1, "length", "REPETITIVE")], "length", id="looped_to_the_limit"
        ),
        pytest.param([_page(1, "stop"), _page(2, "eos")], "eos", id="engine_own"),
        pytest.param([_page(1, "eos"), _page(2, None)], "eos", id="text_layer_last"),
        pytest.param([_page(1, None, "TRUNCATED")], "length", id="older_worker"),
        pytest.param([_page(1, None, "FAILED")], "stop", id="no_reason"),
    ],
)
def test_finish_reason_of_a_document(pages: list[OcrPage], expected: str) -> None:
    """``length`` if any page was cut, else the last reason an engine gave."""
    assert finish_reason(_result(pages)) == expected


def _result(pages: list[OcrPage], **fields: Any) -> OcrResult:
    return OcrResult("d", DocumentStatus.OK, utc_now(), pages=pages, **fields)


def test_usage_is_the_engines_token_counts() -> None:
    result = _result([], token_count=12, prompt_token_count=1300)
    assert usage(result) == {
        "prompt_tokens": 1300,
        "completion_tokens": 12,
        "total_tokens": 1312,
    }
