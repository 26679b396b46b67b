"""The PDF decoder: render sizes and resolutions, text layers, every bad PDF of the issue,
and a renderer pool that outlives crashing, hanging and abandoned renders."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw

from consumers.errors import (
    DecodeTimeoutError,
    EmptyDocumentError,
    EncryptedDocumentError,
    FatalError,
    PixelLimitError,
    PoisonRecordError,
    TooManyPagesError,
    UnreadableDocumentError,
)
from consumers.inputs import ImageLimits, open_document
from consumers.inputs.pdf import PdfDecoder, open_pdf, usable_text
from consumers.inputs.pdf_renderer import LockedRenderer, ProcessRenderer
from consumers.threads import run_abandonable
from tests.support.pdfs import (
    CRASH_MARK,
    HANG_MARK,
    BrokenWorkbench,
    PdfPage,
    TrapWorkbench,
    build_pdf,
    encrypted_pdf,
    image_pdf,
    many_pages_pdf,
    text_pdf,
    trapped_pdf,
    zero_page_pdf,
)

LIMITS = ImageLimits()
KOREAN = [
    "진료비 계산서·영수증",
    "환자 성명: 홍길동 (남, 42세)",
    "검사 결과지 Hemoglobin 13.5 g/dL",
]


@pytest.fixture(scope="module")
def renderer() -> Iterator[ProcessRenderer]:
    pool = ProcessRenderer(2)
    yield pool
    pool.close()


@pytest.fixture
def trap_renderer() -> Iterator[ProcessRenderer]:
    pool = ProcessRenderer(1, timeout_s=1.0, workbench=TrapWorkbench)
    yield pool
    pool.close()


def marked_scan(width: int, height: int) -> Image.Image:
    """White, with a black square in the top left corner: shows which way is up."""
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).rectangle((0, 0, width // 8, height // 8), fill=0)
    return image


def dark_corner(image: Image.Image) -> str:
    """Which corner of ``image`` is black."""
    width, height = image.width - 1, image.height - 1
    corners = {
        "top left": (2, 2),
        "top right": (width - 2, 2),
        "bottom left": (2, height - 2),
        "bottom right": (width - 2, height - 2),
    }
    gray = image.convert("L")
    return next(name for name, xy in corners.items() if gray.getpixel(xy) == 0)


# --- rendering: sizes known before, resolutions chosen for the engine ---------------


def test_image_pages_render_at_the_sizes_announced(renderer: ProcessRenderer) -> None:
    raw = image_pdf([marked_scan(1240, 1754), marked_scan(800, 600)], dpi=150)
    document = open_pdf(raw, LIMITS, renderer=renderer)
    # 1240 px at 150 dpi is 595.2 pt; at 300 dpi, 2480 px
    assert document.sizes == [(2480, 3508), (1600, 1200)]
    assert document.format == "application/pdf"
    for index, size in enumerate(document.sizes):
        page = document.page(index)
        assert (page.number, page.image.size, page.dpi) == (index + 1, size, 300.0)
        assert page.image.mode == "RGB"
        assert dark_corner(page.image) == "top left"
        assert document.text_layer(index) is None
    document.close()


def test_grayscale_pages_are_8_bit_gray(renderer: ProcessRenderer) -> None:
    raw = image_pdf([marked_scan(400, 300)], dpi=100)
    document = PdfDecoder(renderer, grayscale=True).open(raw, LIMITS)
    page = document.page(0)
    assert (page.image.mode, page.image.size) == ("L", (1200, 900))
    assert dark_corner(page.image) == "top left"


@pytest.mark.parametrize(
    ("limits", "size", "dpi"),
    [
        # the vLLM pixel bound: an A4 page at about 102 dpi
        (ImageLimits(render_max_pixels=1_003_520), (842, 1191), 101.90),
        # the long side fits OCR_MAX_SIDE_PX
        (ImageLimits(max_side_px=1000), (706, 1000), 85.51),
        # a lower render_dpi is used as is
        (ImageLimits(render_dpi=200), (1652, 2338), 200.0),
    ],
)
def test_dpi_is_lowered_to_the_engines_bounds(
    renderer: ProcessRenderer, limits: ImageLimits, size: tuple[int, int], dpi: float
) -> None:
    document = open_pdf(text_pdf(["A4"]), limits, renderer=renderer)
    assert document.sizes == [size]
    width, height = size
    assert width * height <= (limits.render_max_pixels or width * height)
    assert max(size) <= limits.max_side_px
    page = document.page(0)
    assert page.image.size == size
    assert page.dpi == pytest.approx(dpi, abs=0.01)


def test_rotate_and_crop_box_are_drawn_as_pdfium_shows_them(
    renderer: ProcessRenderer,
) -> None:
    scan = marked_scan(600, 800)
    raw = build_pdf(
        [
            PdfPage(size=(600, 800), image=scan, rotate=90),
            PdfPage(size=(600, 800), image=scan, crop_box=(0, 400, 300, 800)),
        ]
    )
    document = open_pdf(raw, ImageLimits(render_dpi=72), renderer=renderer)
    assert document.sizes == [(800, 600), (300, 400)]
    rotated, cropped = document.page(0), document.page(1)
    assert rotated.image.size == (800, 600)
    assert dark_corner(rotated.image) == "top right"  # turned clockwise
    assert cropped.image.size == (300, 400)  # the top left quarter: the mark is there
    assert cropped.image.convert("L").getpixel((10, 10)) == 0


# --- text layers ------------------------------------------------------------------


def test_korean_text_layer_reads_in_order_without_rendering(
    renderer: ProcessRenderer,
) -> None:
    document = open_pdf(text_pdf(KOREAN), LIMITS, renderer=renderer)
    assert document.text_layer(0) == "\n".join(KOREAN)


def test_an_ocr_layer_over_a_scan_is_a_text_layer(renderer: ProcessRenderer) -> None:
    words = ["Discharge summary of the patient, page one of two"] * 3
    raw = build_pdf(
        [
            PdfPage(
                image=marked_scan(300, 400), lines=tuple(words), invisible_text=True
            ),
            PdfPage(image=marked_scan(300, 400), lines=("Received 2024-05-02 p.1",)),
        ]
    )
    document = open_pdf(raw, LIMITS, renderer=renderer)
    assert document.text_layer(0) == "\n".join(words)
    assert document.text_layer(1) is None  # a stamp over an unread scan


def test_text_layers_can_be_left_unread(renderer: ProcessRenderer) -> None:
    document = PdfDecoder(renderer, text_layers=False).open(text_pdf(KOREAN), LIMITS)
    assert document.text_layer(0) is None


@pytest.mark.parametrize(
    ("text", "usable"),
    [
        (
            "진료비 계산서·영수증\r\n환자 성명: 홍길동  ",
            "진료비 계산서·영수증\n환자 성명: 홍길동",
        ),
        ("Page 3 of 12", None),  # too little to trust over OCR
        ("\ue001\ue002\ue003\ue004" * 8, None),  # private-use glyphs: no Unicode map
        ("Hemoglobin \ufffd\ufffd\ufffd\ufffd 13.5 g/dL and more", None),
        ("!#$%&'()*+,-./:;<=>?@[]^_`{|}~!#$%&'()*", None),  # symbol soup
        (
            "Hemoglobin 13.5 g/dL \ufffd, within the reference range",
            "Hemoglobin 13.5 g/dL \ufffd, within the reference range",
        ),
    ],
)
def test_usable_text(text: str, usable: str | None) -> None:
    assert usable_text(text) == usable


def test_over_a_scan_a_text_layer_needs_a_page_of_text() -> None:
    stamp = "Received by fax 2024-05-02 14:03, page 1"
    assert usable_text(stamp, image_share=0.0) == stamp
    assert usable_text(stamp, image_share=0.9) is None
    assert usable_text(stamp * 4, image_share=0.9) == stamp * 4


def test_unmapped_glyphs_are_no_text_layer(renderer: ProcessRenderer) -> None:
    document = open_pdf(
        text_pdf(["\ue010\ue011\ue012" * 10]), LIMITS, renderer=renderer
    )
    assert document.text_layer(0) is None


# --- bad PDFs: each a poison error with its own code, before any render -------------


def test_a_password_protected_pdf_is_pdf_encrypted(renderer: ProcessRenderer) -> None:
    with pytest.raises(EncryptedDocumentError) as caught:
        open_pdf(encrypted_pdf("secret"), LIMITS, renderer=renderer)
    assert caught.value.error_code == "PDF_ENCRYPTED"


def test_an_empty_user_password_opens(renderer: ProcessRenderer) -> None:
    document = open_pdf(encrypted_pdf(""), LIMITS, renderer=renderer)
    assert (
        document.text_layer(0) == "Encrypted patient record\nSecond line of text here"
    )
    assert document.page(0).image.size == (2479, 3508)


def test_encrypted_after_a_broken_one_is_still_encrypted(
    renderer: ProcessRenderer,
) -> None:
    """PDFium's last error is process-wide; a stale one must not name the next file."""
    for raw, error in [
        (encrypted_pdf(), EncryptedDocumentError),
        (b"%PDF-1.7\n" + bytes(range(256)) * 4, UnreadableDocumentError),
        (zero_page_pdf(), EmptyDocumentError),
        (encrypted_pdf(), EncryptedDocumentError),
    ]:
        with pytest.raises(error):
            open_pdf(raw, LIMITS, renderer=renderer)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"%PDF-1.7\n" + bytes(range(256)) * 40, id="garbage after %PDF-"),
        pytest.param(image_pdf([marked_scan(300, 400)])[:2000], id="truncated"),
        pytest.param(text_pdf(KOREAN).split(b"xref")[0], id="no xref, no trailer"),
        pytest.param(b"%PDF-", id="header only"),
    ],
)
def test_unparsable_pdfs_are_unreadable(renderer: ProcessRenderer, raw: bytes) -> None:
    with pytest.raises(UnreadableDocumentError) as caught:
        open_pdf(raw, LIMITS, renderer=renderer)
    assert caught.value.error_code == "UNREADABLE_DOCUMENT"


