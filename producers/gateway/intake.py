"""Request bodies read within their caps, and the ``OcrRequest`` a scan becomes.

A body is refused with 413 before it is read when its Content-Length is over the cap,
and while it is read once it passes the cap (chunked bodies). The caps leave room for
the scan's base64 (4 bytes per 3, JSON-escaped line breaks of wrapped base64 included),
the prompt (escaped, up to 6 bytes per UTF-8 byte) and the other fields, so a request
whose document is within ``OCR_MAX_DOCUMENT_BYTES`` always fits.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from producers.gateway.errors import invalid
from producers.gateway.images import Scan, base64_chars, too_large
from schemas import OcrRequest
from schemas.records import utc_now

SOURCE_SYSTEM = "medocr-gateway"
FIELDS_SLACK_BYTES = 64 * 1024
REQUEST_ID_HEADER = "x-request-id"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class IntakeLimits:
    max_document_bytes: int
    max_id_chars: int
    max_prompt_bytes: int

    def json_cap(self) -> int:
        """The largest JSON body: base64 of the largest scan, wrapped, and the rest."""
        b64 = base64_chars(self.max_document_bytes)
        return b64 + b64 // 38 + 6 * self.max_prompt_bytes + FIELDS_SLACK_BYTES

    def upload_cap(self) -> int:
        """The largest multipart body: the scan as is, and the other fields."""
        return self.max_document_bytes + 6 * self.max_prompt_bytes + FIELDS_SLACK_BYTES


async def read_body(request: Request, cap: int, max_document_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large(max_document_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_large(max_document_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(model: type[M], body: bytes) -> M:
    """The body as ``model``; 400 naming each field that is wrong (never its value)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(_problems(exc)) from None


def parse_fields(model: type[M], fields: Mapping[str, object]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise invalid(_problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:5]
    ]
    return "; ".join(problems)


def request_id_of(request: Request, given: str | None, limits: IntakeLimits) -> str:
    """The sender's id (body, else ``X-Request-Id``), checked; else a new one."""
    request_id = given if given is not None else request.headers.get(REQUEST_ID_HEADER)
    if request_id is None:
        return str(uuid.uuid4())
    if (
        not request_id.strip()
        or not request_id.isprintable()
        or len(request_id) > limits.max_id_chars
    ):
        raise invalid(
            f"request_id must be 1 to {limits.max_id_chars} printable characters"
        )
    return request_id


def build_request(
    scan: Scan,
    *,
    request_id: str,
    prompt: str | None,
    max_tokens: int | None,
    temperature: float,
    stream: bool,
    limits: IntakeLimits,
) -> OcrRequest:
    if prompt is not None and len(prompt.encode()) > limits.max_prompt_bytes:
        raise invalid(f"the prompt is over {limits.max_prompt_bytes} bytes")
    return OcrRequest(
        document_id=request_id,
        content_type=scan.content_type,
        submitted_at=utc_now(),
        image=scan.image,
        image_uri=scan.image_uri,
        prompt=prompt or None,
        max_tokens=max_tokens or 0,  # 0: the engine's default
        temperature=temperature,
        source_system=SOURCE_SYSTEM,
        stream=stream,
    )


def fingerprint(request: OcrRequest) -> str:
    """What makes two requests with one id the same request."""
    digest = hashlib.sha256()
    for part in (
        request.content_type,
        request.image_uri or "",
        request.prompt or "",
        str(request.max_tokens),
        repr(request.temperature),
    ):
        digest.update(part.encode() + b"\0")
    digest.update(request.image or b"")
    return digest.hexdigest()
