"""The DICOM decoder: real files written by other software, the Secondary Capture and
Encapsulated PDF objects a scanner or PACS sends, and hostile headers.

Real files: the DICOM files shipped inside the pydicom wheel (``pydicom/data/test_files``,
read by path, never through ``get_testdata_file``, which may download the larger ones).
They were written by DCMTK, GDCM and scanners and cover every transfer syntax the issue
lists (implicit/explicit little endian, big endian, deflate, RLE, JPEG baseline,
extended 12-bit and lossless, JPEG-LS, JPEG 2000), the photometric interpretations
(MONOCHROME2, RGB, YBR_FULL(_422), YBR_RCT, PALETTE COLOR; MONOCHROME1 in the CR files
of ``dicomdirtests``), 1- to 32-bit samples and multi-frame objects, plus non-image
objects (SR, RT plan, ECG, DICOMDIR), files without File Meta Information and truncated
ones. ``chrJapMulti.dcm`` is a character-set sample without pixels and is not shipped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

from consumers.errors import (
    DocumentTooLargeError,
    NoImageDataError,
    PixelLimitError,
    PoisonRecordError,
    TooManyPagesError,
    UnreadableDocumentError,
    UnreadableImageError,
    UnsupportedFormatError,
    UnsupportedTransferSyntaxError,
)
from consumers.inputs import DecodedDocument, ImageLimits, open_document
from consumers.inputs.dicom import DicomDecoder
from consumers.inputs.dicom_frames import FrameFormat, frame_image
from consumers.inputs.pdf import open_pdf
from consumers.inputs.pdf_renderer import LockedRenderer
from tests.support.dicoms import (
    IDENTIFIERS,
    encapsulated_pdf,
    gdcm_transcoded,
    item,
    private_sequence,
    secondary_capture,
    with_elements,
    with_header,
    with_length,
    with_transfer_syntax,
)
from tests.support.pdfs import image_pdf

LIMITS = ImageLimits()
DECODER = DicomDecoder()
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
SECRET = "SECRET-PATIENT-7"  # noqa: S105 - a PatientID no message or log may hold


@dataclass(frozen=True)
class Opens:
    pages: int
    mode: str
    size: tuple[int, int]


# Every file of the wheel's test_files (README and JSON included: they must be refused
# cleanly too), grouped by what it is: the pages it opens as, or its error code.
PYDICOM_FILES_BY_OUTCOME: dict[Opens | str, tuple[str, ...]] = {
    Opens(1, "L", (512, 512)): (
        "693_J2KI.dcm",  # JPEG 2000, 14-bit CT, windowed
        "J2K_pixelrep_mismatch.dcm",
        "image_dfl.dcm",  # deflated
        "liver_1frame.dcm",  # 1-bit
        "liver_expb_1frame.dcm",
    ),
    Opens(1, "L", (128, 128)): ("CT_small.dcm",),
    Opens(1, "L", (256, 1024)): (
        "JPEG-lossy.dcm",  # 12-bit JPEG Extended: GDCM child
        "JPEG2000.dcm",
        "JPGExtended.dcm",  # 12-bit JPEG Extended
    ),
    Opens(1, "L", (10, 45)): ("JPEGLSNearLossless_08.dcm",),
    Opens(1, "L", (10, 50)): ("JPEGLSNearLossless_16.dcm",),
    Opens(1, "L", (64, 64)): (
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
    ),
    Opens(1, "L", (484, 300)): ("examples_overlay.dcm",),
    Opens(1, "L", (10, 10)): (
        "rtdose_1frame.dcm",
        "rtdose_expb_1frame.dcm",
        "rtdose_rle_1frame.dcm",
    ),
    Opens(15, "L", (10, 10)): (
        "rtdose.dcm",  # 32-bit, 15 frames
        "rtdose_expb.dcm",
        "rtdose_rle.dcm",
    ),
    Opens(1, "L", (16, 16)): ("dicomdirtests/77654033/CR1/6154",),  # MONOCHROME1
    Opens(1, "RGB", (80, 60)): ("ExplVR_BigEnd.dcm",),  # big endian RGB
    Opens(1, "RGB", (400, 400)): ("GDCMJ2K_TextGBR.dcm",),  # J2K YBR_RCT, JP2 header
    Opens(1, "RGB", (256, 256)): (
        "SC_jpeg_no_color_transform.dcm",
        "SC_jpeg_no_color_transform_2.dcm",
        "SC_rgb_jpeg.dcm",
        "SC_rgb_jpeg_app14_dcmd.dcm",
        "SC_rgb_jpeg_dcmd.dcm",
    ),
    Opens(1, "RGB", (100, 100)): (
        "SC_rgb_dcmtk_+eb+cr.dcm",
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",  # JPEG YBR_FULL
        "SC_rgb_dcmtk_+eb+cy+n2.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG YBR_FULL_422
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",
        "SC_rgb_dcmtk_+eb+cy+s4.dcm",
        "SC_rgb_gdcm_KY.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless: GDCM child
        "SC_rgb_jpeg_lossy_gdcm.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_rle_32bit.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
    ),
    Opens(2, "RGB", (100, 100)): (
        "SC_rgb_rle_16bit_2frame.dcm",
        "SC_rgb_rle_2frame.dcm",  # multi-frame SC
        "SC_rgb_rle_32bit_2frame.dcm",
    ),
    Opens(1, "RGB", (3, 3)): (
        "SC_rgb_small_odd.dcm",
        "SC_rgb_small_odd_big_endian.dcm",
        "SC_rgb_small_odd_jpeg.dcm",
    ),
    Opens(1, "RGB", (640, 480)): ("examples_jpeg2k.dcm",),
    Opens(1, "RGB", (800, 350)): ("examples_palette.dcm",),  # PALETTE COLOR
    Opens(1, "RGB", (320, 240)): ("examples_rgb_color.dcm",),
    Opens(30, "RGB", (320, 240)): ("examples_ybr_color.dcm",),  # 30-frame JPEG
    "UNSUPPORTED_FORMAT": (
        "ExplVR_BigEndNoMeta.dcm",  # no File Meta Information
        "ExplVR_LitEndNoMeta.dcm",
        "README.txt",
        "crayons.icc",
        "no_meta.dcm",
        "rtplan.dump",
        "rtstruct.dcm",  # no File Meta Information
        "rtstruct.dump",
        "test1.json",
        "test_PN.json",
        "zipMR.gz",
    ),
    "UNREADABLE_IMAGE": (
        "JPEG2000-embedded-sequence-delimiter.dcm",  # broken codestream
        "badVR.dcm",  # NumberOfFrames "1A"
        "meta_missing_tsyntax.dcm",  # a 2-byte stub: no Image Pixel
        "nested_priv_SQ.dcm",
    ),
    "UNREADABLE_DOCUMENT": (
        "MR_truncated.dcm",  # pixel data cut short
        "rtplan_truncated.dcm",
    ),
    "NO_IMAGE_DATA": (
        "UN_sequence.dcm",  # a fragment: a CT without pixels
        "empty_charset_LEI.dcm",
        "no_meta_group_length.dcm",
        "priv_SQ.dcm",
        "reportsi.dcm",  # Basic Text SR
        "reportsi_with_empty_number_tags.dcm",
        "rtplan.dcm",  # RT Plan
        "test-SR.dcm",  # Comprehensive SR
        "waveform_ecg.dcm",
        "dicomdirtests/DICOMDIR",  # a media directory
        "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000",
    ),
}


def by_file(groups: dict[Opens | str, tuple[str, ...]]) -> dict[str, Opens | str]:
    """Each file's own expectation; a file listed under two outcomes is a mistake."""
    cases: dict[str, Opens | str] = {}
    for expected, names in groups.items():
        for name in names:
            assert name not in cases, f"{name} is listed under two outcomes"
            cases[name] = expected
    return cases


