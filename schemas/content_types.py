"""The scan formats the contract allows, recognised by their magic bytes."""

from __future__ import annotations

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
SUPPORTED_TYPES = frozenset(mime for _, mime in _MAGIC)
MAGIC_BYTES = max(len(magic) for magic, _ in _MAGIC)


def sniff_content_type(raw: bytes) -> str | None:
    """The MIME type the bytes really are, or None when they are no supported image."""
    for magic, mime in _MAGIC:
        if raw.startswith(magic):
            return mime
    return None
