"""Every kind of bad scan from the issue, and odd-but-valid ones, through load_pages
(the registry's checks, then the raster decoder)."""

from __future__ import annotations

import io
import random
from typing import cast

import pytest
from PIL import Image

from consumers.errors import (
    DocumentTooLargeError,
    EmptyDocumentError,
    PixelLimitError,
    PoisonRecordError,
    TooManyPagesError,
    UnreadableImageError,
    UnsupportedFormatError,
)
from consumers.inputs import ImageLimits, load_pages, open_document
from tests.support.scans import encode, multipage_tiff, png_claiming, tiny_ifd_tiff

LIMITS = ImageLimits()


def noise(width: int = 120, height: int = 90, seed: int = 0) -> Image.Image:
    """Incompressible content, so a cut really lands inside the pixel data."""
    rng = random.Random(seed)
    pixels = bytes(rng.randrange(256) for _ in range(width * height))
    return Image.frombytes("L", (width, height), pixels)


def good_png() -> bytes:
    return encode(noise(), "PNG")


# --- bad inputs: each is a poison error with its own code ------------------------


def test_zero_bytes_is_an_empty_document() -> None:
    with pytest.raises(EmptyDocumentError) as caught:
        load_pages(b"", LIMITS)
    assert caught.value.error_code == "EMPTY_DOCUMENT"


def test_oversized_document_is_refused_before_decoding() -> None:
    raw = good_png()
    with pytest.raises(DocumentTooLargeError):
        load_pages(raw, ImageLimits(max_document_bytes=len(raw) - 1))
    assert len(load_pages(raw, ImageLimits(max_document_bytes=len(raw)))) == 1


def test_the_default_size_limit_is_the_seeds_20_mb() -> None:
    assert LIMITS.max_document_bytes == 20 * 1024 * 1024
    too_big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (20 * 1024 * 1024)
    with pytest.raises(DocumentTooLargeError) as caught:
        load_pages(too_big, LIMITS)
    assert caught.value.error_code == "DOCUMENT_TOO_LARGE"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"%!PS-Adobe-3.0\n" + b"x" * 100, id="postscript"),
        pytest.param(b"hello, this is text", id="text"),
        pytest.param(b"\x00", id="one_byte"),
        pytest.param(encode(Image.new("L", (5, 5)), "GIF"), id="gif"),
        pytest.param(encode(Image.new("L", (5, 5)), "BMP"), id="bmp"),
        pytest.param(encode(Image.new("RGB", (5, 5)), "WEBP"), id="webp"),
        pytest.param(b"\x89PN", id="cut_png_magic"),
    ],
)
def test_non_image_bytes_are_an_unsupported_format(raw: bytes) -> None:
    with pytest.raises(UnsupportedFormatError) as caught:
        load_pages(raw, LIMITS)
    assert caught.value.error_code == "UNSUPPORTED_FORMAT"


def _cuts(raw: bytes) -> list[bytes]:
    return [raw[: int(len(raw) * frac)] for frac in (0.9, 0.5, 0.1)]


_JPEG = encode(noise(), "JPEG", quality=90)
TRUNCATED = [
    pytest.param(cut, id=f"{name}-{i}")
    for name, raw in [
        ("png", encode(noise(), "PNG")),
        ("jpeg", _JPEG),
        ("jpeg_without_eoi", _JPEG[:-2]),
        ("tiff_raw", encode(noise(), "TIFF")),
    ]
    for i, cut in enumerate(_cuts(raw) if name != "jpeg_without_eoi" else [raw])
]


def test_png_missing_only_its_iend_crc_still_decodes() -> None:
    """All pixel data is there; Pillow does not check the final chunk's CRC."""
    raw = encode(noise(), "PNG")
    (page,) = load_pages(raw[:-2], LIMITS)
    assert page.tobytes() == noise().tobytes()


@pytest.mark.parametrize("raw", TRUNCATED)
def test_truncated_images_are_unreadable(raw: bytes) -> None:
    """Pillow refuses truncated data while ImageFile.LOAD_TRUNCATED_IMAGES is False.

    That holds for JPEG too, even with only the final EOI marker missing: Pillow does
    not hand back a partly grey page.
    """
    with pytest.raises(UnreadableImageError) as caught:
        load_pages(raw, LIMITS)
    assert caught.value.error_code == "UNREADABLE_IMAGE"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            encode(noise(), "TIFF", compression="tiff_lzw")[:2000], id="lzw_tiff"
        ),
        pytest.param(
            encode(noise().convert("1"), "TIFF", compression="group4")[:500],
            id="group4_tiff",
        ),
        pytest.param(b"II*\x00" + b"x" * 100, id="tiff_magic_then_garbage"),
    ],
)
def test_truncated_tiff_with_its_directory_cut_off_is_unreadable(raw: bytes) -> None:
    """Pillow warns "Corrupt EXIF data" (a UserWarning) before it gives up on these.

    The outcome must not depend on the process's warning filters: with warnings as
    errors (pytest here, ``python -W error`` in production) the warning must still end
    as UNREADABLE_IMAGE, never as an unknown exception that crashes the worker.
    """
    with pytest.raises(UnreadableImageError):
        load_pages(raw, LIMITS)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"x" * 100, id="png_magic_then_garbage"),
        pytest.param(b"\xff\xd8\xff" + b"x" * 100, id="jpeg_magic_then_garbage"),
        pytest.param(png_claiming(0, 10), id="png_zero_width"),
    ],
)
def test_magic_bytes_with_garbage_behind_them_are_unreadable(raw: bytes) -> None:
    with pytest.raises(UnreadableImageError):
        load_pages(raw, LIMITS)


