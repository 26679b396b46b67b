"""Turn scan files into OCR requests and publish them keyed by document id."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from schemas import AvroSerde, OcrRequest, SerdeContext
from schemas.content_types import HEAD_BYTES, SUFFIX_TYPES, sniff_content_type
from schemas.records import utc_now


@dataclass(frozen=True)
class RequestOptions:
    prompt: str | None = None
    max_tokens: int = 4096
    temperature: float = 0.0
    source_system: str | None = "medocr-cli"
    by_reference: bool = False  # send file:// URIs instead of the bytes
    id_prefix: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    stream: bool = False  # ask for the text as it is generated, as progress events


def find_scans(paths: Sequence[Path]) -> list[Path]:
    """Files as given, and the scans inside folders (recursively, sorted): by suffix,
    or by what its first bytes are for a file without one (PACS exports)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and _is_scan(p)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def _is_scan(path: Path) -> bool:
    """A scan's suffix, or no suffix and a scan's head (HEAD_BYTES of it read)."""
    suffix = path.suffix.lower()
    if suffix or path.name.startswith("."):
        return suffix in SUFFIX_TYPES
    try:
        return sniff_content_type(_head(path)) is not None
    except OSError:  # unreadable: not known to be a scan
        return False


def content_type_of(path: Path, head: bytes) -> str:
    """The type the bytes are; the suffix only when the bytes say nothing."""
    sniffed = sniff_content_type(head)
    return sniffed or SUFFIX_TYPES.get(path.suffix.lower(), "application/octet-stream")


def build_request(path: Path, options: RequestOptions) -> OcrRequest:
    raw = path.read_bytes() if not options.by_reference else None
    head = raw[:HEAD_BYTES] if raw is not None else _head(path)
    return OcrRequest(
        document_id=options.id_prefix + path.stem,
        content_type=content_type_of(path, head),
        submitted_at=utc_now(),
        image=raw,
        image_uri=path.resolve().as_uri() if options.by_reference else None,
        prompt=options.prompt,
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        source_system=options.source_system,
        attributes=dict(options.attributes),
        stream=options.stream,
    )


def _head(path: Path) -> bytes:
    with path.open("rb") as scan:
        return scan.read(HEAD_BYTES)


class ScanPublisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        serde: AvroSerde | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._serde = serde or AvroSerde()
        self._ctx = SerdeContext(topic)

    async def publish(self, request: OcrRequest) -> asyncio.Future[RecordMetadata]:
        """Queue one request; the returned future resolves when the broker has it."""
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._topic,
            self._serde.serialize(request, self._ctx),
            key=request.document_id.encode(),
        )
        return future
