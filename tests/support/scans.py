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


def tiny_ifd_tiff(
    pages: int, *, without_width: frozenset[int] = frozenset(), next_past_end: int = 0
) -> bytes:
    """A little-endian TIFF of ``pages`` 1x1 bilevel IFDs sharing one strip byte.

    ``without_width``: 1-based pages whose IFD lacks ImageWidth (Pillow: "Missing
    dimensions"). ``next_past_end``: after that page, the next-IFD offset points past
    the end of the file, so a reader that walks every IFD fails there.
    """
    header = 8
    strip = header  # one data byte right after the header
    first_ifd = header + 2  # word-aligned
    out = bytearray(b"II*\x00" + struct.pack("<I", first_ifd) + b"\x00\x00")
    for number in range(1, pages + 1):
        tags = [
            (256, 3, 1, 1),  # ImageWidth
            (257, 3, 1, 1),  # ImageLength
            (258, 3, 1, 1),  # BitsPerSample
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # Photometric: black is zero
            (273, 4, 1, strip),  # StripOffsets
            (277, 3, 1, 1),  # SamplesPerPixel
            (278, 3, 1, 1),  # RowsPerStrip
            (279, 4, 1, 1),  # StripByteCounts
        ]
        if number in without_width:
            tags = tags[1:]
        start = len(out)
        following = start + 2 + 12 * len(tags) + 4
        if number == pages:
            following = 0
        elif number == next_past_end:
            following = 0x7FFFFFF0
        out += struct.pack("<H", len(tags))
        for tag, kind, count, value in tags:
            out += struct.pack("<HHII", tag, kind, count, value)
        out += struct.pack("<I", following)
    return bytes(out)