@pytest.mark.parametrize(
    ("width", "height"),
    [(100_000, 100_000), (65_535, 65_535), (10_001, 10_000)],
)
def test_decompression_bomb_is_refused_from_the_header(width: int, height: int) -> None:
    raw = png_claiming(width, height)
    assert len(raw) < 200
    with pytest.raises(PixelLimitError) as caught:
        load_pages(raw, LIMITS)
    assert caught.value.error_code == "PIXEL_LIMIT"


def test_pixel_limit_is_configurable() -> None:
    raw = encode(Image.new("L", (100, 100), 255), "PNG")
    with pytest.raises(PixelLimitError):
        load_pages(raw, ImageLimits(max_pixels=9_999))
    assert len(load_pages(raw, ImageLimits(max_pixels=10_000))) == 1


def test_a_bomb_on_a_later_tiff_page_is_refused() -> None:
    raw = multipage_tiff([(10, 10), (300, 200)])
    with pytest.raises(PixelLimitError, match="page 2"):
        load_pages(raw, ImageLimits(max_pixels=50_000))


def test_too_many_pages() -> None:
    raw = multipage_tiff([(10, 10)] * 4)
    with pytest.raises(TooManyPagesError) as caught:
        load_pages(raw, ImageLimits(max_pages=3))
    assert caught.value.error_code == "TOO_MANY_PAGES"
    assert len(load_pages(raw, ImageLimits(max_pages=4))) == 4


def test_every_bad_input_is_a_poison_record() -> None:
    cases = [b"", b"text", b"\x89PNG\r\n\x1a\nxx", png_claiming(100_000, 100_000)]
    for raw in cases:
        with pytest.raises(PoisonRecordError):
            load_pages(raw, LIMITS)


# --- odd but valid inputs: decoded into 8-bit L or RGB ---------------------------


def test_cmyk_jpeg_becomes_rgb() -> None:
    raw = encode(Image.new("CMYK", (10, 10), (0, 255, 0, 0)), "JPEG")
    assert Image.open(io.BytesIO(raw)).mode == "CMYK"
    (page,) = load_pages(raw, LIMITS)
    assert page.mode == "RGB"
    red, green, blue = page.getpixel((5, 5))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue > 200  # magenta stays magenta


def test_16_bit_png_is_scaled_to_8_bit() -> None:
    wide = Image.new("I;16", (10, 10))
    wide.putdata([1000 + 20 * i for i in range(100)])  # 1000..2980: all above 255
    raw = encode(wide, "PNG")
    assert Image.open(io.BytesIO(raw)).mode == "I;16"
    (page,) = load_pages(raw, LIMITS)
    assert page.mode == "L"
    low, high = cast(tuple[int, int], page.getextrema())
    assert low == 0
    assert high >= 250  # the real range is stretched, not clipped to white


def test_palette_png_with_transparency_is_flattened_on_white() -> None:
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    for x in range(5):
        for y in range(10):
            palette.putpixel((x, y), 1)
    raw = encode(palette, "PNG", transparency=0)  # index 0 (black) is transparent
    (page,) = load_pages(raw, LIMITS)
    assert page.mode == "RGB"
    assert page.getpixel((1, 1)) == (255, 0, 0)
    assert page.getpixel((8, 8)) == (255, 255, 255)  # not black text on black


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I", "F", "YCbCr", "P"])
def test_other_modes_end_as_8_bit(mode: str) -> None:
    image = Image.new(mode, (6, 4))
    fmt = "TIFF" if mode in ("I", "F", "YCbCr") else "PNG"
    (page,) = load_pages(encode(image, fmt), LIMITS)
    assert page.mode in ("L", "RGB")
    assert page.size == (6, 4)