PYDICOM_CASES = by_file(PYDICOM_FILES_BY_OUTCOME)


def text_page(
    text: str = "Referral 2024-05-02", size: tuple[int, int] = (240, 80)
) -> Image.Image:
    page = Image.new("L", size, 255)
    ImageDraw.Draw(page).text((8, size[1] // 2 - 6), text, fill=0)
    return page


def decode(
    raw: bytes, limits: ImageLimits = LIMITS
) -> tuple[DecodedDocument, list[Image.Image]]:
    document = DECODER.open(raw, limits)
    return document, [document.page(i).image for i in range(document.page_count)]


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


# --- real files written by others --------------------------------------------------


@pytest.mark.parametrize("name", sorted(PYDICOM_CASES))
def test_pydicom_files_decode_or_fail_with_their_code(name: str) -> None:
    expected = PYDICOM_CASES[name]
    raw = (PYDICOM_FILES / name).read_bytes()
    if isinstance(expected, str):
        with pytest.raises(PoisonRecordError) as caught:
            decode(raw)
        assert caught.value.error_code == expected
        return
    document, images = decode(raw)
    assert document.format == "application/dicom"
    assert document.sizes == [expected.size] * expected.pages
    assert [(i.mode, i.size) for i in images] == [(expected.mode, expected.size)] * len(
        images
    )
    assert [document.page(i).source_index for i in range(len(images))] == list(
        range(1, expected.pages + 1)
    )


def test_every_file_in_the_wheel_decodes_or_fails_as_a_poison_record() -> None:
    """Nothing pydicom ships crashes the worker: a page, or a record's own error."""
    files = [path for path in PYDICOM_FILES.rglob("*") if path.is_file()]
    assert len(files) > 150
    for path in files:
        with contextlib.suppress(PoisonRecordError):
            decode(path.read_bytes())


def test_a_part_10_file_without_its_preamble_is_read() -> None:
    raw = (PYDICOM_FILES / "MR_small.dcm").read_bytes()
    _, [with_preamble] = decode(raw)
    _, [without] = decode(raw[128:])
    assert without.tobytes() == with_preamble.tobytes()


# --- what a scanner or PACS sends ---------------------------------------------------


@pytest.mark.parametrize("monochrome1", [False, True])
@pytest.mark.parametrize(
    "syntax",
    [pydicom.uid.ExplicitVRLittleEndian, JPEGBaseline8Bit],
    ids=["raw", "jpeg"],
)
def test_a_gray_secondary_capture_reads_as_the_page(
    syntax: pydicom.uid.UID, monochrome1: bool
) -> None:
    page = text_page()
    raw = secondary_capture([page], syntax=syntax, monochrome1=monochrome1)
    document, [image] = decode(raw)
    assert image.mode == "L" and image.size == page.size
    assert mean_difference(image, page) < 2  # MONOCHROME1 inverted back; JPEG's loss
    assert document.page(0).dpi == pytest.approx(300, rel=1e-3)


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.ExplicitVRLittleEndian,
        JPEGBaseline8Bit,
        DeflatedExplicitVRLittleEndian,
    ],
    ids=["raw", "jpeg", "deflate"],
)
def test_a_multi_frame_capture_is_one_page_per_frame(syntax: pydicom.uid.UID) -> None:
    pages = [text_page(f"Page {n}").convert("RGB") for n in (1, 2, 3)]
    document, images = decode(secondary_capture(pages, syntax=syntax))
    assert [i.mode for i in images] == ["RGB"] * 3
    assert all(mean_difference(i, p) < 3 for i, p in zip(images, pages, strict=True))
    assert [document.page(i).source_index for i in range(3)] == [1, 2, 3]


