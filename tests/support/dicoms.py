"""DICOM bytes built in memory with pydicom: Secondary Capture and Encapsulated PDF.

``secondary_capture`` wraps page images the way a scanner or a PACS gateway does:
8-bit gray (MONOCHROME2, or MONOCHROME1 with inverted values that display the same) or
RGB, one frame per page (the multi-frame SC classes for more than one), uncompressed or
JPEG baseline, with the paper's pixel spacing (Nominal Scanned Pixel Spacing) and the
identifiers a PACS files them by. ``encapsulated_pdf`` wraps a PDF. ``with_header`` and
``with_length`` make the hostile variants the tests need.
"""

from __future__ import annotations

import io
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

MM_PER_INCH = 25.4

# Identifiers every built object carries (made up: no real patient).
IDENTIFIERS: Mapping[str, str] = {
    "PatientID": "TEST-0001",
    "AccessionNumber": "ACC-42",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.1.1",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.1.1.1",
    "InstanceNumber": "1",
}


def secondary_capture(
    pages: Sequence[Image.Image],
    *,
    dpi: float | None = 300.0,
    syntax: UID = ExplicitVRLittleEndian,
    monochrome1: bool = False,
    identifiers: Mapping[str, str] = IDENTIFIERS,
    jpeg_quality: int = 90,
) -> bytes:
    """One frame per page (all the same size and mode, L or RGB); ``syntax``
    ``ExplicitVRLittleEndian`` or ``JPEGBaseline8Bit``; ``dpi`` as Nominal Scanned
    Pixel Spacing (None: none stated)."""
    first = pages[0]
    color = first.mode == "RGB"
    if len(pages) == 1:
        sop_class = SecondaryCaptureImageStorage
    elif color:
        sop_class = MultiFrameTrueColorSecondaryCaptureImageStorage
    else:
        sop_class = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ds = _base(sop_class, syntax, identifiers)
    ds.Modality = "OT"
    ds.ConversionType = "DF"  # digitized film: a scanned page
    ds.Rows, ds.Columns = first.height, first.width
    ds.SamplesPerPixel = 3 if color else 1
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if color:
        ds.PlanarConfiguration = 0
    if len(pages) > 1:
        ds.NumberOfFrames = len(pages)
    if dpi is not None:
        ds.NominalScannedPixelSpacing = [round(MM_PER_INCH / dpi, 6)] * 2
    if monochrome1:  # MONOCHROME1: 0 is white, so the stored values are inverted
        pages = [page.point(lambda v: 255 - v) for page in pages]
    if syntax == JPEGBaseline8Bit:
        ds.PhotometricInterpretation = "YBR_FULL_422" if color else "MONOCHROME2"
        if monochrome1:
            ds.PhotometricInterpretation = "MONOCHROME1"
        frames = [_jpeg(page, jpeg_quality) for page in pages]
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PhotometricInterpretation = (
            "RGB" if color else "MONOCHROME1" if monochrome1 else "MONOCHROME2"
        )
        ds.PixelData = b"".join(page.tobytes() for page in pages)
    return _write(ds)


def encapsulated_pdf(
    pdf: bytes,
    *,
    identifiers: Mapping[str, str] = IDENTIFIERS,
    title: str = "Referral letter",
    state_length: bool = True,
) -> bytes:
    """An Encapsulated PDF of ``pdf``, padded to an even length as DICOM writes it;
    ``state_length``: with Encapsulated Document Length (older writers leave it out)."""
    ds = _base(EncapsulatedPDFStorage, ExplicitVRLittleEndian, identifiers)
    ds.Modality = "DOC"
    ds.ConversionType = "SD"  # scanned document
    ds.DocumentTitle = title
    ds.BurnedInAnnotation = "YES"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + b"\x00" * (len(pdf) % 2)
    if state_length:
        ds.EncapsulatedDocumentLength = len(pdf)
    return _write(ds)


def with_header(raw: bytes, **values: object) -> bytes:
    """``raw`` (from this module) with header attributes replaced (None: removed),
    the pixel data left as it was: a header that lies about its pixels."""
    ds = dcmread(io.BytesIO(raw))
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return _write(ds)


def with_length(raw: bytes, tag: int, length: int) -> bytes:
    """``raw`` (explicit VR little endian) with the 32-bit value length of the first
    element ``tag`` of VR OB/OW/UN/UT (a 4-byte length) replaced by ``length``."""
    marker = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    at = raw.index(marker, 132)
    return raw[: at + 8] + struct.pack("<I", length) + raw[at + 12 :]


def with_elements(raw: bytes, elements: bytes) -> bytes:
    """``raw`` (explicit VR little endian) with ``elements`` (encoded, tags between the
    header's and (7FE0,0010)) inserted right before its pixel data."""
    at = raw.index(struct.pack("<HH", 0x7FE0, 0x0010), 132)
    return raw[:at] + elements + raw[at:]


def private_sequence(items: bytes) -> bytes:
    """A private (0011,1001) sequence of undefined length holding ``items``."""
    return (
        struct.pack("<HH", 0x0011, 0x1001)
        + b"SQ\x00\x00"
        + struct.pack("<I", 0xFFFFFFFF)
        + items
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )


def item(content: bytes = b"") -> bytes:
    """A sequence item of undefined length."""
    return (
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + content
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    )


def with_transfer_syntax(raw: bytes, uid: str) -> bytes:
    """``raw`` (from this module) claiming transfer syntax ``uid``, its data set left
    as written: the File Meta element and the meta group length rewritten by hand
    (pydicom writes no syntax it does not know)."""
    at = raw.index(b"\x02\x00\x10\x00UI", 132)
    (old_length,) = struct.unpack_from("<H", raw, at + 6)
    value = uid.encode() + b"\x00" * (len(uid) % 2)
    grown = len(value) - old_length
    (group_length,) = struct.unpack_from("<I", raw, 140)
    head = raw[:140] + struct.pack("<I", group_length + grown) + raw[144:at]
    element = raw[at : at + 6] + struct.pack("<H", len(value)) + value
    return head + element + raw[at + 8 + old_length :]


def gdcm_transcoded(raw: bytes, syntax: str = "JPEGLosslessProcess14_1") -> bytes:
    """``raw`` re-encoded by GDCM in this process (trusted bytes only: GDCM aborts
    the process on some broken input); ``syntax``: a ``gdcm.TransferSyntax`` name."""
    import gdcm  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "in.dcm"), Path(folder, "out.dcm")
        source.write_bytes(raw)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(source))
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(
            gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax))
        )
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(target))
        if not reader.Read():
            raise ValueError("GDCM cannot read the source")
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise ValueError(f"GDCM cannot transcode to {syntax}")
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise ValueError("GDCM cannot write the result")
        return target.read_bytes()


def _base(sop_class: UID, syntax: UID, identifiers: Mapping[str, str]) -> Dataset:
    sop_instance = UID(identifiers.get("SOPInstanceUID") or generate_uid())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST"
    for keyword, value in identifiers.items():
        setattr(ds, keyword, value)
    return ds


def _jpeg(page: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    page.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _write(ds: Dataset) -> bytes:
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
