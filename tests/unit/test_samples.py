"""The bundled samples: the manifest lists what the demo publishes, and the generated
DICOM and PDF samples hold what their manifest lines say and what
``tests.support.samples`` builds today (compared by content: their bytes vary with the
pydicom and zlib versions)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from consumers.inputs import DecodedDocument, ImageLimits
from consumers.inputs.dicom import DicomDecoder
from consumers.inputs.pdf import open_pdf
from consumers.inputs.pdf_renderer import LockedRenderer
from consumers.local.demo import describe_source, sample_scans
from schemas import DocumentStatus, OcrPage, OcrResult, PageStatus, TextSource
from tests.support.cer import SAMPLES_DIR, normalize
from tests.support.samples import SAMPLE_BYTES_LIMIT, Sample, build_samples

LIMITS = ImageLimits()
# enough to compare two renders of the same page, at a tenth of the pixels
SMALL = ImageLimits(render_dpi=96)


def manifest() -> dict[str, dict[str, Any]]:
    lines = (SAMPLES_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return {entry["id"]: entry for entry in entries}


def committed(entry: dict[str, Any]) -> bytes:
    return (SAMPLES_DIR / str(entry["file"])).read_bytes()


@pytest.fixture(scope="module")
def generated() -> dict[str, Sample]:
    return {sample.doc_id: sample for sample in build_samples()}


@pytest.fixture(scope="module")
def renderer() -> Iterator[LockedRenderer]:
    locked = LockedRenderer()
    yield locked
    locked.close()


def test_the_demo_publishes_every_manifest_document_under_its_id() -> None:
    entries = manifest()
    scans = sample_scans()
    assert {scan.stem: scan.name for scan in scans} == {
        doc_id: entry["file"] for doc_id, entry in entries.items()
    }
    for entry in entries.values():
        assert len(committed(entry)) == entry["bytes"], entry["id"]
        assert len(entry["gt"]) == entry["pages"], entry["id"]
        assert all((SAMPLES_DIR / gt).read_text(encoding="utf-8") for gt in entry["gt"])


def test_the_generated_samples_are_committed_as_generated(
    generated: dict[str, Sample],
) -> None:
    entries = manifest()
    assert {"demo-lab-report", "demo-sc-0029"} <= set(generated)
    for doc_id, sample in generated.items():
        entry = entries[doc_id]
        raw = committed(entry)
        assert len(raw) < SAMPLE_BYTES_LIMIT, doc_id
        assert entry == {**sample.entry, "bytes": len(raw)}
        truth = [(SAMPLES_DIR / gt).read_text(encoding="utf-8") for gt in entry["gt"]]
        assert truth == list(sample.truth), doc_id


def test_the_dicom_sample_is_its_source_scan_with_made_up_identifiers(
    generated: dict[str, Sample],
) -> None:
    entry = manifest()["demo-sc-0029"]
    raw = committed(entry)
    document = DicomDecoder().open(raw, LIMITS)
    try:
        assert document.format == "application/dicom"
        assert document.metadata == entry["source_attributes"]
        assert document.metadata["PatientID"] == "DEMO-0001"
        page = document.page(0)
    finally:
        document.close()
    assert (page.image.size, page.image.mode) == (
        (entry["width"], entry["height"]),
        entry["mode"],
    )
    assert page.dpi == pytest.approx(entry["dpi"], abs=0.01)
    with Image.open(SAMPLES_DIR / entry["source"]) as scan:
        assert page.image.tobytes() == scan.convert("L").tobytes()  # lossless
    dataset = dcmread(io.BytesIO(raw))
    assert dataset.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert dataset == dcmread(io.BytesIO(generated["demo-sc-0029"].raw))


def test_the_pdf_sample_has_a_text_layer_page_then_a_scanned_page(
    renderer: LockedRenderer,
) -> None:
    entry = manifest()["demo-lab-report"]
    truth = [(SAMPLES_DIR / gt).read_text(encoding="utf-8") for gt in entry["gt"]]
    document = open_pdf(committed(entry), LIMITS, renderer=renderer)
    try:
        layers = [document.text_layer(i) for i in range(document.page_count)]
    finally:
        document.close()
    assert document.page_count == entry["pages"]
    sources = ["OCR" if layer is None else "TEXT_LAYER" for layer in layers]
    assert sources == entry["text_sources"]
    assert layers[0] is not None
    assert normalize(layers[0]) == normalize(truth[0])


def test_the_pdf_sample_draws_as_the_generator_builds_it(
    renderer: LockedRenderer, generated: dict[str, Sample]
) -> None:
    documents = [
        open_pdf(raw, SMALL, renderer=renderer)
        for raw in (
            committed(manifest()["demo-lab-report"]),
            generated["demo-lab-report"].raw,
        )
    ]
    try:
        ours, fresh = [_drawn(document) for document in documents]
    finally:
        for document in documents:
            document.close()
    assert ours == fresh


def _drawn(document: DecodedDocument) -> list[tuple[str | None, bytes]]:
    return [
        (document.text_layer(i), document.page(i).image.tobytes())
        for i in range(document.page_count)
    ]


def _result(source_format: str, *pages: TextSource, **ids: str) -> OcrResult:
    return OcrResult(
        "doc",
        DocumentStatus.OK,
        datetime.now(UTC),
        pages=[
            OcrPage(n, PageStatus.OK, source_page=n, text_source=source)
            for n, source in enumerate(pages, 1)
        ],
        source_format=source_format,
        source_attributes=ids,
    )


@pytest.mark.parametrize(
    ("result", "said"),
    [
        (_result("image/tiff", TextSource.OCR, TextSource.OCR), "TIFF"),
        (
            _result("application/pdf", TextSource.TEXT_LAYER, TextSource.OCR),
            "PDF (p1 TEXT_LAYER, p2 OCR)",
        ),
        (
            _result("application/dicom", TextSource.OCR, PatientID="DEMO-0001", A="1"),
            "DICOM (2 identifiers back, PatientID=DEMO-0001)",
        ),
        (
            _result("application/dicom", TextSource.TEXT_LAYER, Modality="DOC"),
            "DICOM (p1 TEXT_LAYER, 1 identifier back)",
        ),
        (_result(""), ""),
    ],
)
def test_the_demo_says_what_each_document_was(result: OcrResult, said: str) -> None:
    assert describe_source(result) == said