def test_a_broken_xref_table_pdfium_repairs_is_fine(renderer: ProcessRenderer) -> None:
    raw = text_pdf(KOREAN)
    broken = re.sub(
        rb"\d{10} 00000 n", b"0000000001 00000 n", raw
    )  # every offset wrong
    assert broken != raw
    document = open_pdf(broken, LIMITS, renderer=renderer)
    assert document.text_layer(0) == "\n".join(KOREAN)
    assert document.page(0).image.size == (2479, 3508)


def test_a_pdf_without_pages_is_an_empty_document(renderer: ProcessRenderer) -> None:
    with pytest.raises(EmptyDocumentError) as caught:
        open_pdf(zero_page_pdf(), LIMITS, renderer=renderer)
    assert caught.value.error_code == "EMPTY_DOCUMENT"


def test_ten_thousand_pages_are_refused_from_the_count(
    renderer: ProcessRenderer,
) -> None:
    raw = many_pages_pdf(10_000)
    assert len(raw) < 2_000_000
    started = time.monotonic()
    with pytest.raises(TooManyPagesError) as caught:
        open_pdf(raw, LIMITS, renderer=renderer)
    assert time.monotonic() - started < 2.0
    assert "10000 pages" in str(caught.value)
    document = open_pdf(many_pages_pdf(50), LIMITS, renderer=renderer)
    assert document.page_count == 50