def test_jpeg_lossless_is_decoded_exactly_by_the_gdcm_child() -> None:
    page = text_page()
    _, [image] = decode(gdcm_transcoded(secondary_capture([page])))
    assert image.tobytes() == page.tobytes()


def test_a_frame_that_aborts_gdcm_takes_down_only_its_child() -> None:
    """GDCM throws an uncaught C++ exception on this broken JPEG (SIGABRT: found by
    fuzzing; in the worker's own process it would end the worker)."""
    raw = bytearray(
        with_transfer_syntax(
            (PYDICOM_FILES / "SC_rgb_small_odd_jpeg.dcm").read_bytes(),
            pydicom.uid.JPEGLosslessSV1,  # GDCM's JPEG codec reads any JPEG
        )
    )
    for from_end, value in ((293, 0x2F), (190, 0xF2), (149, 0xFE), (32, 0xE9)):
        raw[len(raw) - from_end] = value
    document = DECODER.open(bytes(raw), LIMITS)
    with pytest.raises(UnreadableImageError, match=r"exit -6"):
        document.page(0)


def test_the_identifiers_are_the_allow_listed_ones() -> None:
    document, _ = decode(secondary_capture([text_page()]))
    assert document.metadata == {
        **IDENTIFIERS,
        "SOPClassUID": pydicom.uid.SecondaryCaptureImageStorage,
        "Modality": "OT",
    }
    limits = ImageLimits(dicom_attributes=("PatientID", "PatientName", "NotAKeyword"))
    document, _ = decode(secondary_capture([text_page()]), limits)
    assert document.metadata == {
        "PatientID": "TEST-0001",
        "PatientName": "Test^Patient",
    }


