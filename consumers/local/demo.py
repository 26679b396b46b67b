"""``medocr demo``: embedded broker + worker + the bundled sample scans, then a summary.

Everything runs in this process and on loopback; it also publishes one corrupt scan to
show a dead letter and a FAILED result instead of a lost document.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

from consumers.local.broker import EmbeddedBroker, ensure_topics, free_port
from consumers.local.cer import micro_cer, score_page
from consumers.runner import run_worker
from consumers.settings import Settings
from producers.kafka import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
from producers.publisher import RequestOptions, find_scans
from schemas import DocumentStatus, OcrResult, TextSource
from schemas.content_types import FORMATS

FORMAT_NAMES_BY_TYPE = {
    content_type.mime: content_type.name for content_type in FORMATS
}


def samples_folder() -> Path:
    return Path(str(resources.files("producers").joinpath("samples")))


def sample_scans() -> list[Path]:
    """The bundled sample scans, sorted."""
    return find_scans([samples_folder()])


def sample_truth() -> dict[str, list[str]]:
    """Ground truth of each bundled sample, page by page (from its manifest)."""
    folder = samples_folder()
    truth = {}
    for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        truth[entry["id"]] = [
            (folder / name).read_text(encoding="utf-8") for name in entry["gt"]
        ]
    return truth


def demo_settings(settings: Settings, bootstrap: str) -> Settings:
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "enable_idempotence": False,
            "security_protocol": "PLAINTEXT",
            "fetch_max_wait_ms": EMBEDDED_BROKER_FETCH_MAX_WAIT_MS,
        }
    )
    sidecar = settings.sidecar.model_copy(
        update={"host": "127.0.0.1", "port": free_port()}
    )
    return settings.model_copy(update={"kafka": kafka, "sidecar": sidecar})


async def run_demo(settings: Settings) -> int:
    from producers.cli import PublishOptions, publish_command

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        settings = demo_settings(settings, broker.bootstrap_servers)
        kafka = settings.kafka
        await ensure_topics(
            kafka.client_kwargs(),
            kafka.all_topics(),
            kafka.partitions,
        )
        scans = sample_scans()
        png = next((scan for scan in scans if scan.suffix == ".png"), None)
        corrupt = Path(tmp) / "corrupt-scan.png"
        corrupt.write_bytes(
            png.read_bytes()[:2000]
            if png is not None
            else b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
        )
        print(
            f"medocr demo: broker on {broker.bootstrap_servers}, engine {settings.engine}, "
            f"sidecar http://127.0.0.1:{settings.sidecar.port}/health"
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop))
        results: list[OcrResult] = []
        started = time.monotonic()
        try:
            async with settings.client() as client:
                status = await publish_command(
                    [*scans, corrupt],
                    client,
                    PublishOptions(
                        RequestOptions(source_system="medocr-demo"),
                        wait=True,
                        timeout_s=600,
                    ),
                    on_result=results.append,
                )
        finally:
            stop.set()
            await worker
    elapsed = time.monotonic() - started
    return _summary(results, elapsed, status)


def describe_source(result: OcrResult) -> str:
    """The document's format; for a PDF where each page's text came from, for DICOM
    the identifiers that came back (the samples' are made up: DEMO-0001)."""
    name = FORMAT_NAMES_BY_TYPE.get(result.source_format, result.source_format)
    notes = []
    if result.source_format == "application/pdf" or any(
        page.text_source is not TextSource.OCR for page in result.pages
    ):
        notes += [
            f"p{page.source_page or page.page_number} {page.text_source.value}"
            for page in result.pages
        ]
    if result.source_attributes:
        patient = result.source_attributes.get("PatientID")
        count = len(result.source_attributes)
        notes.append(f"{count} identifier{'s' if count != 1 else ''} back")
        notes += [f"PatientID={patient}"] if patient else []
    return f"{name} ({', '.join(notes)})" if notes else name


def _summary(results: list[OcrResult], elapsed_s: float, status: int) -> int:
    ok = [r for r in results if r.status is DocumentStatus.OK]
    failed = [r for r in results if r.status is DocumentStatus.FAILED]
    pages = sum(r.page_count for r in ok)
    print("\n== summary")
    print(
        f"documents: {len(results)} ({len(ok)} OK, {len(failed)} FAILED), "
        f"pages recognised: {pages}, wall time: {elapsed_s:.1f}s"
    )
    truth = sample_truth()
    for result in ok:
        reference_pages = truth.get(result.document_id)
        if reference_pages is not None:
            scores = [
                score_page(text, reference)
                for text, reference in zip(
                    (page.text for page in result.pages), reference_pages, strict=False
                )
            ]
            print(
                f"  OK     {result.document_id}: {describe_source(result)}, "
                f"CER {micro_cer(scores):.3f} against the ground truth "
                f"({result.page_count} pages)"
            )
    for result in failed:
        print(f"  FAILED {result.document_id}: {result.error_code} (dead-lettered)")
    expected_failures = {"corrupt-scan"}
    good = status == 1 and {r.document_id for r in failed} == expected_failures
    print(
        "demo OK: every sample recognised, the corrupt scan dead-lettered"
        if good
        else "demo FAILED: see the results above"
    )
    return 0 if good else 1
