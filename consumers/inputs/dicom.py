"""DICOM through pydicom: frames counted and sized from the header, decoded one by one.

Opening reads the data set once, keeping only the elements the decoder uses (and the
allow-listed identifiers), and checks it before any pixel is decoded: a truncated file,
a frame or frame count over the limits, an Image Pixel module that makes no sense, a
transfer syntax no installed plugin decodes. ``page(i)`` then decodes frame ``i`` alone.
An Encapsulated PDF is handed to the PDF decoder; an object with neither pixel data nor
a document (SR, RT, presentation states) is NO_IMAGE_DATA.

The identifiers are PHI: they go on the document's ``metadata`` and nowhere else, and no
error message here quotes an attribute value other than Image Pixel numbers and UIDs of
the standard (transfer syntax, SOP class).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import replace
from itertools import repeat
from typing import Any, Protocol

from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from consumers.errors import (
    NoImageDataError,
    PoisonRecordError,
    UnreadableDocumentError,
    UnreadableImageError,
    UnsupportedFormatError,
    UnsupportedTransferSyntaxError,
)
from consumers.inputs import dicom_plugins
from consumers.inputs.base import DecodedDocument, ImageLimits, Page, check_page_sizes
from consumers.inputs.dicom_frames import FrameFormat, frame_image
from consumers.inputs.dicom_reading import LIBRARY_ERRORS, read_dicom, reading
from consumers.inputs.pages import to_page

MIME = "application/dicom"
# A deflated data set is inflated whole before it is read, to at most this many times
# the document limit: an uncompressed object over the limit is refused anyway, and a
# deflate bomb inflates ~1000x.
_MAX_INFLATION = 4
# A value longer than any identifier VR allows (ST: 1,024 chars) is not an identifier.
_MAX_IDENTIFIER_CHARS = 1024
_GRAY = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
# YBR_FULL(_422) are converted to RGB by pydicom; YBR_ICT/RCT by the JPEG 2000 codec.
_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_BITS_ALLOCATED = (1, 8, 16, 32)

# Everything the decoder reads; the rest of the data set is skipped, not kept.
_DECODER_KEYWORDS = (
    "SOPClassUID",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    *(
        f"{prefix}{color}PaletteColorLookupTable{part}"
        for color in ("Red", "Green", "Blue")
        for prefix, part in (("", "Descriptor"), ("", "Data"), ("Segmented", "Data"))
    ),
    "NominalScannedPixelSpacing",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "EncapsulatedDocument",
    "EncapsulatedDocumentLength",
    "MIMETypeOfEncapsulatedDocument",
)
# Where a page's resolution comes from, first found wins: the scanner's spacing on the
# paper (SC Image module), else the detector's or the patient's (PS3.3 10.7.1.3).
_SPACING_KEYWORDS = ("NominalScannedPixelSpacing", "PixelSpacing", "ImagerPixelSpacing")
_MM_PER_INCH = 25.4


class DicomDocument:
    """An opened DICOM image object: one page per frame, none decoded yet."""

    def __init__(
        self,
        ds: Dataset,
        decoder: Decoder,
        fmt: FrameFormat,
        sizes: list[tuple[int, int]],
        metadata: dict[str, str],
        max_side_px: int,
    ) -> None:
        self._ds = ds
        self._decoder = decoder
        self._fmt = fmt
        self.sizes = sizes
        self._dpi = stated_dpi(ds)
        self._max_side_px = max_side_px
        self.format = MIME
        self.metadata = metadata

    @property
    def page_count(self) -> int:
        return len(self.sizes)

    def page(self, index: int) -> Page:
        """Frame ``index`` (0-based), decoded now."""
        with _decoding():
            # raw: YBR_FULL is left to frame_image, which converts it faster
            frame, meta = self._decoder.as_array(
                self._ds, index=index, raw=True, **_pixel_options(self._fmt)
            )
            photometric = str(meta.get("photometric_interpretation", ""))
            image = frame_image(frame, photometric, self._ds, self._fmt)
        page = to_page(index + 1, image, self._dpi, self._max_side_px)
        return replace(page, source_index=index + 1)

    def text_layer(self, index: int) -> str | None:
        return None  # pixel data only

    def close(self) -> None:
        self._ds = Dataset()  # the pixel data goes with it


class PdfOpener(Protocol):
    """Opens the PDF inside an Encapsulated PDF (``consumers.inputs.pdf.open_pdf``)."""

    def __call__(
        self,
        raw: bytes,
        limits: ImageLimits,
        *,
        format: str,
        metadata: Mapping[str, str],
    ) -> DecodedDocument: ...


class DicomDecoder:
    content_types = (MIME,)
    concurrency = 4  # as RasterDecoder: the codecs are C, one frame at a time

    def __init__(self, open_pdf: PdfOpener | None = None) -> None:
        self._open_pdf = open_pdf
        # pydicom's value checks warn with the value quoted (a UID, a name: PHI) into
        # its logger; this decoder checks what it reads itself.
        config.settings.reading_validation_mode = config.IGNORE
        # pydicom logs a frame it cannot decode at ERROR with a traceback; this decoder
        # raises a per-record error for it, which the worker logs once, without values.
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        dicom_plugins.configure()

    def open(self, raw: bytes, limits: ImageLimits) -> DecodedDocument:
        keywords = (*_DECODER_KEYWORDS, *limits.dicom_attributes)
        ds = read_dicom(raw, keywords, _MAX_INFLATION * limits.max_document_bytes)
        metadata = identifiers(ds, limits.dicom_attributes)
        if "PixelData" in ds:
            return open_frames(ds, limits, metadata)
        if "EncapsulatedDocument" in ds:
            document = encapsulated_pdf(ds)
            return self._pdf_opener()(document, limits, format=MIME, metadata=metadata)
        raise NoImageDataError(f"DICOM {_sop_class_name(ds)} has {_no_pixels(ds)}")

    def _pdf_opener(self) -> PdfOpener:
        if self._open_pdf is None:
            from consumers.inputs.pdf import open_pdf  # its renderers start on use

            self._open_pdf = open_pdf
        return self._open_pdf


def open_frames(
    ds: Dataset, limits: ImageLimits, metadata: dict[str, str]
) -> DicomDocument:
    """Pixel data: its format, frame count and sizes checked, no frame decoded."""
    with reading():
        fmt = frame_format(ds)
        sizes = check_page_sizes(
            repeat((fmt.columns, fmt.rows), min(fmt.frames, limits.max_pages + 1)),
            limits,
        )
        decoder = pixel_decoder(ds)
        if decoder.is_native:
            _check_native_length(ds, fmt)
    return DicomDocument(ds, decoder, fmt, sizes, metadata, limits.max_side_px)


def frame_format(ds: Dataset) -> FrameFormat:
    """The Image Pixel module, refused where it makes no sense (before any decoding)."""
    samples = _header_int(ds, "SamplesPerPixel", 1)
    bits_allocated = _header_int(ds, "BitsAllocated")
    bits_stored = _header_int(ds, "BitsStored", bits_allocated)
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if bits_allocated not in _BITS_ALLOCATED:
        raise UnreadableImageError(
            f"DICOM BitsAllocated is {bits_allocated}, not 1, 8, 16 or 32"
        )
    if not 1 <= bits_stored <= bits_allocated:
        raise UnreadableImageError(
            f"DICOM BitsStored is {bits_stored} of {bits_allocated} bits allocated"
        )
    allowed = {1: _GRAY, 3: _COLOR}.get(samples, ())
    if photometric not in allowed:
        raise UnreadableImageError(
            f"DICOM photometric interpretation {photometric[:20]!r} with "
            f"{samples} samples per pixel is not read"
        )
    if samples == 3:
        planar = _header_int(ds, "PlanarConfiguration", 0)
        if planar not in (0, 1):
            raise UnreadableImageError(f"DICOM PlanarConfiguration is {planar}")
        ds.PlanarConfiguration = planar  # some writers leave it out
    frames = _header_int(ds, "NumberOfFrames", 1)
    if frames < 1:
        raise UnreadableImageError(f"DICOM NumberOfFrames is {frames}")
    return FrameFormat(
        rows=_header_int(ds, "Rows"),
        columns=_header_int(ds, "Columns"),
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=_header_int(ds, "PixelRepresentation", 0) == 1,
        photometric=photometric,
        frames=frames,
    )


def pixel_decoder(ds: Dataset) -> Decoder:
    """pydicom's decoder for the transfer syntax, with a plugin installed for it."""
    encapsulated = ds["PixelData"].is_undefined_length
    uid = ds.file_meta.get("TransferSyntaxUID") or _stated_encoding(ds, encapsulated)
    uid = UID(str(uid).strip()[:64])
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            f"DICOM pixel data in transfer syntax {uid} ({uid.name[:80]}): "
            "pydicom has no decoder for it"
        ) from None
    if not decoder.is_available:
        raise UnsupportedTransferSyntaxError(
            f"DICOM pixel data in transfer syntax {uid} ({uid.name[:80]}): no decoder "
            f"plugin for it is installed (one of {', '.join(decoder.missing_dependencies)})"
        )
    if encapsulated != decoder.is_encapsulated:
        raise UnreadableDocumentError(
            f"DICOM pixel data is {'' if encapsulated else 'not '}encapsulated but the "
            f"transfer syntax {uid} says otherwise"
        )
    return decoder


