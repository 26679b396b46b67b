"""Crash, shutdown and scale-out of real ``medocr worker`` processes (Tesseract engine),
and a new user's first run: ``medocr broker``, ``worker`` and ``publish --wait``."""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit

from consumers.local.broker import free_port
from consumers.local.demo import sample_scans
from consumers.settings import Settings
from producers.kafka import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
from producers.publisher import RequestOptions, build_request
from tests.support.cer import SAMPLES_DIR
from tests.support.dicoms import encapsulated_pdf, secondary_capture
from tests.support.kafka import publish_requests, read_outputs
from tests.support.pdfs import image_pdf, text_pdf
from tests.support.processes import stop_process
from tests.support.records import scan_request
from tests.support.scans import encode
from tests.support.workers import LOGS, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.tesseract]


async def publish_copies(settings: Settings, copies: int) -> list[str]:
    """``copies`` rounds of the bundled samples under distinct document ids."""
    scans = sample_scans()
    requests = [
        build_request(scan, RequestOptions(id_prefix=f"c{n}-"))
        for n in range(copies)
        for scan in scans
    ]
    await publish_requests(settings, requests)
    return [r.document_id for r in requests]


async def wait_for_results(settings: Settings, count: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        seen = len((await read_outputs(settings, results=count, timeout_s=1)).results)
        if seen >= count:
            break
        await asyncio.sleep(0.2)
    return seen


async def interrupt_after_first_result(
    settings: Settings, name: str, sig: signal.Signals, expect_exit: int | None = None
) -> None:
    """Start a worker, send ``sig`` once it has published a result while it still holds
    records in flight (checked on its sidecar, so the signal lands mid-work); with
    ``expect_exit``, its exit status must be that (the worker's log says why not)."""
    worker = WorkerProcess(settings, name)
    try:
        worker.wait_ready()
        assert await wait_for_results(settings, 1, 120) >= 1
        in_flight = worker.get("/health").json()["active_requests"]
        assert in_flight > 0, "the signal would not land mid-work"
        worker.signal(sig)
        status = worker.wait(120)
        if expect_exit is not None:
            assert status == expect_exit, worker.log()
    finally:
        worker.stop()


def finish_in_burst(settings: Settings, name: str) -> None:
    """A ``--burst`` worker processes what is left and exits 0."""
    worker = WorkerProcess(settings, name, "--burst")
    try:
        assert worker.wait(300) == 0, worker.log()
    finally:
        worker.stop()


async def test_kill_9_mid_batch_then_restart_loses_nothing(settings: Settings) -> None:
    ids = await publish_copies(settings, 3)
    await interrupt_after_first_result(settings, "first", signal.SIGKILL)
    finish_in_burst(settings, "second")
    outputs = await read_outputs(settings, results=len(ids))
    counts = collections.Counter(r.document_id for r in outputs.results)
    assert set(counts) == set(ids)
    duplicates = sum(n - 1 for n in counts.values())
    print(f"kill -9: {len(ids)} documents, {duplicates} duplicate results")
    failed = [
        (r.document_id, r.error_code, r.error_message)
        for r in outputs.results
        if r.status.value != "OK"
    ]
    assert not failed, failed


async def test_sigterm_drains_commits_and_exits_zero(settings: Settings) -> None:
    ids = await publish_copies(settings, 3)
    await interrupt_after_first_result(settings, "drained", signal.SIGTERM, 0)
    finish_in_burst(settings, "rest")
    outputs = await read_outputs(settings, results=len(ids))
    counts = collections.Counter(r.document_id for r in outputs.results)
    # Everything the first worker took was finished and committed before it exited,
    # so the second worker redid nothing: exactly one result per document.
    assert counts == collections.Counter(ids)


async def test_two_workers_split_the_partitions(settings: Settings) -> None:
    ids = await publish_copies(settings, 4)
    workers = [WorkerProcess(settings, name) for name in ("left", "right")]
    try:
        for worker in workers:
            worker.wait_ready()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shares = [w.get("/health").json()["assigned_partitions"] for w in workers]
            if all(shares) and sum(shares) == settings.kafka.partitions:
                break
            await asyncio.sleep(0.5)
        assert all(shares) and sum(shares) == settings.kafka.partitions, shares
        assert await wait_for_results(settings, len(ids), 300) >= len(ids)
    finally:
        for worker in workers:
            worker.stop()
    outputs = await read_outputs(settings, results=len(ids))
    assert {r.document_id for r in outputs.results} == set(ids)
    assert len({r.worker_id for r in outputs.results}) == 2


async def test_sigterm_during_a_long_decode_exits_within_the_drain_timeout(
    settings: Settings,
) -> None:
    """Data: a generated 10-page TIFF of 10,000 x 10,000 px blank pages (1e9 px, the
    document limit), whose pages take seconds each to decode and shrink. SIGTERM
    lands while it decodes; decodes run in daemon threads the worker walks away from,
    so it exits within the drain timeout plus a short grace instead of decoding on."""
    page = Image.new("L", (10_000, 10_000), 255)
    raw = encode(
        page,
        "TIFF",
        save_all=True,
        append_images=[page] * 9,
        compression="tiff_adobe_deflate",
    )
    request = scan_request("long-decode", raw, "image/tiff")
    await publish_requests(settings, [request])
    drain_s, grace_s = 1.0, 6.0
    worker = WorkerProcess(settings, "stuck", OCR_DRAIN_TIMEOUT_S=str(drain_s))
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 60
        while worker.get("/health").json()["active_requests"] == 0:
            assert time.monotonic() < deadline, worker.log()
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # well inside the first pages' decode
        signalled = time.monotonic()
        worker.signal(signal.SIGTERM)
        status = worker.wait(120)
        took = time.monotonic() - signalled
    finally:
        worker.stop()
    print(f"SIGTERM during decode: exit {status} after {took:.1f} s")
    assert status == 0, worker.log()
    assert took < drain_s + grace_s, worker.log()
    # nothing was finished, so nothing was committed: the record is still there
    assert (await read_outputs(settings, results=1, timeout_s=2)).results == []


# --- a new user's folder through `medocr broker`, `medocr worker`, `medocr publish` ---

MEDOCR = [sys.executable, "-m", "consumers"]  # what the `medocr` script runs


def mixed_folder(folder: Path) -> dict[str, str]:
    """A PACS export next to a scanner's output: PNG, PDFs, DICOM with and without a
    suffix, and a note that is no scan. Pages: the bundled pub-0029.png, and a strip
    off its top (quick to read) in the other formats. Returns file name -> id."""
    with Image.open(SAMPLES_DIR / "pub-0029.png") as scan:
        page = scan.convert("L")
    strip = page.crop((0, 0, page.width, page.height // 6))
    shutil.copy(SAMPLES_DIR / "pub-0029.png", folder / "pub-0029.png")
    files = {
        "scan.pdf": image_pdf([strip], 175.0),
        "letter.pdf": text_pdf(["진료 의뢰서", "환자 성명: 홍길동 (남, 42세)"]),
        "capture.dcm": secondary_capture([strip], dpi=175.0, syntax=JPEGBaseline8Bit),
        "IM000001": secondary_capture([strip, strip], dpi=175.0),  # no suffix
        "IM000002": encapsulated_pdf(image_pdf([strip], 175.0)),  # no suffix
    }
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    (folder / "notes.txt").write_text("not a scan\n", encoding="utf-8")
    return {name: Path(name).stem for name in ["pub-0029.png", *files]}


@contextmanager
def child(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Path]:
    """``argv`` running, its output in ``log``, until the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield log
        finally:
            stop_process(process, 30)


def wait_until(
    what: str, done: Callable[[], bool], log: Path, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{what} not ready in {timeout_s} s: {log.read_text()[-3000:]}"
    )


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_publish_a_mixed_folder_as_a_new_user(tmp_path: Path) -> None:
    """The README's quickstart on a folder of PNG, PDF and DICOM files (one without a
    suffix): every scan is published and answered OK, the note is left alone."""
    folder = tmp_path / "scans"
    folder.mkdir()
    ids = mixed_folder(folder)
    broker_port, sidecar_port = free_port(), free_port()
    env = dict(os.environ)
    for name in list(env):
        if name.startswith(("KAFKA_", "OCR_")):
            del env[name]  # a new user's shell: the defaults, and the README's exports
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{broker_port}",
        KAFKA_ENABLE_IDEMPOTENCE="false",
        KAFKA_FETCH_MAX_WAIT_MS=str(EMBEDDED_BROKER_FETCH_MAX_WAIT_MS),
        HOST="127.0.0.1",
        PORT=str(sidecar_port),
        PYTHONUNBUFFERED="1",
    )
    LOGS.mkdir(parents=True, exist_ok=True)
    logs = {name: LOGS / f"new-user-{broker_port}-{name}.log" for name in ("b", "w")}
    with ExitStack() as stack:
        broker = stack.enter_context(
            child(
                [*MEDOCR, "broker", "--port", str(broker_port)],
                env,
                logs["b"],
            )
        )
        wait_until(
            "medocr broker", lambda: "broker ready on" in broker.read_text(), broker
        )
        worker = stack.enter_context(child([*MEDOCR, "worker"], env, logs["w"]))
        ready = f"http://127.0.0.1:{sidecar_port}/ready"
        wait_until("medocr worker", lambda: answers(ready), worker)
        published = subprocess.run(
            [*MEDOCR, "publish", "--wait", "--timeout", "240", str(folder)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    said = published.stdout + published.stderr
    assert published.returncode == 0, said + logs["w"].read_text()[-3000:]
    assert f"published {len(ids)} documents" in published.stderr, said
    for name, doc_id in ids.items():
        assert f"== {doc_id}: OK" in published.stdout, (name, said)
    assert "== notes:" not in published.stdout
    assert "2 pages" in next(
        line for line in published.stdout.splitlines() if "== IM000001:" in line
    )
