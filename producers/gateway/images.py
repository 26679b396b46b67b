"""What a sender gives as its scan -> the bytes (or ``file://`` URI) a request carries.

Base64 (with or without a ``data:`` prefix), ``data:`` URLs, uploads and, when allowed,
http(s) URLs come inline; ``file://`` URLs inside ``OCR_FILE_URI_ROOTS`` go by reference
(the workers read them; the gateway reads the first kilobyte to know the type). The cap
is the pipeline's (``OCR_MAX_DOCUMENT_BYTES``) on the decoded bytes, checked from the
base64 length before decoding. The type is what the bytes are
(``schemas.content_types``), never what the sender declares.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from producers.gateway.errors import GatewayError, invalid
from schemas.content_types import FORMAT_NAMES, HEAD_BYTES, sniff_content_type


class ImageFetcher(Protocol):
    async def fetch(self, url: str) -> bytes: ...


@dataclass(frozen=True)
class Scan:
    """A request's document: inline bytes or a ``file://`` URI, and its sniffed type."""

    content_type: str
    image: bytes | None = None
    image_uri: str | None = None


def base64_chars(max_bytes: int) -> int:
    """The longest base64 text of at most ``max_bytes`` bytes (padded)."""
    return 4 * math.ceil(max_bytes / 3)


def too_large(max_bytes: int) -> GatewayError:
    return GatewayError(
        "DOCUMENT_TOO_LARGE",
        f"the document is over {max_bytes} bytes (OCR_MAX_DOCUMENT_BYTES)",
    )


class ScanReader:
    def __init__(
        self,
        max_document_bytes: int,
        file_uri_roots: tuple[str, ...] = (),
        fetcher: ImageFetcher | None = None,
    ) -> None:
        self._max_bytes = max_document_bytes
        self._roots = file_uri_roots
        self._fetcher = fetcher

    def from_base64(self, text: str) -> Scan:
        """``image_base64``: plain base64, or a whole ``data:`` URL."""
        if text.startswith("data:"):
            return self._from_data_url(text)
        return self.inline(self._decode_base64(text))

    async def from_url(self, url: str) -> Scan:
        """``image_url``: ``data:``, ``file://`` inside the roots, http(s) if allowed."""
        scheme = urlsplit(url[:16]).scheme.lower()
        if scheme == "data":
            return self._from_data_url(url)
        if scheme == "file":
            return await asyncio.to_thread(self._from_file_url, url)
        if scheme in ("http", "https"):
            if self._fetcher is None:
                raise GatewayError(
                    "IMAGE_URI", "http(s) image URLs are off here (GATEWAY_HTTP_FETCH)"
                )
            return self.inline(await self._fetcher.fetch(url))
        raise GatewayError(
            "IMAGE_URI", "image_url must be a data:, file: or http(s) URL"
        )

    def inline(self, raw: bytes) -> Scan:
        """Uploaded or decoded bytes, checked against the cap and sniffed."""
        if len(raw) > self._max_bytes:
            raise too_large(self._max_bytes)
        if not raw:
            raise GatewayError("EMPTY_DOCUMENT", "the document is empty")
        return Scan(content_type=self._sniff(raw), image=raw)

    def _from_data_url(self, url: str) -> Scan:
        header, comma, body = url.partition(",")
        if not comma:
            raise invalid("a data: URL needs a comma before its data")
        if header.lower().endswith(";base64"):
            return self.inline(self._decode_base64(body))
        if len(body) > 3 * self._max_bytes:  # %XX: at most three characters a byte
            raise too_large(self._max_bytes)
        return self.inline(unquote_to_bytes(body))

    def _decode_base64(self, text: str) -> bytes:
        compact = "".join(text.split())  # MIME base64 wraps its lines
        if len(compact) > base64_chars(self._max_bytes):
            raise too_large(self._max_bytes)
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid("the image is not valid base64") from exc

    def _from_file_url(self, url: str) -> Scan:
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise GatewayError("IMAGE_URI", "the file: URL cannot be parsed") from exc
        if parts.netloc not in ("", "localhost"):
            raise GatewayError("IMAGE_URI", "a file: URL must name a local path")
        if not self._roots:
            raise GatewayError(
                "IMAGE_URI", "file: URLs are refused here (OCR_FILE_URI_ROOTS is empty)"
            )
        path = os.path.realpath(unquote(parts.path))
        if not any(_inside(path, root) for root in self._roots):
            raise GatewayError("IMAGE_URI", "the file is outside OCR_FILE_URI_ROOTS")
        head = self._head(path)
        return Scan(content_type=self._sniff(head), image_uri=Path(path).as_uri())

    def _head(self, path: str) -> bytes:
        """The first kilobyte of a regular file within the cap (never a FIFO's wait)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise GatewayError("IMAGE_URI", "the file cannot be opened") from exc
        with os.fdopen(fd, "rb") as scan:
            info = os.fstat(scan.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise GatewayError("IMAGE_URI", "the file is not a regular file")
            if info.st_size > self._max_bytes:
                raise too_large(self._max_bytes)
            if info.st_size == 0:
                raise GatewayError("EMPTY_DOCUMENT", "the document is empty")
            return scan.read(HEAD_BYTES)

    def _sniff(self, head: bytes) -> str:
        content_type = sniff_content_type(head)
        if content_type is None:
            raise GatewayError(
                "UNSUPPORTED_FORMAT", f"the document is not a {FORMAT_NAMES} file"
            )
        return content_type


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root
