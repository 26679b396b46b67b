"""PNG, JPEG and TIFF through Pillow: pages counted and sized from their headers first.

A decompression bomb never reaches the decoder: every page's size is checked before
any pixel is decoded, and a TIFF's pages are counted only up to one past the limit.
"""

from __future__ import annotations

import contextlib
import io
import numbers
import struct
import warnings
from collections.abc import Iterator

from PIL import Image, UnidentifiedImageError

from consumers.errors import PixelLimitError, PoisonRecordError, UnreadableImageError
from consumers.inputs.base import ImageLimits, Page, check_page_sizes
from consumers.inputs.pages import to_page


class RasterDocument:
    """An opened PNG, JPEG or TIFF whose pages were counted and sized from headers."""

    def __init__(
        self,
        image: Image.Image,
        sizes: list[tuple[int, int]],
        max_side_px: int,
        content_type: str = "image/png",
    ) -> None:
        self._image = image
        self.sizes = sizes
        self._max_side_px = max_side_px
        self.format = content_type
        self.metadata: dict[str, str] = {}

    @property
    def page_count(self) -> int:
        return len(self.sizes)

    def page(self, index: int) -> Page:
        """Page ``index`` (0-based), decoded now."""
        with _decoding():
            self._image.seek(index)
            self._image.load()
            return to_page(
                index + 1, self._image, _stated_dpi(self._image), self._max_side_px
            )

    def text_layer(self, index: int) -> str | None:
        return None  # a raster page is pixels only

    def close(self) -> None:
        self._image.close()


_MIME = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "TIFF": "image/tiff",
}


class RasterDecoder:
    content_types = ("image/png", "image/jpeg", "image/tiff")
    # Everything decoding at once would share the cores evenly, so every page would be
    # ready late; in turns, the first pages reach the engine early (an idle GPU starts
    # on the first page it gets) and later ones follow at the same rate.
    concurrency = 4

    def open(self, raw: bytes, limits: ImageLimits) -> RasterDocument:
        with _decoding():
            image = Image.open(io.BytesIO(raw))
            try:
                sizes = check_page_sizes(_frame_sizes(image, limits.max_pages), limits)
            except BaseException:
                image.close()
                raise
        content_type = _MIME.get(image.format or "", "image/png")
        return RasterDocument(image, sizes, limits.max_side_px, content_type)


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


def _stated_dpi(frame: Image.Image) -> float | None:
    """The horizontal resolution the file states, if any."""
    dpi = frame.info.get("dpi")
    # numbers.Real: TIFF resolutions are Pillow IFDRational values, not floats.
    if isinstance(dpi, tuple) and dpi and isinstance(dpi[0], numbers.Real):
        return float(dpi[0])
    return None


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
