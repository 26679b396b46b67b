"""Input formats: the decoder registry, keyed by content type.

The bytes' own type (``schemas.content_types``, by magic probe) picks the decoder; the
declared content type is only checked against it. Adding a format is one entry in
``schemas.content_types.FORMATS`` and one decoder module here, listed in
``_available_decoders`` (inside ``contextlib.suppress(ImportError)`` when its library
is optional: without it, its type is refused as UNSUPPORTED_FORMAT).

::

    InputRegistry.open(raw, limits)      empty? too large? sniffed type? its decoder?
      │                                  (decoder_for_bytes, when the caller schedules)
      └── InputDecoder.open              pages counted and sized from headers
            └── DecodedDocument.page(i)  one page decoded: Page(number, image, dpi)
"""

from __future__ import annotations

from collections.abc import Iterable

from PIL import Image

from consumers.errors import (
    DocumentTooLargeError,
    EmptyDocumentError,
    UnsupportedFormatError,
)
from consumers.inputs.base import (
    DecodedDocument,
    ImageLimits,
    InputDecoder,
    Page,
    check_page_sizes,
)
from consumers.inputs.raster import RasterDecoder, RasterDocument
from schemas.content_types import FORMATS, ContentType, in_words, sniff_content_type

__all__ = [
    "INPUTS",
    "DecodedDocument",
    "ImageLimits",
    "InputDecoder",
    "InputRegistry",
    "Page",
    "RasterDocument",
    "check_page_sizes",
    "load_pages",
    "open_document",
    "read_pages",
]


class InputRegistry:
    """Decoders keyed by the content types they open, over a table of formats."""

    def __init__(
        self,
        decoders: Iterable[InputDecoder],
        formats: Iterable[ContentType] = FORMATS,
    ) -> None:
        self._formats = tuple(formats)
        self._decoders = {
            content_type: decoder
            for decoder in decoders
            for content_type in decoder.content_types
        }
        self._names = in_words([f.name for f in self._formats])

    @property
    def content_types(self) -> frozenset[str]:
        """The types this worker can decode."""
        return frozenset(self._decoders)

    def decoder_for(self, content_type: str) -> InputDecoder:
        try:
            return self._decoders[content_type]
        except KeyError:
            raise UnsupportedFormatError(
                f"no decoder for {content_type[:64]!r} in this worker"
            ) from None

    def open(self, raw: bytes, limits: ImageLimits) -> DecodedDocument:
        """Open a document and check its size, page count and pixels before any page
        is decoded. The decoder is the one for the type the bytes really are."""
        return self.decoder_for_bytes(raw, limits).open(raw, limits)

    def decoder_for_bytes(self, raw: bytes, limits: ImageLimits) -> InputDecoder:
        """The decoder for the type the bytes really are, once their size is checked
        (a few header bytes are read: cheap enough for the event loop)."""
        if not raw:
            raise EmptyDocumentError("document has zero bytes")
        if len(raw) > limits.max_document_bytes:
            raise DocumentTooLargeError(
                f"document is {len(raw)} bytes; the limit is {limits.max_document_bytes}"
            )
        content_type = sniff_content_type(raw, self._formats)
        if content_type is None:
            raise UnsupportedFormatError(f"not a {self._names} file (magic bytes)")
        return self.decoder_for(content_type)


def _available_decoders() -> list[InputDecoder]:
    from consumers.inputs.dicom import DicomDecoder
    from consumers.inputs.pdf import PdfDecoder  # its renderer children start on use

    return [RasterDecoder(), PdfDecoder(), DicomDecoder()]


INPUTS = InputRegistry(_available_decoders())


def open_document(raw: bytes, limits: ImageLimits) -> DecodedDocument:
    """``raw`` opened by the decoder for its type (``INPUTS.open``)."""
    return INPUTS.open(raw, limits)


def read_pages(raw: bytes, limits: ImageLimits) -> list[Page]:
    """Every page at once (tools and tests; the worker decodes page by page)."""
    document = open_document(raw, limits)
    try:
        return [document.page(index) for index in range(document.page_count)]
    finally:
        document.close()


def load_pages(raw: bytes, limits: ImageLimits) -> list[Image.Image]:
    """Every page's image at once."""
    return [page.image for page in read_pages(raw, limits)]
