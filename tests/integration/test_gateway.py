"""``medocr gateway`` end to end: HTTP in, a real broker and worker, HTTP out.

Each test runs the embedded (or configured) broker, an in-process worker with the fake
engine (it streams its text word by word) and the gateway as ``medocr gateway`` runs it
(``run_gateway``: uvicorn on a free port, ``OcrClient`` behind it), and talks to it
over HTTP, with httpx or the official OpenAI SDK.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from openai import OpenAI, UnprocessableEntityError
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
)
from PIL import Image

from consumers.engines.fake import FakeEngine
from consumers.settings import Settings
from producers.gateway.config import GatewayConfig
from schemas import OcrResult
from tests.support.dicoms import secondary_capture
from tests.support.gateway import served_gateway
from tests.support.kafka import read_outputs
from tests.support.pdfs import image_pdf
from tests.support.scans import encode, multipage_tiff
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

KEY = "gw-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MIB = 1024 * 1024


def png(width: int = 64, height: int = 32) -> bytes:
    return encode(Image.new("L", (width, height), 255), "PNG")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class Gateway:
    url: str
    http: httpx.AsyncClient
    engine: FakeEngine
    settings: Settings

    async def waits(self) -> int:
        ready = (await self.http.get("/ready")).json()
        return int(ready["waits_in_flight"])

    async def until_waits(self, count: int) -> None:
        async with asyncio.timeout(30):
            while await self.waits() != count:  # noqa: ASYNC110 - a server, over HTTP
                await asyncio.sleep(0.05)

    async def results(self, count: int) -> list[OcrResult]:
        return (await read_outputs(self.settings, count, timeout_s=30)).results


@asynccontextmanager
async def serving(
    settings: Settings, engine: FakeEngine | None = None, **config: Any
) -> AsyncIterator[Gateway]:
    """A worker and the gateway in front of it, as ``medocr gateway`` runs it."""
    engine = engine or FakeEngine()
    # one DELTA per word the engine streams: the stream shows the text growing
    batch = settings.batch.model_copy(update={"stream_flush_deltas": 1})
    settings = settings.model_copy(update={"batch": batch})
    kafka = settings.kafka
    gateway_config = replace(
        GatewayConfig(api_key=KEY, result_topic=kafka.result_topic, timeout_s=60),
        **config,
    )
    async with (
        running_worker(settings, engine),
        settings.client(progress=True) as c,
        served_gateway(
            c, gateway_config, kafka.client_kwargs(), until="/health", timeout_s=30
        ) as served,
    ):
        yield Gateway(served.url, served.http, engine, settings)


async def sse_lines(
    http: httpx.AsyncClient, path: str, body: dict[str, object]
) -> tuple[httpx.Response, list[str]]:
    async with http.stream("POST", path, json=body, headers=AUTH) as response:
        lines = [line async for line in response.aiter_lines() if line]
    return response, lines


def chunks_of(lines: list[str]) -> list[dict[str, Any]]:
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def streamed_text(chunks: list[dict[str, Any]], *, discards: bool = True) -> str:
    """The text a client builds from the chunks (honouring ``medocr.discard``)."""
    text = ""
    for chunk in chunks:
        drop = chunk.get("medocr", {}).get("discard", 0)
        if discards and drop:
            text = text[:-drop]
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    return text


async def test_ocr_answers_base64_and_data_urls(settings: Settings) -> None:
    async with serving(settings) as gw:
        plain = await gw.http.post(
            "/v1/ocr",
            json={"image_base64": b64(png()), "request_id": "plain"},
            headers=AUTH,
        )
        data_url = await gw.http.post(
            "/v1/ocr",
            json={"image_url": f"data:image/png;base64,{b64(png(80, 40))}"},
            headers=AUTH,
        )
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["request_id"] == "plain" == plain.headers["x-request-id"]
    assert body["text"] == "plain p1 64x32"
    assert body["status"] == "OK" and body["error_code"] is None
    assert body["model"] == "fake-1"
    assert set(body) >= {"processing_time_ms", "token_count", "pages"}
    assert body["pages"][0]["page_number"] == 1
    assert body["pages"][0]["finish_reason"] == "stop"
    assert body["token_count"] == 3  # the fake engine's: one a word
    # the fake's prompt: a token a word of the default prompt and per 28x28 px (3x2)
    assert body["prompt_token_count"] == body["pages"][0]["prompt_token_count"] > 6
    assert data_url.status_code == 200, data_url.text
    generated = data_url.json()["request_id"]
    assert data_url.json()["text"] == f"{generated} p1 80x40"


async def test_upload_takes_pdf_and_dicom(settings: Settings) -> None:
    pages = [Image.new("L", (300, 200), 255), Image.new("L", (300, 200), 255)]
    async with serving(settings) as gw:
        pdf = await gw.http.post(
            "/v1/ocr/upload",
            files={"file": ("scan.pdf", image_pdf(pages), "application/pdf")},
            data={"request_id": "a-pdf", "max_tokens": "512"},
            headers=AUTH,
        )
        dicom = await gw.http.post(
            "/v1/ocr/upload",
            files={"file": ("scan", secondary_capture(pages[:1]), "x/unknown")},
            data={"request_id": "a-dicom", "prompt": "read it"},
            headers=AUTH,
        )
    assert pdf.status_code == 200, pdf.text
    assert pdf.json()["page_count"] == 2
    assert pdf.json()["text"].count("\f") == 1
    assert dicom.status_code == 200, dicom.text
    assert dicom.json()["text"] == "a-dicom p1 300x200"


async def test_stream_sends_the_text_as_generated_then_done(
    settings: Settings,
) -> None:
    tiff = multipage_tiff([(64, 32), (64, 33), (64, 34)])
    async with serving(settings) as gw:
        response, lines = await sse_lines(
            gw.http, "/v1/ocr/stream", {"image_base64": b64(tiff), "request_id": "s1"}
        )
        [result] = await gw.results(1)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = chunks_of(lines)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["model"] == "fake-1"
    assert streamed_text(chunks) == streamed_text(chunks, discards=False)
    assert (
        streamed_text(chunks)
        == result.text
        == "\f".join(f"s1 p{n} 64x{31 + n}" for n in (1, 2, 3))
    )
    content = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(content) >= 6  # word by word, not the page at once


async def test_stream_true_on_ocr_and_a_restart_taken_back(
    settings: Settings,
) -> None:
    engine = FakeEngine(restarts={("loops", 1)})
    async with serving(settings, engine) as gw:
        _, lines = await sse_lines(
            gw.http,
            "/v1/ocr",
            {"image_base64": b64(png()), "request_id": "loops", "stream": True},
        )
    chunks = chunks_of(lines)
    assert any(c.get("medocr", {}).get("discard") for c in chunks)
    assert streamed_text(chunks) == "loops p1 64x32"
    assert streamed_text(chunks, discards=False).startswith("____ ____")


def _chat_messages(png_bytes: bytes) -> list[ChatCompletionMessageParam]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "이 문서의 텍스트를 추출하라."},
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:image/png;base64,{b64(png_bytes)}"},
                },
            ],
        }
    ]


async def test_openai_sdk_completes_and_streams(settings: Settings) -> None:
    engine = FakeEngine(truncated={("sdk-4", 1)})  # stops at max_tokens: "length"
    async with serving(settings, engine) as gw:
        sdk = OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0)

        def complete(scan: bytes, request_id: str) -> ChatCompletion:
            return sdk.chat.completions.create(
                model="qwen-ocr",
                messages=_chat_messages(scan),
                stream=False,
                extra_headers={"X-Request-Id": request_id},
            )

        def stream() -> tuple[str, list[ChatCompletionChunk]]:
            chunks = list(
                sdk.chat.completions.create(
                    model="qwen-ocr",
                    messages=_chat_messages(png(70, 35)),
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers={"X-Request-Id": "sdk-2"},
                )
            )
            text = "".join(
                choice.delta.content or "" for c in chunks for choice in c.choices
            )
            return text, chunks

        completion = await asyncio.to_thread(complete, png(), "sdk-1")
        text, chunks = await asyncio.to_thread(stream)
        results = {r.document_id: r for r in await gw.results(2)}
        with pytest.raises(UnprocessableEntityError) as failed:
            corrupt = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
            await asyncio.to_thread(complete, corrupt, "sdk-3")
        cut = await asyncio.to_thread(complete, png(), "sdk-4")
        sdk.close()
    assert completion.id == "chatcmpl-sdk-1"
    assert completion.model == "fake-1"
    assert completion.choices[0].message.content == "sdk-1 p1 64x32"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == results["sdk-1"].token_count == 3
    assert completion.usage.prompt_tokens == results["sdk-1"].prompt_token_count > 0
    assert completion.usage.total_tokens == sum(
        (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    )
    assert text == results["sdk-2"].text == "sdk-2 p1 70x35"
    assert chunks[0].model == "qwen-ocr"
    streamed_usage = chunks[-1].usage
    assert streamed_usage is not None and chunks[-1].choices == []
    assert streamed_usage.prompt_tokens == results["sdk-2"].prompt_token_count > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert failed.value.code == "UNREADABLE_IMAGE"
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == "sdk-4 p1 64x32"


async def test_auth_and_open_probes(settings: Settings) -> None:
    body = {"image_base64": b64(png())}
    async with serving(settings) as gw:
        missing = await gw.http.post("/v1/ocr", json=body)
        malformed = await gw.http.post(
            "/v1/ocr", json=body, headers={"Authorization": f"Basic {KEY}"}
        )
        wrong = await gw.http.post(
            "/v1/ocr", json=body, headers={"Authorization": "Bearer nope"}
        )
        chat = await gw.http.post("/v1/chat/completions", json={})
        health = await gw.http.get("/health")
        ready = await gw.http.get("/ready")
        metrics_open = await gw.http.get("/metrics")
        ok = await gw.http.post("/v1/ocr", json=body, headers=AUTH)
        metrics = await gw.http.get("/metrics", headers=AUTH)
    assert missing.status_code == malformed.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error_code"] == "UNAUTHORIZED"
    assert wrong.status_code == 403 and wrong.json()["error_code"] == "FORBIDDEN"
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "UNAUTHORIZED"
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200 and ready.json()["broker_reachable"] is True
    assert metrics_open.status_code == 401
    assert ok.status_code == 200
    assert 'ocr_gateway_requests_total{route="/v1/ocr",status="200"} 1.0' in (
        metrics.text
    )
    assert 'ocr_gateway_requests_total{route="/v1/ocr",status="401"} 2.0' in (
        metrics.text
    )
    assert "ocr_gateway_time_to_first_byte_seconds_count" in metrics.text
    assert "ocr_gateway_end_to_end_seconds_count" in metrics.text
    assert "ocr_gateway_waits_in_flight 0.0" in metrics.text


async def test_bad_input_is_refused_before_publishing(settings: Settings) -> None:
    over = b"\x89PNG\r\n\x1a\n" + bytes(20 * MIB - 7)  # 20 MiB + 1 byte
    async with serving(settings) as gw:
        too_large = await gw.http.post(
            "/v1/ocr", json={"image_base64": b64(over)}, headers=AUTH
        )
        upload_too_large = await gw.http.post(
            "/v1/ocr/upload", files={"file": ("big.png", over)}, headers=AUTH
        )
        garbage = {
            "not json": await gw.http.post("/v1/ocr", content=b"{no", headers=AUTH),
            "not base64": await gw.http.post(
                "/v1/ocr", json={"image_base64": "%%%"}, headers=AUTH
            ),
            "two images": await gw.http.post(
                "/v1/ocr",
                json={"image_base64": b64(png()), "image_url": "data:,x"},
                headers=AUTH,
            ),
        }
        not_a_scan = await gw.http.post(
            "/v1/ocr", json={"image_base64": b64(b"GIF89a" + bytes(64))}, headers=AUTH
        )
        remote = await gw.http.post(
            "/v1/ocr", json={"image_url": "https://example.org/a.png"}, headers=AUTH
        )
        published = await read_outputs(gw.settings, 0, timeout_s=1)
    assert too_large.status_code == upload_too_large.status_code == 413
    assert too_large.json()["error_code"] == "DOCUMENT_TOO_LARGE"
    for name, response in garbage.items():
        assert response.status_code == 400, name
        assert response.json()["error_code"] == "INVALID_REQUEST", name
    assert not_a_scan.status_code == 415
    assert not_a_scan.json()["error_code"] == "UNSUPPORTED_FORMAT"
    assert remote.status_code == 400 and remote.json()["error_code"] == "IMAGE_URI"
    assert published.results == []


async def test_a_failed_document_answers_with_its_error_code(
    settings: Settings,
) -> None:
    corrupt = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    async with serving(settings) as gw:
        response = await gw.http.post(
            "/v1/ocr",
            json={"image_base64": b64(corrupt), "request_id": "corrupt"},
            headers=AUTH,
        )
        streamed = await gw.http.post(
            "/v1/ocr/stream",
            json={"image_base64": b64(corrupt), "request_id": "corrupt-2"},
            headers=AUTH,
        )
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "FAILED" and body["error_code"] == "UNREADABLE_IMAGE"
    assert body["request_id"] == "corrupt" and body["text"] == ""
    assert streamed.status_code == 422  # failed before any text: no stream at all
    assert streamed.json()["error_code"] == "UNREADABLE_IMAGE"


async def test_waits_limit_answers_429_with_retry_after(settings: Settings) -> None:
    gate = asyncio.Event()
    engine = FakeEngine(gates={"first": gate})
    async with serving(settings, engine, max_waits=1, retry_after_s=2) as gw:
        first = asyncio.create_task(
            gw.http.post(
                "/v1/ocr",
                json={"image_base64": b64(png()), "request_id": "first"},
                headers=AUTH,
            )
        )
        await gw.until_waits(1)
        refused = await gw.http.post(
            "/v1/ocr",
            json={"image_base64": b64(png()), "request_id": "second"},
            headers=AUTH,
        )
        gate.set()
        answered = await first
        await gw.until_waits(0)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["error_code"] == "TOO_MANY_WAITS"
    assert refused.json()["request_id"] == "second"
    assert answered.status_code == 200


async def test_timeout_is_504_and_the_result_still_arrives(
    settings: Settings,
) -> None:
    gate = asyncio.Event()
    engine = FakeEngine(gates={"late": gate})
    async with serving(settings, engine, timeout_s=1.0) as gw:
        response = await gw.http.post(
            "/v1/ocr",
            json={"image_base64": b64(png()), "request_id": "late"},
            headers=AUTH,
        )
        gate.set()
        [result] = await gw.results(1)
    assert response.status_code == 504
    assert response.json()["error_code"] == "RESULT_TIMEOUT"
    assert response.json()["request_id"] == "late"
    assert result.document_id == "late" and result.status.value == "OK"


async def test_a_request_id_in_flight_is_joined_not_published_again(
    settings: Settings,
) -> None:
    gate = asyncio.Event()
    engine = FakeEngine(gates={"dup": gate})
    body: dict[str, object] = {"image_base64": b64(png()), "request_id": "dup"}
    async with serving(settings, engine) as gw:

        async def post(sent: dict[str, object]) -> httpx.Response:
            return await gw.http.post("/v1/ocr", json=sent, headers=AUTH)

        first = asyncio.create_task(post(body))
        await gw.until_waits(1)
        second = asyncio.create_task(post(body))
        await gw.until_waits(2)  # both wait, one flight
        conflict = await post({**body, "image_base64": b64(png(65, 32))})
        gate.set()
        answers = await asyncio.gather(first, second)
        results = await gw.results(1)
        again = await post(body)  # the first is no longer in flight: published anew
    assert conflict.status_code == 409
    assert conflict.json()["error_code"] == "REQUEST_ID_CONFLICT"
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert len(results) == 1
    assert again.status_code == 200
    assert engine.calls.count(("dup", 1)) == 2  # the first flight once, `again` once
