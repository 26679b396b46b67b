"""``POST /v1/chat/completions``: OpenAI-compatible, for the OpenAI SDKs.

The scan is the one ``image_url`` part of the last user message (a ``data:`` URL, or
``file://`` and http(s) as ``/v1/ocr`` allows them); that message's text parts are the
prompt (none: the worker's default OCR prompt). ``max_completion_tokens`` or
``max_tokens``, ``temperature`` and ``stream`` (with ``stream_options.include_usage``)
are honoured; other OpenAI parameters are accepted and ignored. The request id is the
``X-Request-Id`` header, else a new one; errors use OpenAI's error shape.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from producers.gateway.answers import (
    StreamOptions,
    failure_of,
    finish_reason,
    now_s,
    usage,
)
from producers.gateway.config import STREAM_MODEL
from producers.gateway.errors import invalid
from producers.gateway.intake import (
    build_request,
    fingerprint,
    parse_json,
    read_body,
    request_id_of,
)
from producers.gateway.ocr import MAX_TOKENS, RouteParts
from producers.gateway.sse import ChunkWriter


class ImageUrl(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str
    text: str | None = None
    image_url: ImageUrl | str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    role: str
    content: str | list[ContentPart] | None = None


class ChatStreamOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    include_usage: bool = False


class ChatBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str = STREAM_MODEL
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: ChatStreamOptions | None = None


def image_and_prompt(messages: list[ChatMessage]) -> tuple[str, str | None]:
    """The last user message's one image URL, and its text as the prompt."""
    users = [m for m in messages if m.role == "user"]
    if not users or not isinstance(users[-1].content, list):
        raise invalid("the last user message must carry the scan as an image_url part")
    parts = users[-1].content
    urls = [_url(p.image_url) for p in parts if p.type == "image_url"]
    if len(urls) != 1:
        raise invalid("send exactly one image_url part (one document a request)")
    texts = [p.text for p in parts if p.type == "text" and p.text and p.text.strip()]
    return urls[0], "\n".join(texts) or None


def _url(image_url: ImageUrl | str | None) -> str:
    if image_url is None:
        raise invalid("an image_url part needs its url")
    return image_url if isinstance(image_url, str) else image_url.url


def chat_routes(parts: RouteParts) -> APIRouter:
    answers, scans, limits = parts.answers, parts.scans, parts.limits
    router = parts.router()

    @router.post("/v1/chat/completions")
    async def completions(request: Request) -> Response:
        deadline = answers.deadline()
        body = await read_body(request, limits.json_cap(), limits.max_document_bytes)
        chat = parse_json(ChatBody, body)
        url, prompt = image_and_prompt(chat.messages)
        ocr_request = build_request(
            await scans.from_url(url),
            request_id=request_id_of(request, None, limits),
            prompt=prompt,
            max_tokens=chat.max_completion_tokens or chat.max_tokens,
            temperature=chat.temperature or 0.0,
            stream=chat.stream,
            limits=limits,
        )
        ticket = answers.admit(ocr_request, fingerprint(ocr_request))
        completion_id = f"chatcmpl-{ocr_request.document_id}"
        headers = {"X-Request-Id": ocr_request.document_id}
        if chat.stream:
            try:
                await answers.first_news(ticket, deadline)
            except BaseException:
                ticket.release()
                raise
            include_usage = chat.stream_options is not None and (
                chat.stream_options.include_usage
            )
            options = StreamOptions(
                ChunkWriter(completion_id, now_s(), chat.model), include_usage
            )
            return StreamingResponse(
                answers.stream(ticket, deadline, options),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache"},
            )
        async with ticket:
            result = await answers.result(ticket, deadline)
        failure = failure_of(result)
        if failure is not None:
            raise failure
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": now_s(),
                "model": result.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": finish_reason(result),
                        "logprobs": None,
                    }
                ],
                "usage": dict(usage(result)),
            },
            headers=headers,
        )

    return router
