"""DICOM and PDF through the whole pipeline (real worker, broker and Tesseract).

The issue's acceptance tests: the same Korean pages sent as PNG (with their dpi) and
wrapped in every DICOM and PDF form the tests build read no worse than the PNG plus
0.02 CER; a born-digital PDF's text layer is taken as is (CER <= 0.01) unless
OCR_PDF_TEXT_LAYER=never; every bad DICOM or PDF of the issue is a FAILED result and
a dead letter while the documents around it succeed and the worker stays healthy.

Pages: ``chosen_pages()`` takes them from ``data_set()`` (MEDOCR_DATA, else
``../shared/data/docs-public``, else the bundled samples) and the tests print which.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from PIL import Image, ImageSequence
from pydicom.uid import JPEGBaseline8Bit

from consumers.settings import Settings
from schemas import OcrRequest, OcrResult
from schemas.records import TextSource
from tests.support.cer import (
    DataSet,
    DocumentCase,
    PageScore,
    data_set,
    load_manifest,
    micro_cer,
    score_page,
)
from tests.support.dicoms import (
    encapsulated_pdf,
    secondary_capture,
    with_header,
    with_transfer_syntax,
)
from tests.support.kafka import publish_requests, read_outputs
from tests.support.pdfs import (
    PdfPage,
    build_pdf,
    encrypted_pdf,
    image_pdf,
    many_pages_pdf,
    text_pdf,
    zero_page_pdf,
)
from tests.support.records import encode_record, scan_request
from tests.support.scans import encode
from tests.support.workers import WorkerProcess, run_burst

pytestmark = [pytest.mark.integration, pytest.mark.tesseract]

# A wrapper may cost this much CER over the same page sent as a PNG (the bound).
CER_MARGIN = 0.02
# A born-digital page taken from its text layer.
TEXT_LAYER_CER = 0.01
PNG, PDF, DICOM = "image/png", "application/pdf", "application/dicom"
SCAN_FORMATS = ("png", "jpeg", "tiff")  # the data set's scans (not its PDF or DICOM)


# --- the pages: a few Korean pages of the data set, as gray images with their dpi ----


@dataclass(frozen=True)
class SourcePage:
    doc_id: str
    number: int  # 1-based, in its document
    image: Image.Image  # 8-bit gray, as the file holds it
    dpi: float  # as the file states it
    truth: str

    @property
    def name(self) -> str:
        return f"{self.doc_id}.p{self.number}"


@dataclass(frozen=True)
class ChosenPages:
    data: DataSet
    singles: tuple[SourcePage, ...]  # each page of a one-page document
    document: tuple[SourcePage, ...]  # the pages of one multi-page document

    @property
    def pages(self) -> tuple[SourcePage, ...]:
        return (*self.document, *self.singles)

    def describe(self) -> str:
        names = ", ".join(page.name for page in self.pages)
        return f"data set: {self.data.name} ({self.data.folder}); pages: {names}"


@functools.cache
def chosen_pages() -> ChosenPages:
    """Two documents of the gray scans with a stated dpi: the first two pages of the
    first multi-page one, and the first mild one-page one (else the first clean one).
    ``hard`` pages (100 dpi, noisy) read at CER ~0.8 whatever wraps them, so they
    would measure noise, not the wrappers."""
    chosen = data_set()
    multi: tuple[SourcePage, ...] = ()
    single: dict[str, SourcePage] = {}  # degradation -> the first one-page document
    for case in load_manifest(chosen.folder):
        wanted = not multi if case.pages > 1 else case.degradation not in single
        if case.format not in SCAN_FORMATS or case.degradation == "hard" or not wanted:
            continue
        pages = _gray_pages(case)
        if len(pages) > 1:
            multi = pages[:2]
        elif pages:
            single[case.degradation] = pages[0]
        if multi and "mild" in single:
            break
    one = single.get("mild") or single.get("clean")
    if not multi or one is None:
        raise AssertionError(f"{chosen.name}: too few gray pages with a stated dpi")
    return ChosenPages(chosen, (one,), multi)


def _gray_pages(case: DocumentCase) -> tuple[SourcePage, ...]:
    """The document's pages when all are gray or bilevel, one size, with a dpi."""
    with Image.open(case.path) as scan:
        dpi = scan.info.get("dpi")
        if scan.mode not in ("1", "L") or not dpi or not float(dpi[0]) > 0:
            return ()
        frames = [frame.convert("L") for frame in ImageSequence.Iterator(scan)]
    if len({frame.size for frame in frames}) != 1:
        return ()
    return tuple(
        SourcePage(case.doc_id, number, frame, float(dpi[0]), truth)
        for number, (frame, truth) in enumerate(
            zip(frames, case.ground_truth, strict=True), 1
        )
    )


