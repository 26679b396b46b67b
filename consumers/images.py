"""Turn a scan's bytes into page images an engine can read, or a clear poison error.

Formats are recognised by their magic bytes (the declared content type is only checked
against them); sizes are checked before anything is decoded, so a decompression bomb
never reaches the decoder.
"""

from __future__ import annotations

import io
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, ImageOps, UnidentifiedImageError

from consumers.errors import (
    DocumentTooLargeError,
    EmptyDocumentError,
    ImageUriError,
    PixelLimitError,
    TooManyPagesError,
    UnreadableImageError,
    UnsupportedFormatError,
)
from schemas.content_types import sniff_content_type


@dataclass(frozen=True)
class ImageLimits:
    max_document_bytes: int = 20 * 1024 * 1024
    max_pages: int = 50
    max_pixels: int = 100_000_000
    max_side_px: int = 4096


def read_image_uri(uri: str, roots: tuple[str, ...], limits: ImageLimits) -> bytes:
    """Read a ``file://`` scan that lies below one of the allowed folders."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ImageUriError(
            f"unsupported image_uri scheme {parsed.scheme!r} (only file://)"
        )
    if not roots:
        raise ImageUriError("file:// image URIs are disabled (set OCR_FILE_URI_ROOTS)")
    path = Path(unquote(parsed.path)).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise ImageUriError("image_uri is outside OCR_FILE_URI_ROOTS")
    try:
        size = path.stat().st_size
        if size > limits.max_document_bytes:
            raise DocumentTooLargeError(
                f"document is {size} bytes; the limit is {limits.max_document_bytes}"
            )
        return path.read_bytes()
    except OSError as exc:
        raise ImageUriError(f"cannot read image_uri: {exc.strerror}") from exc


def load_pages(raw: bytes, limits: ImageLimits) -> list[Image.Image]:
    """Decode every page of a PNG/JPEG/TIFF into 8-bit L or RGB, upright and bounded."""
    if not raw:
        raise EmptyDocumentError("document has zero bytes")
    if len(raw) > limits.max_document_bytes:
        raise DocumentTooLargeError(
            f"document is {len(raw)} bytes; the limit is {limits.max_document_bytes}"
        )
    if sniff_content_type(raw) is None:
        raise UnsupportedFormatError("not a PNG, JPEG or TIFF image (magic bytes)")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit decides (below); Pillow's warnings about corrupt
            # metadata must not turn into crashes where warnings are errors.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            image = Image.open(io.BytesIO(raw))
            return _decode_frames(image, limits)
    except (PixelLimitError, TooManyPagesError):
        raise
    except Image.DecompressionBombError as exc:
        raise PixelLimitError(f"image is a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UnreadableImageError(f"image cannot be decoded: {exc}") from exc


def _decode_frames(image: Image.Image, limits: ImageLimits) -> list[Image.Image]:
    frames = getattr(image, "n_frames", 1)
    if frames > limits.max_pages:
        raise TooManyPagesError(
            f"document has {frames} pages; the limit is {limits.max_pages}"
        )
    pages = []
    for index in range(frames):
        image.seek(index)
        width, height = image.size
        if width * height > limits.max_pixels:
            raise PixelLimitError(
                f"page {index + 1} is {width}x{height} px; the limit is {limits.max_pixels} px"
            )
        if width == 0 or height == 0:
            raise UnreadableImageError(f"page {index + 1} has no pixels")
        image.load()
        pages.append(normalize_page(image, limits.max_side_px))
    return pages


def normalize_page(frame: Image.Image, max_side_px: int) -> Image.Image:
    """Upright, 8-bit gray or RGB, long side at most ``max_side_px``.

    The result never shares pixels with ``frame``: the next ``seek`` of a multi-page
    file reuses the frame's buffer. ``exif_transpose`` (not in place) always returns a
    new image, the one copy made here; the conversions below return new images too.
    """
    page = _to_8bit(ImageOps.exif_transpose(frame))
    if max(page.size) > max_side_px:  # never the frame's own buffer: shrink in place
        width = page.width
        page.thumbnail((max_side_px, max_side_px), Image.Resampling.LANCZOS)
        _scale_dpi(page, page.width / width)
    return page


def _scale_dpi(page: Image.Image, factor: float) -> None:
    """A shrunk page keeps its paper size: its resolution shrinks with it."""
    dpi = page.info.get("dpi")
    # numbers.Real: TIFF resolutions are Pillow IFDRational values, not floats.
    if isinstance(dpi, tuple) and all(isinstance(v, numbers.Real) for v in dpi):
        page.info["dpi"] = tuple(float(v) * factor for v in dpi)


def _to_8bit(page: Image.Image) -> Image.Image:
    mode = page.mode
    if mode in ("L", "RGB"):
        return page
    if mode == "1":
        return page.convert("L")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit gray: scale the real range to 0..255 rather than clip at 255.
        wide = page.convert("I")
        low, high = (float(v) for v in wide.getextrema() if isinstance(v, int | float))
        span = max(high - low, 1.0)
        return wide.point(lambda v: (v - low) * 255 / span).convert("L")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in page.info):
        rgba = page.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return page.convert("RGB")  # CMYK, YCbCr, palette without transparency, ...
