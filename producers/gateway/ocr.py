"""``POST /v1/ocr``, ``/v1/ocr/upload`` and ``/v1/ocr/stream``: the original server's
own API, with its request and response shapes.

A FAILED document answers with the same body as an OK one (``status``, ``error_code``,
``error_message``, the pages) under the status of its error code (``errors.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from producers.gateway.answers import Answers, StreamOptions, failure_of, now_s
from producers.gateway.config import STREAM_MODEL
from producers.gateway.errors import invalid, status_for
from producers.gateway.images import Scan, ScanReader
from producers.gateway.intake import (
    IntakeLimits,
    build_request,
    fingerprint,
    parse_fields,
    parse_json,
    read_body,
    request_id_of,
)
from producers.gateway.sse import ChunkWriter
from schemas import OcrResult

MAX_TOKENS = 2**31 - 1  # an Avro int


class OcrBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    image_base64: str | None = None
    image_url: str | None = None
    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    stream: bool = False
    request_id: str | None = None

    @model_validator(mode="after")
    def _one_image(self) -> OcrBody:
        if (self.image_base64 is None) == (self.image_url is None):
            raise ValueError("send exactly one of image_base64 and image_url")
        return self


class UploadFields(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    prompt: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    request_id: str | None = None


class PageAnswer(BaseModel):
    page_number: int
    status: str
    text: str
    token_count: int
    prompt_token_count: int
    finish_reason: str | None
    error_code: str | None


class OcrAnswer(BaseModel):
    request_id: str
    text: str
    processing_time_ms: int
    token_count: int
    prompt_token_count: int
    model: str
    status: str
    page_count: int
    pages: list[PageAnswer]
    error_code: str | None
    error_message: str | None

    @classmethod
    def of(cls, result: OcrResult) -> OcrAnswer:
        return cls(
            request_id=result.document_id,
            text=result.text,
            processing_time_ms=result.processing_time_ms,
            token_count=result.token_count,
            prompt_token_count=result.prompt_token_count,
            model=result.model,
            status=result.status.value,
            page_count=result.page_count,
            pages=[
                PageAnswer(
                    page_number=page.page_number,
                    status=page.status.value,
                    text=page.text,
                    token_count=page.token_count,
                    prompt_token_count=page.prompt_token_count,
                    finish_reason=page.finish_reason,
                    error_code=page.error_code,
                )
                for page in result.pages
            ],
            error_code=result.error_code,
            error_message=result.error_message,
        )


@dataclass(frozen=True)
class RouteParts:
    """What the OCR and the chat routes work with."""

    answers: Answers
    scans: ScanReader
    limits: IntakeLimits
    authorized: Callable[[Request], None]  # raises unless the API key is right

    def router(self) -> APIRouter:
        """A router whose every route needs the API key."""
        return APIRouter(dependencies=[Depends(self.authorized)])


def ocr_routes(parts: RouteParts) -> APIRouter:
    answers, scans, limits = parts.answers, parts.scans, parts.limits
    router = parts.router()

    async def answer(
        request: Request,
        scan: Scan,
        fields: UploadFields,
        *,
        stream: bool,
        deadline: float,
    ) -> Response:
        ocr_request = build_request(
            scan,
            request_id=request_id_of(request, fields.request_id, limits),
            prompt=fields.prompt,
            max_tokens=fields.max_tokens,
            temperature=fields.temperature,
            stream=stream,
            limits=limits,
        )
        ticket = answers.admit(ocr_request, fingerprint(ocr_request))
        headers = {"X-Request-Id": ocr_request.document_id}
        if stream:
            try:
                await answers.first_news(ticket, deadline)
            except BaseException:
                ticket.release()
                raise
            writer = ChunkWriter(
                f"chatcmpl-{ocr_request.document_id}", now_s(), STREAM_MODEL
            )
            return StreamingResponse(
                answers.stream(ticket, deadline, StreamOptions(writer)),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache"},
            )
        async with ticket:
            result = await answers.result(ticket, deadline)
        failure = failure_of(result)
        return JSONResponse(
            OcrAnswer.of(result).model_dump(mode="json"),
            status_code=200 if failure is None else status_for(failure.code),
            headers=headers,
        )

    async def from_json(request: Request, *, stream: bool) -> Response:
        deadline = answers.deadline()
        body = await read_body(request, limits.json_cap(), limits.max_document_bytes)
        ocr = parse_json(OcrBody, body)
        if ocr.image_base64 is not None:
            scan = scans.from_base64(ocr.image_base64)
        else:
            scan = await scans.from_url(ocr.image_url or "")
        fields = UploadFields.model_validate(ocr.model_dump())
        stream = stream or ocr.stream
        return await answer(request, scan, fields, stream=stream, deadline=deadline)

    @router.post("/v1/ocr")
    async def ocr(request: Request) -> Response:
        return await from_json(request, stream=False)

    @router.post("/v1/ocr/stream")
    async def ocr_stream(request: Request) -> Response:
        return await from_json(request, stream=True)

    @router.post("/v1/ocr/upload")
    async def upload(request: Request) -> Response:
        deadline = answers.deadline()
        body = await read_body(request, limits.upload_cap(), limits.max_document_bytes)
        upload, fields = await _form(request, body)
        scan = scans.inline(upload)
        return await answer(request, scan, fields, stream=False, deadline=deadline)

    return router


async def _form(request: Request, body: bytes) -> tuple[bytes, UploadFields]:
    """The multipart form in ``body``: the ``file`` part's bytes, and the fields."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid("send the document as multipart/form-data with a 'file' part")
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise invalid("the form needs a 'file' part holding the document")
            raw = await upload.read()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
    except (HTTPException, MultiPartException) as exc:
        raise invalid("the multipart form cannot be read") from exc
    return raw, parse_fields(UploadFields, fields)
