"""Turn a scan's bytes into page images an engine can read, or a clear poison error.

Formats are recognised by their magic bytes (the declared content type is only checked
against them); sizes are checked before anything is decoded, so a decompression bomb
never reaches the decoder.
"""

from __future__ import annotations

import contextlib
import io
import numbers
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from consumers.errors import (
    DocumentTooLargeError,
    EmptyDocumentError,
    PixelLimitError,
    PoisonRecordError,
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
    max_document_pixels: int = 1_000_000_000


class RasterDocument:
    """An opened PNG/JPEG/TIFF whose pages were counted and sized from their headers.

    Pages are decoded one at a time (``page``), in order, so a caller holds only the
    pages it is working on. Not thread-safe: one decode at a time per document.
    """

    def __init__(
        self, image: Image.Image, sizes: list[tuple[int, int]], max_side_px: int
    ) -> None:
        self._image = image
        self.sizes = sizes
        self._max_side_px = max_side_px

    @property
    def page_count(self) -> int:
        return len(self.sizes)

    def page(self, index: int) -> Image.Image:
        """Page ``index`` (0-based) as 8-bit L or RGB, upright and bounded."""
        with _decoding():
            self._image.seek(index)
            self._image.load()
            return normalize_page(self._image, self._max_side_px)

    def close(self) -> None:
        self._image.close()


def open_document(raw: bytes, limits: ImageLimits) -> RasterDocument:
    """Open a scan and check its size, page count and pixels before any page is decoded."""
    if not raw:
        raise EmptyDocumentError("document has zero bytes")
    if len(raw) > limits.max_document_bytes:
        raise DocumentTooLargeError(
            f"document is {len(raw)} bytes; the limit is {limits.max_document_bytes}"
        )
    if sniff_content_type(raw) is None:
        raise UnsupportedFormatError("not a PNG, JPEG or TIFF image (magic bytes)")
    with _decoding():
        image = Image.open(io.BytesIO(raw))
        try:
            sizes = _page_sizes(image, limits)
        except BaseException:
            image.close()
            raise
    return RasterDocument(image, sizes, limits.max_side_px)


def load_pages(raw: bytes, limits: ImageLimits) -> list[Image.Image]:
    """Every page at once (tools and tests; the worker decodes page by page)."""
    document = open_document(raw, limits)
    try:
        return [document.page(index) for index in range(document.page_count)]
    finally:
        document.close()


def _page_sizes(image: Image.Image, limits: ImageLimits) -> list[tuple[int, int]]:
    """Each page's size from its header, checked against the page and document limits."""
    sizes: list[tuple[int, int]] = []
    total = 0
    for width, height in _frame_sizes(image, limits.max_pages):
        number = len(sizes) + 1
        if number > limits.max_pages:
            raise TooManyPagesError(
                f"document has more than {limits.max_pages} pages; "
                f"the limit is {limits.max_pages}"
            )
        if width <= 0 or height <= 0:
            raise UnreadableImageError(f"page {number} has no pixels")
        if width * height > limits.max_pixels:
            raise PixelLimitError(
                f"page {number} is {width}x{height} px; "
                f"the limit is {limits.max_pixels} px"
            )
        total += width * height
        if total > limits.max_document_pixels:
            raise PixelLimitError(
                f"pages 1-{number} have {total} px together; the limit for a document "
                f"is {limits.max_document_pixels} px (OCR_MAX_DOCUMENT_PIXELS)"
            )
        sizes.append((width, height))
    return sizes


def _frame_sizes(image: Image.Image, max_pages: int) -> Iterator[tuple[int, int]]:
    """Frame sizes from the headers, at most ``max_pages + 1`` of them.

    A TIFF is walked IFD by IFD: its ``n_frames`` walks every IFD first, and a TIFF of
    150,000 tiny IFDs took minutes. Other formats state their frame count up front
    (PNG's acTL, the MPO index); APNG frames share the canvas size.
    """
    if image.format != "TIFF":
        frames = int(getattr(image, "n_frames", 1))
        for index in range(min(frames, max_pages + 1)):
            if index and image.format == "MPO":
                image.seek(index)
            yield image.size
        return
    index = 0
    while True:
        yield image.size
        index += 1
        if index > max_pages:
            return
        try:
            image.seek(index)
        except EOFError:
            return


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Pillow's errors on hostile bytes, as one poison error each."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limits decide; Pillow's warnings about corrupt metadata
            # must not turn into crashes where warnings are errors.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    except PoisonRecordError:
        raise
    except Image.DecompressionBombError as exc:
        raise PixelLimitError(f"image is a decompression bomb: {exc}") from exc
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        TypeError,  # "Missing dimensions": a TIFF IFD without ImageWidth
        SyntaxError,
        EOFError,
        struct.error,
        IndexError,
        KeyError,
        ZeroDivisionError,
    ) as exc:
        raise UnreadableImageError(f"image cannot be decoded: {exc}") from exc


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
    if mode == "P" and _gray_palette(page):
        return page.convert("L")  # a third of RGB's memory, the same pixels
    return page.convert("RGB")  # CMYK, YCbCr, palette without transparency, ...


def _gray_palette(page: Image.Image) -> bool:
    """Every palette entry is a gray (scanners write bilevel and gray pages so)."""
    palette = page.getpalette() or []
    return all(
        palette[i] == palette[i + 1] == palette[i + 2]
        for i in range(0, len(palette) - 2, 3)
    )
