"""The gateway app against an in-memory reply source: waits, joins, limits, probes.

The source is the seam the app is built on (``producers.gateway.source.ReplySource``);
here each submitted request gets a reply the test answers by hand.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from prometheus_client import CollectorRegistry

from producers.gateway.app import build_gateway
from producers.gateway.config import GatewayConfig
from producers.gateway.source import PendingReply
from producers.replies import ReplyClosedError
from schemas import DocumentStatus, OcrPage, OcrProgress, OcrRequest, OcrResult
from schemas.records import PageStatus, ProgressKind, utc_now

KEY = "unit-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
BODY_B64 = base64.b64encode(PNG).decode()
BODY = {"image_base64": BODY_B64}


class HandReply:
    def __init__(self) -> None:
        self.events_queue: asyncio.Queue[OcrProgress | None] = asyncio.Queue()
        self.outcome: asyncio.Future[OcrResult] = (
            asyncio.get_running_loop().create_future()
        )
        self.cancelled = False

    async def events(self) -> AsyncIterator[OcrProgress]:
        while (event := await self.events_queue.get()) is not None:
            yield event

    async def result(self, timeout_s: float | None = None) -> OcrResult:
        return await self.outcome

    def cancel(self) -> None:
        self.cancelled = True
        if not self.outcome.done():
            self.outcome.set_exception(ReplyClosedError("cancelled"))
            self.events_queue.put_nowait(None)


class HandSource:
    """Replies answered by the test; ``submitted`` lists what was published."""

    def __init__(self) -> None:
        self.submitted: list[OcrRequest] = []
        self.replies: dict[str, HandReply] = {}
        self.reachable = True
        self.failed: str | None = None
        self.submitted_event = asyncio.Event()

    async def submit(self, request: OcrRequest) -> PendingReply:
        self.submitted.append(request)
        reply = self.replies[request.document_id] = HandReply()
        self.submitted_event.set()
        return reply

    def failure(self) -> str | None:
        return self.failed

    async def broker_reachable(self) -> bool:
        return self.reachable

    def answer(self, document_id: str, text: str = "", **fields: Any) -> None:
        reply = self.replies[document_id]
        fields = {
            "status": DocumentStatus.OK,
            "pages": [OcrPage(1, PageStatus.OK, text)],
            "page_count": 1,
            "model": "m-1",
            **fields,
        }
        reply.events_queue.put_nowait(None)
        reply.outcome.set_result(
            OcrResult(
                document_id=document_id, completed_at=utc_now(), text=text, **fields
            )
        )

    async def published(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.submitted) < count:
                self.submitted_event.clear()
                await self.submitted_event.wait()


@asynccontextmanager
async def app_client(
    **config: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, HandSource, CollectorRegistry]]:
    source = HandSource()
    registry = CollectorRegistry()
    app = build_gateway(source, GatewayConfig(api_key=KEY, **config), registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield http, source, registry


def waits(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("ocr_gateway_waits_in_flight") or 0.0


async def test_one_flight_per_request_id_and_the_limit_counts_watchers() -> None:
    async with app_client(max_waits=2) as (http, source, registry):
        body = {**BODY, "request_id": "a"}
        first = asyncio.create_task(http.post("/v1/ocr", json=body, headers=AUTH))
        await source.published(1)
        second = asyncio.create_task(http.post("/v1/ocr", json=body, headers=AUTH))
        async with asyncio.timeout(5):
            while waits(registry) < 2:  # noqa: ASYNC110 - the app's gauge
                await asyncio.sleep(0.01)
        third = await http.post(
            "/v1/ocr", json={**BODY, "request_id": "b"}, headers=AUTH
        )
        conflict = await http.post(
            "/v1/ocr", json={**body, "prompt": "other"}, headers=AUTH
        )
        source.answer("a", "text of a")
        answers = await asyncio.gather(first, second)
    assert len(source.submitted) == 1
    assert [a.json()["text"] for a in answers] == ["text of a", "text of a"]
    assert third.status_code == 429 and third.headers["retry-after"] == "1"
    assert conflict.status_code == 409
    assert waits(registry) == 0


async def test_a_timed_out_flight_lingers_for_a_retry_then_stops() -> None:
    async with app_client(timeout_s=0.2) as (http, source, registry):
        body = {**BODY, "request_id": "slow"}
        late = await http.post("/v1/ocr", json=body, headers=AUTH)
        assert waits(registry) == 1  # lingering, still counted
        retry = asyncio.create_task(http.post("/v1/ocr", json=body, headers=AUTH))
        await asyncio.sleep(0.05)
        source.answer("slow", "at last")
        joined = await retry
        assert len(source.submitted) == 1
        again = await http.post("/v1/ocr", json=body, headers=AUTH)  # 504, lingers
        await asyncio.sleep(0.5)
        assert waits(registry) == 0 and source.replies["slow"].cancelled
    assert late.status_code == 504 and late.json()["request_id"] == "slow"
    assert joined.status_code == 200 and joined.json()["text"] == "at last"
    assert again.status_code == 504 and len(source.submitted) == 2


async def test_failed_results_take_the_status_of_their_code() -> None:
    async with app_client() as (http, source, _):
        task = asyncio.create_task(
            http.post("/v1/ocr", json={**BODY, "request_id": "f"}, headers=AUTH)
        )
        await source.published(1)
        source.answer(
            "f",
            status=DocumentStatus.FAILED,
            error_code="TOO_MANY_PAGES",
            error_message="51 pages",
        )
        response = await task
    assert response.status_code == 413
    assert response.json()["error_code"] == "TOO_MANY_PAGES"
    assert response.json()["error_message"] == "51 pages"


async def test_a_stream_of_the_hand_source() -> None:
    async with app_client() as (http, source, _):
        task = asyncio.create_task(
            http.post("/v1/ocr/stream", json={**BODY, "request_id": "s"}, headers=AUTH)
        )
        await source.published(1)
        assert source.submitted[0].stream is True
        reply = source.replies["s"]
        for sequence, piece in enumerate(["Hel", "lo"], start=1):
            reply.events_queue.put_nowait(
                OcrProgress(
                    document_id="s",
                    page_number=1,
                    page_count=0,
                    status=PageStatus.OK,
                    emitted_at=utc_now(),
                    text=piece,
                    kind=ProgressKind.DELTA,
                    sequence=sequence,
                )
            )
        source.answer("s", "Hello")
        response = await task
    lines = [line for line in response.text.split("\n") if line]
    assert lines[-1] == "data: [DONE]"
    assert response.text.count('"content":"Hel"') == 1
    assert response.text.count('"content":"lo"') == 1


# Two pages as a vLLM worker reports them: the second stopped at max_tokens.
COUNTED_PAGES = {
    "pages": [
        OcrPage(
            1,
            PageStatus.OK,
            "a",
            token_count=1,
            prompt_token_count=1299,
            finish_reason="stop",
        ),
        OcrPage(
            2,
            PageStatus.TRUNCATED,
            "b",
            error_code="TRUNCATED",
            token_count=9,
            prompt_token_count=1301,
            finish_reason="length",
        ),
    ],
    "page_count": 2,
    "token_count": 10,
    "prompt_token_count": 2600,
}


async def test_chat_usage_and_finish_reason_are_the_engines() -> None:
    chat = {
        "model": "qwen-ocr",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + BODY_B64},
                    }
                ],
            }
        ],
    }
    async with app_client() as (http, source, _):
        task = asyncio.create_task(
            http.post(
                "/v1/chat/completions",
                json=chat,
                headers={**AUTH, "X-Request-Id": "c"},
            )
        )
        await source.published(1)
        source.answer("c", "a\fb", **COUNTED_PAGES)
        response = await task
    completion = ChatCompletion.model_validate(response.json())
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage == CompletionUsage(
        prompt_tokens=2600, completion_tokens=10, total_tokens=2610
    )


async def test_the_ocr_answer_carries_the_prompt_tokens_and_finish_reasons() -> None:
    async with app_client() as (http, source, _):
        task = asyncio.create_task(
            http.post("/v1/ocr", json={**BODY, "request_id": "o"}, headers=AUTH)
        )
        await source.published(1)
        source.answer("o", "a\fb", **COUNTED_PAGES)
        answer = (await task).json()
    assert (answer["token_count"], answer["prompt_token_count"]) == (10, 2600)
    pages = [(p["prompt_token_count"], p["finish_reason"]) for p in answer["pages"]]
    assert pages == [(1299, "stop"), (1301, "length")]


async def test_probes_follow_the_source() -> None:
    async with app_client() as (http, source, _):
        assert (await http.get("/ready")).status_code == 200
        source.reachable = False
        unreachable = await http.get("/ready")
        assert (await http.get("/health")).status_code == 200
        source.failed = "the result reader stopped (KafkaError)"
        health = await http.get("/health")
    assert unreachable.status_code == 503
    assert unreachable.json()["broker_reachable"] is False
    assert health.status_code == 503 and health.json()["status"] == "failed"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/chat/completions", {"messages": []}, "INVALID_REQUEST"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "no image"}]},
            "INVALID_REQUEST",
        ),
        ("/v1/ocr", {"request_id": "x"}, "INVALID_REQUEST"),
        ("/v1/ocr", {**BODY, "request_id": "\x00"}, "INVALID_REQUEST"),
        ("/v1/ocr", {**BODY, "request_id": "x" * 257}, "INVALID_REQUEST"),
        ("/v1/ocr", {**BODY, "prompt": "p" * 16385}, "INVALID_REQUEST"),
        ("/v1/ocr", {**BODY, "max_tokens": 0}, "INVALID_REQUEST"),
        ("/v1/ocr", {"image_url": "gopher://x"}, "IMAGE_URI"),
    ],
)
async def test_bad_requests(path: str, body: dict[str, Any], code: str) -> None:
    async with app_client() as (http, source, _):
        response = await http.post(path, json=body, headers=AUTH)
    assert response.status_code == 400
    found = response.json()
    assert (found["error"]["code"] if "error" in found else found["error_code"]) == code
    assert source.submitted == []


async def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    async with app_client(max_document_bytes=1000) as (http, _source, _):
        response = await http.post(
            "/v1/ocr",
            content=b"{}",
            headers={**AUTH, "Content-Length": "999999", "Content-Type": "x"},
        )
    assert response.status_code == 413
    assert response.json()["error_code"] == "DOCUMENT_TOO_LARGE"


async def test_upload_needs_a_multipart_file() -> None:
    async with app_client() as (http, _source, _):
        not_multipart = await http.post("/v1/ocr/upload", json=BODY, headers=AUTH)
        no_file = await http.post(
            "/v1/ocr/upload", data={"prompt": "x"}, files={"other": PNG}, headers=AUTH
        )
    assert not_multipart.status_code == no_file.status_code == 400