# --- resolution ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spacing", "dpi"),
    [
        ({"NominalScannedPixelSpacing": [0.2, 0.1], "PixelSpacing": [1, 1]}, 254.0),
        ({"PixelSpacing": [0.5, 0.254], "ImagerPixelSpacing": [1, 1]}, 100.0),
        ({"ImagerPixelSpacing": [0.127, 0.127]}, 200.0),
        ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.254, 0.254]}, 100.0),
        ({}, None),
    ],
)
def test_dpi_is_the_column_spacing_first_found(
    spacing: dict[str, list[float]], dpi: float | None
) -> None:
    raw = secondary_capture([text_page()], dpi=None)
    document, _ = decode(with_header(raw, **spacing) if spacing else raw)
    assert document.page(0).dpi == (pytest.approx(dpi) if dpi else None)


def test_a_shrunk_page_keeps_its_paper_size() -> None:
    raw = secondary_capture([text_page(size=(800, 200))], dpi=400)
    page = DECODER.open(raw, ImageLimits(max_side_px=400)).page(0)
    assert page.image.size == (400, 100)
    assert page.dpi == pytest.approx(200)


# --- pixel values ----------------------------------------------------------------------


def gray_format(bits: int = 16, signed: bool = False) -> FrameFormat:
    return FrameFormat(2, 3, 1, 16, bits, signed, "MONOCHROME2", 1)


def test_a_window_maps_to_0_255_and_monochrome1_inverts() -> None:
    frame = np.array([[0, 1000, 1050], [1100, 1200, 4095]], dtype=np.uint16)
    ds = Dataset()
    ds.WindowCenter, ds.WindowWidth = 1100, 201  # LINEAR: 999.5..1199.5 spans 0..255
    image = frame_image(frame, "MONOCHROME2", ds, gray_format(12))
    assert np.asarray(image).tolist() == [[0, 1, 64], [128, 255, 255]]
    inverted = frame_image(frame, "MONOCHROME1", ds, gray_format(12))
    assert np.asarray(inverted).tolist() == [[255, 254, 191], [127, 0, 0]]


def test_rescale_applies_before_the_window() -> None:
    frame = np.array([[0, 100], [200, 300]], dtype=np.int16)
    ds = Dataset()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -200  # -200, 0, 200, 400
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 0, 400, "LINEAR_EXACT"
    image = frame_image(frame, "MONOCHROME2", ds, gray_format(signed=True))
    assert np.asarray(image).tolist() == [[0, 128], [255, 255]]


def test_without_a_window_the_frame_range_is_stretched() -> None:
    frame = np.array([[100, 200], [300, 300]], dtype=np.uint16)
    image = frame_image(frame, "MONOCHROME2", Dataset(), gray_format(12))
    assert np.asarray(image).tolist() == [[0, 128], [255, 255]]
    flat = frame_image(
        np.zeros((2, 2), np.uint16), "MONOCHROME1", Dataset(), gray_format(12)
    )
    assert np.asarray(flat).tolist() == [
        [255, 255],
        [255, 255],
    ]  # MONOCHROME1 zero: white


