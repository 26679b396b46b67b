"""A consumed record's value as a request the worker will work on, or why not.

Everything here is decided from the record alone, before any byte of the scan is read:
what fails here costs nothing but the result and dead letter that say why.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord

from consumers.errors import InvalidRequestError, UndecodableRecordError
from schemas import AvroSerde, CodecError, OcrRequest, SerdeContext
from schemas.content_types import SUPPORTED_TYPES

# Unicode categories no identifier may contain: control (NUL, ESC of ANSI escapes),
# format (bidirectional overrides), surrogates, private use, unassigned, and the
# line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

# What decode_request reads with unless given the worker's serde (single-object).
_SERDE = AvroSerde()


@dataclass(frozen=True)
class RequestLimits:
    max_id_chars: int = 256
    max_attributes: int = 64
    max_attributes_bytes: int = 16 * 1024
    max_prompt_bytes: int = 16 * 1024


def decode_request(msg: ConsumerRecord, serde: AvroSerde = _SERDE) -> OcrRequest:
    """The request in ``msg``'s value, read as from ``msg.topic``."""
    if msg.value is None:
        raise UndecodableRecordError("record has no value (tombstone)")
    try:
        return serde.deserialize(OcrRequest, msg.value, SerdeContext(msg.topic))
    except CodecError as exc:
        raise UndecodableRecordError(str(exc)) from exc


def check_request(request: OcrRequest, limits: RequestLimits) -> None:
    """Refuse a request that cannot be worked on, naming the rule or limit it breaks."""
    check_identifier("document_id", request.document_id, limits.max_id_chars)
    for name in ("correlation_id", "source_system"):
        value = getattr(request, name)
        if value is not None:
            check_identifier(name, value, limits.max_id_chars)
    if request.content_type not in SUPPORTED_TYPES:
        raise InvalidRequestError(
            f"content_type {request.content_type[:64]!r} is not one of "
            f"{sorted(SUPPORTED_TYPES)}"
        )
    if (request.image is None) == (request.image_uri is None):
        raise InvalidRequestError("exactly one of image and image_uri must be set")
    if request.max_tokens < 0 or not 0.0 <= request.temperature <= 2.0:
        raise InvalidRequestError("max_tokens must be >= 0 and temperature within 0..2")
    _check_attributes(request.attributes, limits)
    if request.prompt is not None:
        size = len(request.prompt.encode("utf-8", "surrogatepass"))
        if size > limits.max_prompt_bytes:
            raise InvalidRequestError(
                f"prompt is {size} bytes; the limit is {limits.max_prompt_bytes} "
                "(OCR_MAX_PROMPT_BYTES)"
            )


def echoable(request: OcrRequest, limits: RequestLimits) -> OcrRequest:
    """The request without the echoed fields that break a limit: what a FAILED result
    may carry back (a refused 4 MiB correlation id must not come back in the result)."""
    changes: dict[str, object] = {}
    for name in ("correlation_id", "source_system"):
        value = getattr(request, name)
        if value is not None:
            try:
                check_identifier(name, value, limits.max_id_chars)
            except InvalidRequestError:
                changes[name] = None
    try:
        _check_attributes(request.attributes, limits)
    except InvalidRequestError:
        changes["attributes"] = {}
    return dataclasses.replace(request, **changes) if changes else request  # type: ignore[arg-type]


def check_identifier(name: str, value: str, max_chars: int) -> None:
    """An id is 1..max_chars printable characters with no ``..`` path segment."""
    if not value.strip():
        raise InvalidRequestError(f"{name} is empty")
    if len(value) > max_chars:
        raise InvalidRequestError(
            f"{name} is {len(value)} characters; the limit is {max_chars} "
            "(OCR_MAX_ID_CHARS)"
        )
    if not is_printable(value):
        raise InvalidRequestError(f"{name} contains control or unprintable characters")
    if ".." in value.replace("\\", "/").split("/"):
        raise InvalidRequestError(f"{name} contains a '..' path segment")


def is_printable(value: str) -> bool:
    return not any(unicodedata.category(char) in _UNPRINTABLE for char in value)


def _check_attributes(attributes: dict[str, str], limits: RequestLimits) -> None:
    if len(attributes) > limits.max_attributes:
        raise InvalidRequestError(
            f"request has {len(attributes)} attributes; the limit is "
            f"{limits.max_attributes} (OCR_MAX_ATTRIBUTES)"
        )
    size = sum(
        len(key.encode("utf-8", "surrogatepass"))
        + len(value.encode("utf-8", "surrogatepass"))
        for key, value in attributes.items()
    )
    if size > limits.max_attributes_bytes:
        raise InvalidRequestError(
            f"attributes are {size} bytes; the limit is {limits.max_attributes_bytes} "
            "(OCR_MAX_ATTRIBUTES_BYTES)"
        )
    for key, value in attributes.items():
        if not key or not is_printable(key):
            raise InvalidRequestError("an attribute name is empty or unprintable")
        if not is_printable(value.replace("\t", " ").replace("\n", " ")):
            raise InvalidRequestError(
                "an attribute value contains control or unprintable characters"
            )
