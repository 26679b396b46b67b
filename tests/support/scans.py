"""Scan bytes built in memory for tests: encoded images, multi-page TIFFs, PNG bombs."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def multipage_tiff(sizes: list[tuple[int, int]], **options: object) -> bytes:
    """One white 8-bit gray page per size."""
    frames = [Image.new("L", size, 255) for size in sizes]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:], **options)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body))
    )


def png_claiming(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims ``width`` x ``height`` 8-bit gray pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