# --- Encapsulated PDF ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pdf_decoder() -> DicomDecoder:
    return DicomDecoder(functools.partial(open_pdf, renderer=LockedRenderer()))


@pytest.mark.parametrize("state_length", [True, False])
def test_an_encapsulated_pdf_goes_through_the_pdf_path(
    pdf_decoder: DicomDecoder, state_length: bool
) -> None:
    pdf = image_pdf([text_page(), text_page("second")], dpi=100)
    document = pdf_decoder.open(
        encapsulated_pdf(pdf, state_length=state_length), LIMITS
    )
    assert document.page_count == 2
    assert document.format == "application/dicom"
    assert document.metadata["DocumentTitle"] == "Referral letter"
    assert document.metadata["PatientID"] == "TEST-0001"
    assert document.page(1).image.size[0] > 0


def test_the_pdf_handed_over_is_exactly_the_document() -> None:
    """Encapsulated Document Length counts the PDF, not the pad byte to an even length."""
    handed: list[bytes] = []

    def opener(raw: bytes, limits: ImageLimits, **_: object) -> DecodedDocument:
        handed.append(raw)
        raise UnreadableDocumentError("stop here")

    odd = b"%PDF-1.4 odd %%EOF\n"  # 19 bytes: written with a pad byte
    ends_in_nul = b"%PDF-1.4 %%EOF\n\x00"  # even: no pad, its own last byte kept
    for pdf, state_length in ((odd, True), (odd, False), (ends_in_nul, True)):
        with pytest.raises(UnreadableDocumentError):
            DicomDecoder(opener).open(
                encapsulated_pdf(pdf, state_length=state_length), LIMITS
            )
    assert handed == [odd, odd, ends_in_nul]


def test_an_encapsulated_cda_is_not_read() -> None:
    raw = with_header(
        encapsulated_pdf(b"<x/>"), MIMETypeOfEncapsulatedDocument="text/xml"
    )
    with pytest.raises(UnsupportedFormatError, match="text/xml"):
        DECODER.open(raw, LIMITS)


# --- bad inputs: clean errors, before any decoding where the header says enough ------