# --- the wrappers: each builds one document of pages of one size and dpi --------------


@dataclass(frozen=True)
class Wrapper:
    content_type: str
    build: Callable[[Sequence[Image.Image], float], bytes]


WRAPPERS: dict[str, Wrapper] = {
    "png": Wrapper(PNG, lambda pages, dpi: encode(pages[0], "PNG", dpi=(dpi, dpi))),
    "dicom-sc": Wrapper(DICOM, lambda pages, dpi: secondary_capture(pages, dpi=dpi)),
    "dicom-sc-jpeg": Wrapper(
        DICOM,
        lambda pages, dpi: secondary_capture(pages, dpi=dpi, syntax=JPEGBaseline8Bit),
    ),
    "dicom-sc-monochrome1": Wrapper(
        DICOM, lambda pages, dpi: secondary_capture(pages, dpi=dpi, monochrome1=True)
    ),
    # Pillow's PDF writer: a JPEG per page, the page ``size / dpi`` inches
    "pdf-image": Wrapper(PDF, lambda pages, dpi: image_pdf(pages, dpi)),
    "dicom-encapsulated-pdf": Wrapper(
        DICOM, lambda pages, dpi: encapsulated_pdf(image_pdf(pages, dpi))
    ),
}
BASELINE = "png"
MULTI_FRAME = "dicom-sc-multiframe"  # the multi-page document as one object


def quality_requests(chosen: ChosenPages) -> dict[str, list[OcrRequest]]:
    """Per variant, its documents: each page alone, and the multi-frame document."""
    requests: dict[str, list[OcrRequest]] = {
        name: [
            scan_request(
                f"{name}--{page.name}",
                wrapper.build([page.image], page.dpi),
                wrapper.content_type,
            )
            for page in chosen.pages
        ]
        for name, wrapper in WRAPPERS.items()
    }
    document = chosen.document
    requests[MULTI_FRAME] = [
        scan_request(
            f"{MULTI_FRAME}--{document[0].doc_id}",
            secondary_capture([page.image for page in document], dpi=document[0].dpi),
            DICOM,
        )
    ]
    return requests


def page_texts(result: OcrResult) -> list[str]:
    assert result.status.value == "OK", (result.document_id, result.error_message)
    return [page.text for page in result.pages]