def encapsulated_pdf(ds: Dataset) -> bytes:
    """The PDF an Encapsulated PDF holds, without the pad byte to an even length."""
    mime = str(ds.get("MIMETypeOfEncapsulatedDocument") or "").strip()
    if mime.lower() != "application/pdf":
        raise UnsupportedFormatError(
            f"DICOM encapsulated document is {mime[:64]!r}; only application/pdf is read"
        )
    with reading():
        document = bytes(ds.EncapsulatedDocument or b"")
        declared = ds.get("EncapsulatedDocumentLength")
    if isinstance(declared, int):
        if declared > len(document):
            raise UnreadableDocumentError(
                f"DICOM encapsulated document has {len(document)} bytes; its "
                f"Encapsulated Document Length says {declared}"
            )
        document = document[:declared]
    elif document.endswith(b"\x00"):  # no length stated: drop the pad byte
        document = document[:-1]
    if not document:
        raise NoImageDataError("DICOM encapsulated document is empty")
    return document


def identifiers(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, str]:
    """The allow-listed attributes the object has, as strings (PHI: never logged)."""
    found: dict[str, str] = {}
    for keyword in keywords:
        with contextlib.suppress(*LIBRARY_ERRORS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text = _as_text(ds[keyword].value) if keyword in ds else None
            if text:
                found[keyword] = text
    return found


def stated_dpi(ds: Dataset) -> float | None:
    """The horizontal resolution the object's pixel spacing gives, if any.

    Spacing is (row spacing, column spacing) in mm: adjacent columns are the second
    value apart, so dpi = 25.4 / spacing[1]. The engine decides what range to trust.
    """
    for keyword in _SPACING_KEYWORDS:
        with contextlib.suppress(*LIBRARY_ERRORS):
            value = ds.get(keyword)
            spacing = list(value) if isinstance(value, MultiValue | list) else [value]
            column_mm = float(spacing[1] if len(spacing) > 1 else spacing[0])
            if 0 < column_mm < float("inf"):
                return _MM_PER_INCH / column_mm
    return None


def _as_text(value: object) -> str | None:
    if isinstance(value, bytes | bytearray | Sequence) or value is None:
        return None
    if isinstance(value, MultiValue | list):
        text = "\\".join(str(v).strip() for v in value)
    else:
        text = str(value).strip(" \x00")
    return text if len(text) <= _MAX_IDENTIFIER_CHARS else None


def _header_int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """An Image Pixel number from the header; missing or not a number is unreadable."""
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise UnreadableImageError(f"DICOM image has no {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise UnreadableImageError(f"DICOM {keyword} is not a number") from None


def _pixel_options(fmt: FrameFormat) -> dict[str, Any]:
    """The checked header values, so pydicom decodes what was checked."""
    return {
        "rows": fmt.rows,
        "columns": fmt.columns,
        "samples_per_pixel": fmt.samples,
        "bits_allocated": fmt.bits_allocated,
        "bits_stored": fmt.bits_stored,
        "pixel_representation": int(fmt.signed),
        "number_of_frames": fmt.frames,
    }


def _check_native_length(ds: Dataset, fmt: FrameFormat) -> None:
    """Uncompressed pixel data holds every frame the header states."""
    expected = get_expected_length(ds, "bytes")
    actual = len(ds.PixelData)
    if actual < expected:
        raise UnreadableDocumentError(
            f"DICOM pixel data is truncated: {actual} bytes for {fmt.frames} frame(s) "
            f"of {fmt.columns}x{fmt.rows} that need {expected}"
        )


def _stated_encoding(ds: Dataset, encapsulated: bool) -> UID:
    """The transfer syntax of a file whose meta leaves it out: the encoding pydicom
    found the data set in, when its pixel data is not compressed."""
    if encapsulated:
        raise UnreadableDocumentError(
            "DICOM file states no transfer syntax for its compressed pixel data"
        )
    implicit, little = ds.original_encoding
    if implicit:
        uid = ImplicitVRLittleEndian
    else:
        uid = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta = ds.file_meta if ds.file_meta is not None else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    return uid


def _no_pixels(ds: Dataset) -> str:
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return "float pixel data only (a parametric map, not a picture)"
    return "no pixel data and no encapsulated document"


def _sop_class_name(ds: Dataset) -> str:
    """The SOP class in words (a class of the standard, not an identifier)."""
    meta = ds.file_meta if ds.file_meta is not None else FileMetaDataset()
    stated = ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or ""
    uid = UID(str(stated).strip()[:64])
    return uid.name[:80] if uid.is_valid else "object"


# RuntimeError: "Unable to decode ... by all available plugins"; AttributeError: a
# LUT whose data element is missing.
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    *LIBRARY_ERRORS,
    RuntimeError,
    AttributeError,
)


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """pydicom's and its plugins' errors while decoding a frame, as UNREADABLE_IMAGE."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except PoisonRecordError:
        raise
    except _DECODE_ERRORS as exc:
        raise UnreadableImageError(
            f"DICOM frame cannot be decoded: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