@pytest.mark.parametrize(
    ("size", "error", "words"),
    [
        # 200 x 200 in: PDF allows it, but 4096 px would make it 20 dpi
        ((14_400.0, 14_400.0), PixelLimitError, "only at 20 dpi"),
        ((4_500.0, 3_000.0), PixelLimitError, "only at 66 dpi"),
        ((20_000.0, 842.0), UnreadableDocumentError, "PDF allows"),
        ((1.0, 1.0), UnreadableDocumentError, "PDF allows"),
    ],
)
def test_absurd_page_boxes(
    renderer: ProcessRenderer,
    size: tuple[float, float],
    error: type[PoisonRecordError],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        open_pdf(text_pdf(["x"], size=size), LIMITS, renderer=renderer)


def test_a_large_but_legible_page_is_drawn_at_a_lower_dpi(
    renderer: ProcessRenderer,
) -> None:
    document = open_pdf(
        text_pdf(["x"], size=(2_448.0, 1_584.0)), LIMITS, renderer=renderer
    )
    assert document.sizes == [(4096, 2650)]  # 34 x 22 in at 120 dpi


def test_the_page_and_document_pixel_limits_apply(renderer: ProcessRenderer) -> None:
    with pytest.raises(PixelLimitError, match="OCR_MAX_DOCUMENT_PIXELS"):
        open_pdf(
            many_pages_pdf(3),
            ImageLimits(max_document_pixels=200_000),
            renderer=renderer,
        )


# --- the registry, and PDFs inside other formats --------------------------------------


def test_the_registry_opens_pdf_bytes() -> None:
    document = open_document(text_pdf(KOREAN), LIMITS)
    try:
        assert document.format == "application/pdf"
        assert document.text_layer(0) == "\n".join(KOREAN)
    finally:
        document.close()


def test_another_decoder_can_open_pdf_bytes_as_its_own_format(
    renderer: ProcessRenderer,
) -> None:
    document = open_pdf(
        text_pdf(KOREAN),
        LIMITS,
        format="application/dicom",
        metadata={"SOPInstanceUID": "1.2.3"},
        renderer=renderer,
    )
    assert document.format == "application/dicom"
    assert document.metadata == {"SOPInstanceUID": "1.2.3"}


def test_the_decoders_concurrency_is_its_pool_size(renderer: ProcessRenderer) -> None:
    assert PdfDecoder(renderer).concurrency == 2
    assert PdfDecoder(LockedRenderer()).concurrency == 1


def test_in_process_and_child_renders_are_the_same_pixels(
    renderer: ProcessRenderer,
) -> None:
    raw = build_pdf([PdfPage(lines=tuple(KOREAN), image=marked_scan(200, 300))])
    locked = LockedRenderer()
    try:
        here = open_pdf(raw, LIMITS, renderer=locked).page(0).image
        there = open_pdf(raw, LIMITS, renderer=renderer).page(0).image
    finally:
        locked.close()
    assert here.tobytes() == there.tobytes()


def test_documents_reopen_where_a_child_lost_them() -> None:
    pool = ProcessRenderer(1)  # one child, several documents in turn
    try:
        documents = [
            open_pdf(image_pdf([marked_scan(100, 100 + n)]), LIMITS, renderer=pool)
            for n in range(12)  # more than a child keeps open
        ]
        for document in documents:
            assert dark_corner(document.page(0).image) == "top left"
            document.close()
    finally:
        pool.close()


# --- hostile PDFs cost a child, never the worker ---------------------------------------


def test_a_renderer_crash_fails_the_document_and_the_next_one_works(
    trap_renderer: ProcessRenderer,
) -> None:
    document = open_pdf(trapped_pdf(CRASH_MARK), LIMITS, renderer=trap_renderer)
    with pytest.raises(UnreadableDocumentError, match=r"crashed \(SIGABRT\)"):
        document.page(0)
    assert trap_renderer.replaced == 1
    good = open_pdf(text_pdf(KOREAN), LIMITS, renderer=trap_renderer)
    assert good.page(0).image.size == (2479, 3508)


def test_a_hanging_render_is_killed_and_the_next_one_works(
    trap_renderer: ProcessRenderer,
) -> None:
    document = open_pdf(trapped_pdf(HANG_MARK), LIMITS, renderer=trap_renderer)
    started = time.monotonic()
    with pytest.raises(DecodeTimeoutError, match="longer than 1 s rendering page 1"):
        document.page(0)
    assert time.monotonic() - started < 5.0
    good = open_pdf(text_pdf(KOREAN), LIMITS, renderer=trap_renderer)
    assert good.page(0).image.size == (2479, 3508)


async def test_closing_an_abandoned_document_stops_its_render() -> None:
    """The worker's decode timeout abandons the thread; close() frees the child."""
    pool = ProcessRenderer(1, timeout_s=60.0, workbench=TrapWorkbench)
    try:
        document = open_pdf(trapped_pdf(HANG_MARK), LIMITS, renderer=pool)
        outcome: list[BaseException] = []
        ended = threading.Event()

        def render() -> None:
            try:
                document.page(0)
            except PoisonRecordError as exc:
                outcome.append(exc)
            finally:
                ended.set()

        with pytest.raises(TimeoutError):
            await run_abandonable(render, timeout_s=0.5)
        started = time.monotonic()
        document.close()
        assert await asyncio.to_thread(ended.wait, 10.0)
        assert time.monotonic() - started < 5.0
        assert "the document was closed" in str(outcome[0])
        good = await asyncio.to_thread(
            open_pdf, text_pdf(KOREAN), LIMITS, renderer=pool
        )
        assert good.page(0).image.size == (2479, 3508)
    finally:
        pool.close()


def test_a_renderer_that_cannot_start_is_a_broken_host_not_a_bad_pdf() -> None:
    pool = ProcessRenderer(1, workbench=BrokenWorkbench)
    try:
        with pytest.raises(
            FatalError, match=r"could not start: it crashed \(exit code 1\)"
        ):
            open_pdf(text_pdf(KOREAN), LIMITS, renderer=pool)
    finally:
        pool.close()


def test_concurrent_documents_share_the_pool(renderer: ProcessRenderer) -> None:
    raws = [image_pdf([marked_scan(200, 200 + n)] * 2) for n in range(4)]
    failures: list[BaseException] = []

    def decode(raw: bytes) -> None:
        try:
            document = open_pdf(raw, LIMITS, renderer=renderer)
            for index in range(document.page_count):
                assert dark_corner(document.page(index).image) == "top left"
            document.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=decode, args=(raw,)) for raw in raws]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