async def test_wrapped_pages_read_as_well_as_the_png(settings: Settings) -> None:
    """Each variant's CER over the chosen pages is at most the PNG's plus 0.02."""
    chosen = chosen_pages()
    print(chosen.describe())
    requests = quality_requests(chosen)
    everything = [r for batch in requests.values() for r in batch]
    started = time.monotonic()
    await publish_requests(settings, everything)
    await run_burst(settings, timeout_s=600)
    outputs = await read_outputs(settings, results=len(everything))
    print(f"{len(everything)} documents read in {time.monotonic() - started:.0f} s")
    results = outputs.by_id()
    assert not outputs.dead_letters

    scores: dict[str, dict[str, PageScore]] = {}  # variant -> page name -> score
    for name, batch in requests.items():
        pages = chosen.document if name == MULTI_FRAME else chosen.pages
        texts = [t for r in batch for t in page_texts(results[r.document_id])]
        scores[name] = {
            page.name: score_page(text, page.truth)
            for page, text in zip(pages, texts, strict=True)
        }
        for request in batch:
            result = results[request.document_id]
            expected = WRAPPERS[name].content_type if name in WRAPPERS else DICOM
            assert result.source_format == expected, request.document_id
            assert {p.text_source for p in result.pages} == {TextSource.OCR}
            assert [p.source_page for p in result.pages] == list(
                range(1, result.page_count + 1)
            )

    baseline = scores[BASELINE]
    print(f"{'variant':<24} {'pages':>5} {'CER':>6} {'PNG':>6}  per page")
    failures = []
    for name, by_page in scores.items():
        cer = micro_cer(list(by_page.values()))
        reference = micro_cer([baseline[page] for page in by_page])
        per_page = " ".join(f"{page}={s.cer:.3f}" for page, s in by_page.items())
        print(f"{name:<24} {len(by_page):>5} {cer:>6.3f} {reference:>6.3f}  {per_page}")
        if cer > reference + CER_MARGIN:
            failures.append((name, round(cer, 3), round(reference, 3)))
    assert not failures, f"worse than the PNG + {CER_MARGIN}: {failures}"


# --- born-digital: the text layer, or OCR when told never to take it -----------------


def born_digital(pages: Sequence[SourcePage]) -> bytes:
    """One born-digital page per source page whose text is its ground truth, each
    page as large as its lines need (10 pt, CJK glyphs 1 em wide)."""
    font = 10.0
    built = []
    for page in pages:
        lines = tuple(page.truth.splitlines())
        width = 144 + font * max(len(line) for line in lines)
        height = 144 + font * (1.4 * len(lines) + 1)
        built.append(PdfPage(lines=lines, size=(width, height), font_size=font))
    return build_pdf(built)


@pytest.mark.parametrize("mode", ["auto", "never"])
async def test_a_born_digital_pdf_is_read_from_its_text_layer(
    settings: Settings, mode: str
) -> None:
    chosen = chosen_pages()
    print(chosen.describe())
    limits = settings.limits.model_copy(update={"pdf_text_layer": mode})
    settings = settings.model_copy(update={"limits": limits})
    raw = born_digital(chosen.pages)
    await publish_requests(settings, [scan_request("born-digital", raw, PDF)])
    await run_burst(settings, timeout_s=300)
    result = (await read_outputs(settings, results=1)).by_id()["born-digital"]

    texts = page_texts(result)
    scores = [
        score_page(text, page.truth)
        for text, page in zip(texts, chosen.pages, strict=True)
    ]
    print(
        f"OCR_PDF_TEXT_LAYER={mode}: CER {micro_cer(scores):.3f}; per page "
        + " ".join(
            f"{p.name}={s.cer:.3f}" for p, s in zip(chosen.pages, scores, strict=True)
        )
    )
    assert result.source_format == PDF
    assert [p.source_page for p in result.pages] == list(
        range(1, len(chosen.pages) + 1)
    )
    expected = TextSource.TEXT_LAYER if mode == "auto" else TextSource.OCR
    assert {p.text_source for p in result.pages} == {expected}
    if mode == "auto":
        assert max(s.cer for s in scores) <= TEXT_LAYER_CER
    # never: no CER bound. The Korean font is not embedded (tests.support.pdfs), so
    # PDFium draws the Korean glyphs only where the host has a Korean font; CI has none.


# --- bad DICOMs and PDFs among good documents -----------------------------------------


