"""A DICOM object's identifiers come back on its result, and nowhere else.

The result carries exactly the allow-listed attributes (``OCR_DICOM_ATTRIBUTES``) the
object has, ``source_format`` application/dicom and each page's frame or PDF page; the
same values (PHI) never reach the worker's log, even at DEBUG, its error messages or
its metrics, for objects that fail as well as for those that are read.

Pages: a strip off the top of the bundled ``producers/samples/pub-0029.png`` (175 dpi),
small so Tesseract reads it quickly; what it says does not matter here.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping

import pytest
from PIL import Image
from pydicom.uid import (
    EncapsulatedPDFStorage,
    JPEGBaseline8Bit,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

from consumers.settings import Settings
from schemas import OcrRequest
from tests.support.cer import SAMPLES_DIR
from tests.support.dicoms import (
    encapsulated_pdf,
    secondary_capture,
    with_header,
    with_transfer_syntax,
)
from tests.support.kafka import publish_requests, read_outputs
from tests.support.pdfs import encrypted_pdf, image_pdf
from tests.support.records import scan_request
from tests.support.scans import encode
from tests.support.workers import WorkerProcess, run_burst

pytestmark = [pytest.mark.integration, pytest.mark.tesseract]

DICOM = "application/dicom"
DPI = 175.0
# Made up, and distinctive enough that finding one in a log can only be a leak.
WHO: Mapping[str, str] = {
    "PatientID": "PID-QX7Z93KV",
    "AccessionNumber": "ACC-W4M8R2TJ",
    "PatientName": "Zelkova^Phiwatch",  # never allow-listed
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.90417.11",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.90417.22",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.90417.33",
    "InstanceNumber": "7",
}
SHORT_LIST = "PatientID,AccessionNumber,StudyInstanceUID"


def strip() -> Image.Image:
    """The top sixth of pub-0029 (1447 x 341 px at 175 dpi): a few lines of text."""
    with Image.open(SAMPLES_DIR / "pub-0029.png") as scan:
        page = scan.convert("L")
    return page.crop((0, 0, page.width, page.height // 6))


def good_dicoms() -> dict[str, tuple[bytes, int, Mapping[str, str]]]:
    """Each good object: its bytes, its page count, and the attributes it has of the
    default allow-list besides the identifiers in ``WHO``."""
    page = strip()
    return {
        "sc": (
            secondary_capture([page], dpi=DPI, identifiers=WHO),
            1,
            {"SOPClassUID": SecondaryCaptureImageStorage, "Modality": "OT"},
        ),
        "sc-multiframe": (
            secondary_capture([page] * 3, dpi=DPI, identifiers=WHO),
            3,
            {
                "SOPClassUID": MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
                "Modality": "OT",
            },
        ),
        "encapsulated-pdf": (
            encapsulated_pdf(
                image_pdf([page, page], DPI), identifiers=WHO, title="Referral letter"
            ),
            2,
            {
                "SOPClassUID": EncapsulatedPDFStorage,
                "Modality": "DOC",
                "DocumentTitle": "Referral letter",
            },
        ),
    }


def expected_attributes(extra: Mapping[str, str], allowed: str) -> dict[str, str]:
    every = {k: v for k, v in WHO.items() if k != "PatientName"} | dict(extra)
    return {k: every[k] for k in allowed.split(",") if k in every}


@pytest.mark.parametrize("allowed", [None, SHORT_LIST], ids=["default", "short"])
async def test_the_allow_listed_identifiers_come_back_on_the_result(
    settings: Settings, allowed: str | None
) -> None:
    if allowed is not None:
        limits = settings.limits.model_copy(update={"dicom_attributes": allowed})
        settings = settings.model_copy(update={"limits": limits})
    allowed = settings.limits.dicom_attributes
    good = good_dicoms()
    requests = [scan_request(name, raw, DICOM) for name, (raw, _, _) in good.items()]
    requests.append(scan_request("png", encode(strip(), "PNG", dpi=(DPI, DPI))))
    await publish_requests(settings, requests)
    await run_burst(settings, timeout_s=180)
    results = (await read_outputs(settings, results=len(requests))).by_id()

    for name, (_, pages, extra) in good.items():
        result = results[name]
        assert result.status.value == "OK", (name, result.error_message)
        assert result.source_format == DICOM, name
        assert result.source_attributes == expected_attributes(extra, allowed), name
        assert [p.source_page for p in result.pages] == list(range(1, pages + 1))
    assert results["png"].source_format == "image/png"
    assert results["png"].source_attributes == {}


def failing_dicoms() -> dict[str, tuple[bytes, str]]:
    """Objects carrying ``WHO`` that fail, each with its code."""
    page = strip()
    sc = secondary_capture([page], dpi=DPI, identifiers=WHO)
    jpeg = secondary_capture([page], dpi=DPI, identifiers=WHO, syntax=JPEGBaseline8Bit)
    at = jpeg.index(b"\xff\xda")  # start of scan: garble the entropy-coded data
    return {
        "no-pixel-data": (with_header(sc, PixelData=None), "NO_IMAGE_DATA"),
        "truncated": (sc[:-500], "UNREADABLE_DOCUMENT"),
        "frames-missing": (with_header(sc, NumberOfFrames=3), "UNREADABLE_DOCUMENT"),
        "huge-frame": (with_header(sc, Rows=60_000, Columns=60_000), "PIXEL_LIMIT"),
        "bad-bits": (with_header(sc, BitsAllocated=3), "UNREADABLE_IMAGE"),
        "corrupt-frame": (
            jpeg[:at] + b"\xff\xd9" * 50 + jpeg[at + 100 :],
            "UNREADABLE_IMAGE",
        ),
        "jpeg-xl": (
            with_transfer_syntax(jpeg, "1.2.840.10008.1.2.4.110"),
            "UNSUPPORTED_TRANSFER_SYNTAX",
        ),
        "encrypted-pdf": (
            encapsulated_pdf(encrypted_pdf(), identifiers=WHO),
            "PDF_ENCRYPTED",
        ),
        "cda": (
            with_header(
                encapsulated_pdf(b"<ClinicalDocument/>", identifiers=WHO),
                MIMETypeOfEncapsulatedDocument="text/xml",
            ),
            "UNSUPPORTED_FORMAT",
        ),
    }


async def test_identifiers_never_reach_the_log_or_the_metrics(
    settings: Settings,
) -> None:
    good = good_dicoms()
    bad = failing_dicoms()
    requests: list[OcrRequest] = [
        scan_request(name, raw, DICOM) for name, (raw, _, _) in good.items()
    ]
    requests += [scan_request(name, raw, DICOM) for name, (raw, _) in bad.items()]
    await publish_requests(settings, requests)
    worker = WorkerProcess(settings, "phi", LOG_LEVEL="DEBUG")
    try:
        worker.wait_ready(120)
        outputs = await read_outputs(
            settings, results=len(requests), dead_letters=len(bad), timeout_s=180
        )
        metrics = worker.get("/metrics").text
        health = worker.get("/health").text
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log()
    finally:
        worker.stop()
    log = worker.log_path.read_text(encoding="utf-8", errors="replace")

    results = outputs.by_id()
    for name in good:
        assert results[name].status.value == "OK", (name, results[name].error_message)
        assert results[name].source_attributes["PatientID"] == WHO["PatientID"]
    for name, (_, code) in bad.items():
        assert (results[name].status.value, results[name].error_code) == (
            "FAILED",
            code,
        ), (name, results[name].error_message)
    assert " DEBUG " in log, "the worker did not log at DEBUG: the check would be void"
    assert "record failed" in log  # the failures were logged, by document position
    messages = [r.error_message or "" for r in results.values()]
    messages += [d.error_message or "" for d in outputs.dead_letters]
    for keyword, value in WHO.items():
        if keyword == "InstanceNumber":  # "7": in any text, identifies no one alone
            continue
        assert value not in log, f"{keyword} in the worker's log"
        assert value not in metrics, f"{keyword} in /metrics"
        assert value not in health, f"{keyword} in /health"
        assert not [m for m in messages if value in m], f"{keyword} in an error message"