def test_no_pixel_data_is_no_image_data() -> None:
    raw = with_header(secondary_capture([text_page()]), PixelData=None)
    with pytest.raises(NoImageDataError, match="Secondary Capture"):
        DECODER.open(raw, LIMITS)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"Rows": 60_000, "Columns": 60_000}, PixelLimitError),
        ({"NumberOfFrames": 10**9}, TooManyPagesError),
        ({"NumberOfFrames": 100}, TooManyPagesError),  # OCR_MAX_PAGES=50
        ({"Rows": 0}, UnreadableImageError),
        ({"BitsAllocated": 3}, UnreadableImageError),
        ({"BitsStored": 12}, UnreadableImageError),  # more than the 8 allocated
        ({"SamplesPerPixel": 2}, UnreadableImageError),
        ({"PhotometricInterpretation": "HSV"}, UnreadableImageError),
        ({"NumberOfFrames": 0}, UnreadableImageError),
    ],
    ids=str,
)
def test_hostile_headers_are_refused_before_allocation(
    header: dict[str, object], error: type[PoisonRecordError]
) -> None:
    raw = with_header(secondary_capture([text_page()]), **header)
    tracemalloc.start()
    try:
        with pytest.raises(error):
            DECODER.open(raw, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000


@pytest.mark.parametrize(
    "raw",
    [
        secondary_capture([text_page()])[:-100],  # native pixel data cut short
        secondary_capture([text_page()], syntax=JPEGBaseline8Bit)[
            :-100
        ],  # inside a fragment
        with_length(
            secondary_capture([text_page()]), 0x7FE00010, 0xFFFFFFF0
        ),  # huge VR length
        with_length(encapsulated_pdf(b"%PDF-1.4 %%EOF"), 0x00420011, 0xFFFFFFF0),
    ],
    ids=["native", "jpeg", "pixel-length", "document-length"],
)
def test_a_file_that_ends_early_is_an_unreadable_document(raw: bytes) -> None:
    """Truncated pixel data is UNREADABLE_DOCUMENT: the file's structure ends early,
    found at open; a complete file whose frame will not decode is UNREADABLE_IMAGE."""
    with pytest.raises(UnreadableDocumentError, match="truncated"):
        DECODER.open(raw, LIMITS)


def test_header_frames_the_pixel_data_cannot_fill_are_refused_at_open() -> None:
    raw = with_header(secondary_capture([text_page()]), NumberOfFrames=3)
    with pytest.raises(UnreadableDocumentError, match="3 frame"):
        DECODER.open(raw, LIMITS)


def test_a_corrupt_frame_is_an_unreadable_image() -> None:
    raw = secondary_capture([text_page()], syntax=JPEGBaseline8Bit)
    at = raw.index(b"\xff\xda")  # JPEG start of scan: garble the entropy-coded data
    broken = raw[:at] + b"\xff\xd9" * 50 + raw[at + 100 :]
    document = DECODER.open(broken, LIMITS)
    with pytest.raises(UnreadableImageError):
        document.page(0)


@pytest.mark.parametrize(
    "uid", ["1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.100", "1.2.3.4.5"]
)
def test_an_unsupported_transfer_syntax_is_named(uid: str) -> None:
    raw = with_transfer_syntax(
        secondary_capture([text_page()], syntax=JPEGBaseline8Bit), uid
    )
    with pytest.raises(UnsupportedTransferSyntaxError, match=uid.replace(".", r"\.")):
        DECODER.open(raw, LIMITS)


def test_a_deflate_bomb_is_refused_before_inflating() -> None:
    raw = secondary_capture(
        [Image.new("L", (1000, 1000), 255)], syntax=DeflatedExplicitVRLittleEndian
    )
    assert len(raw) < 10_000  # a megabyte of white deflates to a few kilobytes
    with pytest.raises(DocumentTooLargeError):
        DECODER.open(raw, ImageLimits(max_document_bytes=20_000))


def test_a_flood_of_sequence_items_is_refused_before_parsing() -> None:
    """A million empty items would be a million pydicom datasets (~28 s, 400 MB)."""
    raw = with_elements(
        secondary_capture([text_page()]), private_sequence(item() * 100_001)
    )
    with pytest.raises(DocumentTooLargeError, match="sequence items"):
        DECODER.open(raw, LIMITS)


def test_sequences_nested_thousands_deep_are_unreadable() -> None:
    nested = b""
    for _ in range(5000):
        nested = private_sequence(item(nested))
    raw = with_elements(secondary_capture([text_page()]), nested)
    with pytest.raises(UnreadableDocumentError, match="RecursionError"):
        DECODER.open(raw, LIMITS)


def test_a_100_frame_object_decodes_frame_by_frame_in_bounded_memory() -> None:
    page = Image.effect_noise((300, 300), 64).convert("L")
    raw = secondary_capture([page] * 100)
    document = DECODER.open(raw, ImageLimits(max_pages=100))
    assert document.page_count == 100
    tracemalloc.start()
    try:
        last = document.page(99)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last.source_index == 100 and last.image.tobytes() == page.tobytes()
    assert peak < 10 * 300 * 300  # a few frames' worth, not 100


def test_the_registry_routes_dicom_here() -> None:
    document = open_document(secondary_capture([text_page()]), LIMITS)
    assert document.format == "application/dicom" and document.page_count == 1


# --- PHI stays on the result ---------------------------------------------------------


def test_identifiers_appear_in_no_error_and_no_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    who = {**IDENTIFIERS, "PatientID": SECRET, "AccessionNumber": SECRET}
    good = secondary_capture([text_page()], identifiers=who)
    bad = [
        with_header(good, PixelData=None),
        with_header(good, BitsAllocated=3),
        with_header(good, NumberOfFrames=10**9),
        good[:-100],
        with_transfer_syntax(good, "1.2.3.4"),
    ]
    caplog.set_level(logging.DEBUG)
    messages = []
    for raw in bad:
        try:
            decode(raw)
        except PoisonRecordError as exc:
            messages.append(str(exc))
    assert len(messages) == len(bad)
    assert not [
        m for m in messages + [r.getMessage() for r in caplog.records] if SECRET in m
    ]