def bad_inputs(page: SourcePage) -> dict[str, tuple[bytes, str, str]]:
    """Each bad document of the issue (and a few more): its bytes, type and code."""
    image = page.image.crop((0, 0, page.image.width, page.image.height // 4))
    sc = secondary_capture([image], dpi=page.dpi)
    scan_pdf = image_pdf([image], page.dpi)
    return {
        "pdf-truncated": (scan_pdf[: len(scan_pdf) // 2], PDF, "UNREADABLE_DOCUMENT"),
        "pdf-encrypted": (encrypted_pdf(), PDF, "PDF_ENCRYPTED"),
        "pdf-10000-pages": (many_pages_pdf(10_000), PDF, "TOO_MANY_PAGES"),
        "pdf-200-inch-page": (
            text_pdf(["200 x 200 in"], size=(14_400.0, 14_400.0)),
            PDF,
            "PIXEL_LIMIT",
        ),
        "pdf-no-pages": (zero_page_pdf(), PDF, "EMPTY_DOCUMENT"),
        "dicom-no-pixel-data": (
            with_header(sc, PixelData=None),
            DICOM,
            "NO_IMAGE_DATA",
        ),
        "dicom-60000-square-frame": (
            with_header(sc, Rows=60_000, Columns=60_000),
            DICOM,
            "PIXEL_LIMIT",
        ),
        "dicom-pixel-data-truncated": (sc[:-1000], DICOM, "UNREADABLE_DOCUMENT"),
        "dicom-jpeg-xl": (
            with_transfer_syntax(
                secondary_capture([image], dpi=page.dpi, syntax=JPEGBaseline8Bit),
                "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless: no plugin reads it
            ),
            DICOM,
            "UNSUPPORTED_TRANSFER_SYNTAX",
        ),
        "dicom-encrypted-pdf": (
            encapsulated_pdf(encrypted_pdf()),
            DICOM,
            "PDF_ENCRYPTED",
        ),
    }


def good_inputs(page: SourcePage) -> dict[str, tuple[bytes, str]]:
    """A quarter of a real page in each format, so the good documents read quickly."""
    image = page.image.crop((0, 0, page.image.width, page.image.height // 4))
    return {
        f"good-{name}": (wrapper.build([image], page.dpi), wrapper.content_type)
        for name, wrapper in WRAPPERS.items()
    }


async def test_bad_dicoms_and_pdfs_fail_alone_and_the_worker_stays_healthy(
    settings: Settings,
) -> None:
    page = chosen_pages().singles[0]
    print(f"good documents: the top quarter of {page.name} ({data_set().name})")
    bad = bad_inputs(page)
    good = good_inputs(page)
    good_names, bad_names = list(good), list(bad)
    order = [good_names.pop(0)]  # bad ones interleaved with good ones, good at the ends
    while bad_names:
        order += bad_names[:2]
        del bad_names[:2]
        if good_names:
            order.append(good_names.pop(0))
    order += good_names
    files = {name: (raw, kind) for name, (raw, kind, _) in bad.items()} | good
    requests = {name: scan_request(name, *files[name]) for name in order}
    await publish_requests(settings, requests.values())

    worker = WorkerProcess(settings, "bad-inputs")
    try:
        worker.wait_ready(120)
        outputs = await read_outputs(
            settings, results=len(requests), dead_letters=len(bad), timeout_s=300
        )
        await asyncio.sleep(0.5)  # the last commit and metrics settle
        health, ready = worker.get("/health"), worker.get("/ready")
        metrics = worker.get("/metrics").text
        alive = worker.process.poll() is None
    finally:
        worker.stop()

    assert alive, worker.log()
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert ready.status_code == 200, ready.text
    results = outputs.by_id()
    assert set(results) == set(requests)
    wrong = {
        name: (results[name].status.value, results[name].error_code)
        for name, (_, _, code) in bad.items()
        if (results[name].status.value, results[name].error_code) != ("FAILED", code)
    }
    assert not wrong, wrong
    for name in good:
        assert results[name].status.value == "OK", (name, results[name].error_message)
        assert results[name].text.strip(), name
    letters = {letter.document_id: letter for letter in outputs.dead_letters}
    assert set(letters) == set(bad)
    for name, (_, _, code) in bad.items():
        assert letters[name].error_code == code, name
        assert letters[name].value == encode_record(
            requests[name], settings.kafka.input_topic
        ), name
    for code in {code for _, _, code in bad.values()}:
        assert f'ocr_dead_letters_total{{error_code="{code}"}}' in metrics, code
