"""Benchmark: DICOM decode time per page, against the same page as PNG.

An A4 page at 300 dpi (2480 x 3508, gray text; and in colour) is wrapped as a
multi-frame Secondary Capture in each transfer syntax a scanner or PACS sends, built in
memory (``tests/support/dicoms.py``). For each case prints the file size, the open time
(header checks only) and the median decode time per page (``page(i)``: frame decode,
8-bit conversion, the max-side shrink), with PNG through the raster decoder as the
reference. JPEG Lossless runs in a GDCM child process, one per frame. Usage::

    python tests/bench/bench_dicom.py [--pages N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runnable as a script: the repository root holds consumers/, producers/ and tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from PIL import Image, ImageDraw
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from consumers.inputs import DecodedDocument, ImageLimits
from consumers.inputs.dicom import DicomDecoder
from consumers.inputs.raster import RasterDecoder
from tests.support.dicoms import gdcm_transcoded, secondary_capture
from tests.support.scans import encode

A4_300_DPI = (2480, 3508)


def text_page(color: bool) -> Image.Image:
    page = Image.new("RGB" if color else "L", A4_300_DPI, "white")
    draw = ImageDraw.Draw(page)
    for row in range(120, A4_300_DPI[1] - 120, 28):
        ink = (20, 40, 160) if color and row % 280 == 120 else "black"
        draw.text((150, row), f"Line {row:04d}: the quick brown fox " * 4, fill=ink)
    return page


def rle(pages: list[Image.Image]) -> bytes:
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.filewriter import dcmwrite

    ds = dcmread(BytesIO(secondary_capture(pages)))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def measure(
    opener: Callable[[bytes, ImageLimits], DecodedDocument],
    raw: bytes,
    pages: int,
    repeat: int,
) -> tuple[float, float]:
    """(open ms, median decode ms per page)."""
    limits = ImageLimits()
    opens: list[float] = []
    per_page: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        document = opener(raw, limits)
        opens.append((time.perf_counter() - started) * 1000)
        for index in range(document.page_count):
            started = time.perf_counter()
            document.page(index)
            per_page.append((time.perf_counter() - started) * 1000)
        document.close()
        assert document.page_count == pages
    return statistics.median(opens), statistics.median(per_page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=3, help="frames per object")
    parser.add_argument("--repeat", type=int, default=3, help="opens per case")
    args = parser.parse_args(argv)
    dicom = DicomDecoder().open
    raster = RasterDecoder().open
    gray = [text_page(color=False)] * args.pages
    rgb = [text_page(color=True)] * args.pages
    cases: list[tuple[str, Callable[[bytes, ImageLimits], DecodedDocument], bytes]] = [
        ("PNG gray (raster decoder)", raster, encode(gray[0], "PNG")),
        ("DICOM gray, uncompressed", dicom, secondary_capture(gray)),
        (
            "DICOM gray, deflated",
            dicom,
            secondary_capture(gray, syntax=DeflatedExplicitVRLittleEndian),
        ),
        ("DICOM gray, RLE", dicom, rle(gray)),
        (
            "DICOM gray, JPEG baseline",
            dicom,
            secondary_capture(gray, syntax=JPEGBaseline8Bit),
        ),
        (
            "DICOM gray, JPEG lossless (GDCM child)",
            dicom,
            gdcm_transcoded(secondary_capture(gray)),
        ),
        (
            "DICOM RGB, uncompressed",
            dicom,
            secondary_capture(rgb, syntax=ExplicitVRLittleEndian),
        ),
        (
            "DICOM RGB, JPEG baseline",
            dicom,
            secondary_capture(rgb, syntax=JPEGBaseline8Bit),
        ),
    ]
    print(
        f"{A4_300_DPI[0]}x{A4_300_DPI[1]} px pages, {args.pages} per object, {args.repeat} opens"
    )
    print(f"{'case':42} {'size':>10} {'open ms':>9} {'ms/page':>9}")
    for name, opener, raw in cases:
        pages = 1 if opener is raster else args.pages
        open_ms, page_ms = measure(opener, raw, pages, args.repeat)
        print(f"{name:42} {len(raw) / 1e6:>8.2f}MB {open_ms:>9.1f} {page_ms:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