def test_bilevel_tiff_becomes_gray() -> None:
    raw = encode(noise().convert("1"), "TIFF", compression="group4")
    assert Image.open(io.BytesIO(raw)).mode == "1"
    (page,) = load_pages(raw, LIMITS)
    assert page.mode == "L"
    assert page.getextrema() == (0, 255)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_exif_orientation_6_is_rotated_upright(fmt: str) -> None:
    image = Image.new("L", (40, 20), 255)
    image.paste(0, (0, 0, 10, 20))  # a dark band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    (page,) = load_pages(encode(image, fmt, exif=exif.tobytes()), LIMITS)
    assert page.size == (20, 40)
    # After a clockwise turn, the stored left edge is the displayed top edge.
    assert page.getpixel((10, 2)) < 64  # type: ignore[operator]
    assert page.getpixel((10, 37)) > 192  # type: ignore[operator]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((5000, 100), (4096, 82)),
        ((100, 8192), (50, 4096)),
        ((4096, 4096), (4096, 4096)),
        ((4097, 10), (4096, 10)),
    ],
)
def test_long_side_is_downscaled_to_4096(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    (page,) = load_pages(encode(Image.new("L", size, 255), "PNG"), LIMITS)
    assert page.size == expected


def test_small_pages_are_not_upscaled() -> None:
    (page,) = load_pages(encode(Image.new("L", (30, 20), 255), "PNG"), LIMITS)
    assert page.size == (30, 20)


def test_multipage_tiff_keeps_every_page_in_order() -> None:
    sizes = [(10, 10), (11, 10), (12, 10), (13, 10), (14, 10)]
    pages = load_pages(multipage_tiff(sizes, compression="tiff_lzw"), LIMITS)
    assert [p.size for p in pages] == sizes
    assert all(p.mode == "L" for p in pages)


def test_multipage_tiff_pages_of_one_size_keep_their_own_pixels() -> None:
    frames = [Image.new("L", (12, 10), shade) for shade in (10, 20, 30)]
    raw = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    pages = load_pages(raw, LIMITS)
    assert [p.getpixel((5, 5)) for p in pages] == [10, 20, 30]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])  # TIFF: dpi as IFDRational
def test_a_shrunk_page_reports_its_resolution_shrunk_too(fmt: str) -> None:
    """Tesseract reads the page's dpi: after the 4096 px cap it is the new one."""
    options = {"compression": "tiff_lzw"} if fmt == "TIFF" else {}  # under 20 MB
    raw = encode(Image.new("L", (5000, 7000), 255), fmt, dpi=(600, 600), **options)
    page = open_document(raw, LIMITS).page(0)
    assert page.image.size == (2926, 4096)
    assert page.dpi == pytest.approx(600 * 2926 / 5000, rel=1e-3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_a_page_carries_the_resolution_its_file_states(fmt: str) -> None:
    raw = encode(Image.new("L", (50, 40), 255), fmt, dpi=(300, 300))
    page = open_document(raw, LIMITS).page(0)
    assert (page.number, page.image.size) == (1, (50, 40))
    assert page.dpi == pytest.approx(300, rel=1e-3)  # PNG: pixels per metre
    unstated = encode(Image.new("L", (5, 4)), "PNG")
    assert open_document(unstated, LIMITS).page(0).dpi is None


# --- hostile TIFF structure: bounded before any pixel is decoded -----------------


def test_the_tiny_ifd_builder_makes_tiffs_pillow_reads() -> None:
    pages = load_pages(tiny_ifd_tiff(3), LIMITS)
    assert [page.size for page in pages] == [(1, 1)] * 3


def test_page_counting_stops_after_the_page_limit() -> None:
    """Walking every IFD would reach the broken 60th link; the count stops at 51."""
    raw = tiny_ifd_tiff(100, next_past_end=60)
    with pytest.raises(TooManyPagesError, match="more than 50 pages"):
        open_document(raw, LIMITS)
    with pytest.raises(UnreadableImageError):  # a limit above 60 does walk that far
        load_pages(raw, ImageLimits(max_pages=80))


def test_a_tiff_page_without_width_is_unreadable_not_a_crash() -> None:
    raw = tiny_ifd_tiff(2, without_width=frozenset({2}))
    with pytest.raises(UnreadableImageError):
        load_pages(raw, LIMITS)


def test_the_document_pixel_limit_counts_every_page() -> None:
    raw = multipage_tiff([(100, 100)] * 3)
    with pytest.raises(PixelLimitError, match="OCR_MAX_DOCUMENT_PIXELS"):
        open_document(raw, ImageLimits(max_document_pixels=29_999))
    assert open_document(raw, ImageLimits(max_document_pixels=30_000)).page_count == 3


def test_a_gray_palette_becomes_gray_and_a_colour_one_rgb() -> None:
    gray = Image.new("P", (10, 10), 1)
    gray.putpalette([v for level in range(256) for v in (level, level, level)])
    (page,) = load_pages(encode(gray, "TIFF"), LIMITS)
    assert (page.mode, page.getpixel((0, 0))) == ("L", 1)
    colour = Image.new("P", (10, 10), 1)
    colour.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    (page,) = load_pages(encode(colour, "PNG"), LIMITS)
    assert (page.mode, page.getpixel((0, 0))) == ("RGB", (200, 10, 10))
