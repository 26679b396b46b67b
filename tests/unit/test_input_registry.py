"""The one table of formats (schemas.content_types) and the decoders behind it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from PIL import Image

from consumers.errors import InvalidRequestError, UnsupportedFormatError
from consumers.inputs import (
    INPUTS,
    DecodedDocument,
    ImageLimits,
    InputRegistry,
    Page,
    check_page_sizes,
)
from consumers.inputs.raster import RasterDecoder
from consumers.intake import RequestLimits, check_request
from producers.publisher import RequestOptions, build_request, find_scans
from schemas.content_types import (
    FORMAT_NAMES,
    FORMATS,
    HEAD_BYTES,
    SUFFIX_TYPES,
    SUPPORTED_TYPES,
    ContentType,
    magic,
    sniff_content_type,
)
from tests.support.records import scan_request
from tests.support.scans import encode

# A format whose marker sits at offset 128, as DICOM's "DICM" does after its preamble.
OFFSET_FORMAT = ContentType(
    "application/x-offset-test", "OFFSET", (".oft",), magic(b"MARK", offset=128)
)


def offset_file(marker_at: int = 128) -> bytes:
    return b"\x00" * marker_at + b"MARK" + b"rest of the file"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"II*\x00....", "image/tiff"),
        (b"MM\x00*....", "image/tiff"),
        (b"%PDF-1.7\n....", "application/pdf"),
        (b"\r\n" * 100 + b"%PDF-1.4", "application/pdf"),  # junk before the header
        (b"\x00" * 128 + b"DICM\x02\x00", "application/dicom"),
        (b"DICM\x02\x00\x00\x00UL", "application/dicom"),  # no preamble
        (b"\x00" * 127 + b"DICM", None),  # not at 128
        # an Encapsulated PDF: its document starts within the first kilobyte
        (b"\x00" * 128 + b"DICM" + b"\x00" * 300 + b"%PDF-1.4", "application/dicom"),
        (b"GIF89a", None),
        (b"", None),
    ],
)
def test_sniff_content_type(raw: bytes, expected: str | None) -> None:
    assert sniff_content_type(raw) == expected


def test_the_table_is_the_one_list_of_formats() -> None:
    assert {
        "image/png",
        "image/jpeg",
        "image/tiff",
        "application/pdf",
        "application/dicom",
    } == SUPPORTED_TYPES
    assert FORMAT_NAMES == "PNG, JPEG, TIFF, PDF or DICOM"
    assert SUFFIX_TYPES == {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".tif": "image/tiff",
        ".tiff": "image/tiff",
        ".pdf": "application/pdf",
        ".dcm": "application/dicom",
        ".dicom": "application/dicom",
    }


def test_the_request_schema_names_every_format() -> None:
    schema = json.loads(
        resources.files("schemas").joinpath("medocr.OcrRequest.avsc").read_text()
    )
    (field,) = (f for f in schema["fields"] if f["name"] == "content_type")
    assert all(mime in field["doc"] for mime in SUPPORTED_TYPES)


def test_a_probe_finds_a_marker_at_an_offset_within_the_head() -> None:
    formats = (*FORMATS, OFFSET_FORMAT)
    assert HEAD_BYTES >= 1024
    assert sniff_content_type(offset_file(), formats) == OFFSET_FORMAT.mime
    assert sniff_content_type(offset_file(marker_at=127), formats) is None
    assert sniff_content_type(offset_file(), FORMATS) is None  # not in the real table


def test_a_probe_sees_only_the_head() -> None:
    """The producer sniffs a file's head, the worker its whole bytes: both agree."""
    late = ContentType("application/x-late", "LATE", (), lambda head: b"LATE" in head)
    raw = b"\x00" * HEAD_BYTES + b"LATE"
    assert sniff_content_type(raw, (late,)) is None
    assert sniff_content_type(raw[4:], (late,)) == "application/x-late"


def test_the_producer_takes_suffixes_and_types_from_the_table(tmp_path: Path) -> None:
    """By reference the producer sniffs the file's head (HEAD_BYTES of it)."""
    scan = tmp_path / "a.png"
    scan.write_bytes(encode(Image.new("L", (4, 4)), "PNG"))
    assert find_scans([tmp_path]) == [scan]
    request = build_request(scan, RequestOptions(by_reference=True))
    assert request.content_type == "image/png"
    (tmp_path / "b.dat").write_bytes(b"not a scan")
    assert find_scans([tmp_path]) == [scan]  # suffixes come from the table


def test_every_format_has_a_decoder() -> None:
    assert INPUTS.content_types == SUPPORTED_TYPES


def test_an_unknown_declared_type_is_an_invalid_request() -> None:
    request = scan_request("doc-1", b"GIF89a", content_type="image/gif")
    with pytest.raises(InvalidRequestError) as caught:
        check_request(request, RequestLimits())
    assert caught.value.error_code == "INVALID_REQUEST"


def test_bytes_of_no_known_format_are_unsupported() -> None:
    with pytest.raises(
        UnsupportedFormatError, match="not a PNG, JPEG, TIFF, PDF or DICOM file"
    ):
        INPUTS.open(b"GIF89a" + b"\x00" * 20, ImageLimits())
    with pytest.raises(UnsupportedFormatError, match="no decoder"):
        INPUTS.decoder_for("image/gif")


class OffsetDocument:
    """A document of one 3x2 page, whatever the bytes say."""

    def __init__(self) -> None:
        self.sizes = [(3, 2)]
        self.page_count = 1
        self.closed = False
        self.format = OFFSET_FORMAT.mime
        self.metadata: dict[str, str] = {}

    def text_layer(self, index: int) -> str | None:
        return None

    def page(self, index: int) -> Page:
        return Page(index + 1, Image.new("L", self.sizes[index]), 96.0)

    def close(self) -> None:
        self.closed = True


class OffsetDecoder:
    content_types = (OFFSET_FORMAT.mime,)
    concurrency = 1

    def open(self, raw: bytes, limits: ImageLimits) -> DecodedDocument:
        document = OffsetDocument()
        check_page_sizes(document.sizes, limits)
        return document


def test_a_format_is_one_table_entry_and_one_decoder() -> None:
    registry = InputRegistry(
        [RasterDecoder(), OffsetDecoder()], formats=(*FORMATS, OFFSET_FORMAT)
    )
    document = registry.open(offset_file(), ImageLimits())
    assert (document.page_count, document.sizes) == (1, [(3, 2)])
    page = document.page(0)
    assert (page.number, page.image.size, page.dpi) == (1, (3, 2), 96.0)
    png = encode(Image.new("L", (4, 4)), "PNG")
    assert registry.open(png, ImageLimits()).page(0).image.size == (4, 4)


def test_a_format_in_the_table_without_its_decoder_is_unsupported() -> None:
    """An optional decoder whose library is missing: its type is refused, not a crash."""
    registry = InputRegistry([RasterDecoder()], formats=(*FORMATS, OFFSET_FORMAT))
    with pytest.raises(UnsupportedFormatError) as caught:
        registry.open(offset_file(), ImageLimits())
    assert caught.value.error_code == "UNSUPPORTED_FORMAT"
    assert "no decoder for 'application/x-offset-test'" in str(caught.value)


def test_the_raster_decoder_states_the_workers_decode_concurrency() -> None:
    assert RasterDecoder.concurrency == 4
