"""The bundled DICOM and PDF samples, generated from the scans beside them.

``python -m tests.support.samples`` writes into ``producers/samples/``, with each page's
ground truth (``<id>.pN.txt``) and its line in ``manifest.jsonl``:

- ``demo-sc-0029.dcm``: pub-0029.png as a DICOM Secondary Capture, the way a PACS
  gateway wraps a scanned page: 8-bit MONOCHROME2, the scan's 175 dpi as Nominal
  Scanned Pixel Spacing, made-up identifiers (PatientID DEMO-0001). Deflated Explicit
  VR Little Endian keeps the pixels lossless in ~70 KB; JPEG baseline of this clean
  page would take 180-240 KB.
- ``demo-lab-report.pdf``: a born-digital lab report (Korean, made up) whose text layer
  the worker takes instead of OCR, then pub-0007's second page as an image-only page,
  which is OCR'd. The Korean font is not embedded (one is megabytes, and none ships
  with the project), so what a viewer draws depends on its host's fonts (PDFium without
  a Korean font draws the Latin text only); the text layer reads right everywhere (a
  /ToUnicode map, ``tests.support.pdfs``).

Same inputs, same files; their bytes may still differ across pydicom and zlib versions
(pydicom writes its version into the file meta), so ``tests/unit/test_samples.py``
compares what the files hold, not their bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from tests.support.cer import SAMPLES_DIR
from tests.support.dicoms import secondary_capture
from tests.support.pdfs import PdfPage, build_pdf

MANIFEST = "manifest.jsonl"
SAMPLE_BYTES_LIMIT = 300_000  # each generated sample stays well under this


def _uid(name: str) -> str:
    """A UID that is the same on every run (pydicom's root, hashed from ``name``)."""
    return str(generate_uid(entropy_srcs=["medocr demo sample", name]))


# Made up: no real patient. What the worker gives back is the allow-listed part
# (OCR_DICOM_ATTRIBUTES); PatientName is not in it.
DICOM_IDENTIFIERS: Mapping[str, str] = {
    "PatientName": "DEMO^SAMPLE",
    "PatientID": "DEMO-0001",
    "AccessionNumber": "DEMO-ACC-0001",
    "StudyInstanceUID": _uid("study"),
    "SeriesInstanceUID": _uid("series"),
    "SOPInstanceUID": _uid("instance"),
    "InstanceNumber": "1",
}

# One line a text line; single spaces, as a text layer reads them back.
LAB_REPORT = (
    "medocr 데모병원 진단검사의학과",
    "검사 결과지 (Laboratory Report)",
    "환자명: 홍길동 등록번호: DEMO-0001 성별/나이: 여/52세",
    "진료과: 내과 의뢰의: 김데모 검체: 혈액(전혈, 혈청)",
    "채취: 2024-05-02 08:40 보고: 2024-05-02 14:15",
    "검사항목 결과 단위 참고치",
    "WBC (백혈구) 6.8 10^3/uL 4.0-10.0",
    "Hemoglobin (혈색소) 11.4 L g/dL 12.0-16.0",
    "Platelet (혈소판) 245 10^3/uL 150-400",
    "Glucose (공복혈당) 126 H mg/dL 70-99",
    "HbA1c (당화혈색소) 6.9 H % 4.0-5.6",
    "AST 24 U/L 0-40",
    "ALT 31 U/L 0-40",
    "Creatinine (크레아티닌) 0.78 mg/dL 0.50-1.10",
    "판독 소견: 공복혈당과 당화혈색소가 참고치보다",
    "높습니다. 3개월 후 추적 검사를 권합니다.",
    "검사자: 이샘플 판독의: 박예시 (진단검사의학과)",
    "이 결과지는 medocr 데모용 가상 문서입니다.",
)


@dataclass(frozen=True)
class Sample:
    """One generated sample: its bytes, each page's ground truth, its manifest line."""

    raw: bytes
    truth: tuple[str, ...]
    entry: dict[str, Any]  # the manifest line but its "bytes"

    @property
    def doc_id(self) -> str:
        return str(self.entry["id"])

    @property
    def file(self) -> str:
        return str(self.entry["file"])

    def manifest_line(self) -> dict[str, Any]:
        return {**self.entry, "bytes": len(self.raw)}


def dicom_sample(folder: Path = SAMPLES_DIR) -> Sample:
    """pub-0029.png as a deflated Secondary Capture (see the module docstring)."""
    dpi = 175
    with Image.open(folder / "pub-0029.png") as scan:
        page = scan.convert("L")
    raw = secondary_capture(
        [page],
        dpi=dpi,
        syntax=DeflatedExplicitVRLittleEndian,
        identifiers=DICOM_IDENTIFIERS,
    )
    truth = ((folder / "pub-0029.p1.txt").read_text(encoding="utf-8"),)
    doc_id = "demo-sc-0029"
    returned = {k: v for k, v in DICOM_IDENTIFIERS.items() if k != "PatientName"}
    entry = {
        "id": doc_id,
        "file": f"{doc_id}.dcm",
        "format": "dicom",
        "pages": 1,
        "template": "prescription",
        "degradation": "clean",
        "width": page.width,
        "height": page.height,
        "gt": [f"{doc_id}.p1.txt"],
        "dpi": dpi,
        "mode": "L",
        "compression": "deflate (Deflated Explicit VR Little Endian)",
        "source": "pub-0029.png",
        "source_attributes": {
            **returned,
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
            "Modality": "OT",
        },
    }
    return Sample(raw, truth, entry)


def pdf_sample(folder: Path = SAMPLES_DIR) -> Sample:
    """A born-digital lab report, then pub-0007's page 2 as an image-only page."""
    dpi = 200  # pub-0007.tif's: the image page is the paper's size
    with Image.open(folder / "pub-0007.tif") as scan:
        scan.seek(1)
        image = scan.convert("L")
    size = (image.width * 72 / dpi, image.height * 72 / dpi)
    raw = build_pdf([PdfPage(lines=LAB_REPORT), PdfPage(size=size, image=image)])
    truth = (
        "\n".join(LAB_REPORT) + "\n",
        (folder / "pub-0007.p2.txt").read_text(encoding="utf-8"),
    )
    doc_id = "demo-lab-report"
    entry = {
        "id": doc_id,
        "file": f"{doc_id}.pdf",
        "format": "pdf",
        "pages": 2,
        "template": "lab_report",
        "degradation": "clean",
        "gt": [f"{doc_id}.p1.txt", f"{doc_id}.p2.txt"],
        "compression": "deflate",
        "source": "page 1 born-digital text; page 2 pub-0007.tif page 2 at 200 dpi",
        "text_sources": ["TEXT_LAYER", "OCR"],
    }
    return Sample(raw, truth, entry)


def build_samples(folder: Path = SAMPLES_DIR) -> list[Sample]:
    return [pdf_sample(folder), dicom_sample(folder)]


def write_samples(folder: Path = SAMPLES_DIR) -> list[Sample]:
    """Each sample, its ground truth and its manifest line written into ``folder``
    (the manifest's other lines kept as they are, in their order)."""
    samples = build_samples(folder)
    for sample in samples:
        if len(sample.raw) > SAMPLE_BYTES_LIMIT:
            raise ValueError(f"{sample.file} is {len(sample.raw)} bytes: too large")
        (folder / sample.file).write_bytes(sample.raw)
        for name, text in zip(sample.entry["gt"], sample.truth, strict=True):
            (folder / name).write_text(text, encoding="utf-8")
    manifest = folder / MANIFEST
    generated = {sample.doc_id for sample in samples}
    kept = [
        line
        for line in manifest.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["id"] not in generated
    ]
    lines = kept + [
        json.dumps(sample.manifest_line(), ensure_ascii=False) for sample in samples
    ]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return samples


def main() -> None:
    for sample in write_samples():
        print(f"{SAMPLES_DIR / sample.file}: {len(sample.raw)} bytes")


if __name__ == "__main__":
    main()
