"""What every input decoder shares: the limits, a page, and the two seams it fills.

A decoder opens a file's bytes into a ``DecodedDocument`` whose pages are counted and
sized from headers (``check_page_sizes``), then decodes them one at a time into
``Page`` objects an engine can read (``consumers.inputs.pages.to_page``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from consumers.errors import PixelLimitError, TooManyPagesError, UnreadableImageError
from producers.kafka import MAX_DOCUMENT_BYTES

# What a DICOM object may give back on the result (OCR_DICOM_ATTRIBUTES): identifiers
# a PACS integrator files the text by. PHI: they go into the result record only.
DICOM_ATTRIBUTES = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "AccessionNumber",
    "PatientID",
    "Modality",
    "DocumentTitle",
    "InstanceNumber",
)


@dataclass(frozen=True)
class ImageLimits:
    """What a document may be, and how a format without pixels of its own is drawn."""

    max_document_bytes: int = MAX_DOCUMENT_BYTES
    max_pages: int = 50
    max_pixels: int = 100_000_000
    max_side_px: int = 4096
    max_document_pixels: int = 1_000_000_000
    # A PDF page is rendered at render_dpi (enough for Tesseract), lowered so the page
    # has at most render_max_pixels (the engine's own bound; 0: none) and its long side
    # at most max_side_px.
    render_dpi: float = 300.0
    render_max_pixels: int = 0
    dicom_attributes: tuple[str, ...] = DICOM_ATTRIBUTES


@dataclass(frozen=True)
class Page:
    number: int  # 1-based
    image: Image.Image  # 8-bit L or RGB, upright, long side <= max_side_px
    dpi: float | None  # as the file states it, scaled with any shrink; None: unknown
    source_index: int | None = None  # 1-based frame/page of the source; None: number


class DecodedDocument(Protocol):
    """An opened document: pages counted and sized, none decoded yet.

    ``page`` decodes one page; a caller holds only the pages it is working on. Not
    thread-safe: one decode at a time per document.
    """

    sizes: list[tuple[int, int]]  # (width, height) of each page, from the headers

    @property
    def format(self) -> str: ...  # the source's type: "application/dicom" for its PDF

    @property
    def metadata(self) -> Mapping[str, str]: ...  # allow-listed identifiers; PHI

    @property
    def page_count(self) -> int: ...

    def page(self, index: int) -> Page: ...  # 0-based index

    def text_layer(self, index: int) -> str | None: ...  # a usable text layer, or None

    def close(self) -> None: ...


class InputDecoder(Protocol):
    """One input format's decoder. Errors leave it only as ``PoisonRecordError`` types:
    its library's errors on hostile bytes become ``UnreadableImageError``."""

    @property
    def content_types(self) -> tuple[str, ...]: ...  # of schemas.content_types

    @property
    def concurrency(self) -> int: ...  # page decodes worth running at once

    def open(self, raw: bytes, limits: ImageLimits) -> DecodedDocument: ...


def check_page_sizes(
    sizes: Iterable[tuple[int, int]], limits: ImageLimits
) -> list[tuple[int, int]]:
    """Each page's size, checked against the page and document limits.

    ``sizes`` should stop after ``limits.max_pages + 1`` pages: one more is enough to
    know the document has too many.
    """
    checked: list[tuple[int, int]] = []
    total = 0
    for width, height in sizes:
        number = len(checked) + 1
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
        checked.append((width, height))
    return checked
