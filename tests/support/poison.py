"""A corpus of poison records, generated in memory: each one once stopped a worker or
could, plus the error code it must end as (a FAILED result and a dead letter).

Nothing here is a committed binary: TIFFs are written tag by tag (``tiff_file``), Avro
bodies that no valid ``OcrRequest`` can express are written with a loosened schema, and
``file://`` targets (a character device, a FIFO) are made below a folder the worker
allows in ``OCR_FILE_URI_ROOTS``.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from PIL import Image, ImageDraw, ImageFont

from schemas import OcrRequest
from schemas.avro import AvroSchema, read_schema
from schemas.framing import MAGIC
from tests.support.records import encode_record
from tests.support.records import scan_request as request
from tests.support.scans import encode, multipage_tiff

MiB = 1024 * 1024
# What the worker's producer accepts (producers.kafka: the document cap + 1 MiB).
PRODUCER_MAX_BYTES = 21 * MiB

# The limits of consumers.settings.LimitSettings at their defaults.
MAX_ID_CHARS = 256
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTES_BYTES = 16 * 1024
MAX_PROMPT_BYTES = 16 * 1024
MAX_PAGES = 50
MAX_PIXELS = 100_000_000
MAX_DOCUMENT_PIXELS = 1_000_000_000


@dataclass(frozen=True)
class Poison:
    """One hostile record as it lies on the input topic, and what it must end as."""

    name: str
    key: bytes | None
    value: bytes | None
    code: str
    # The limit the error message must name: the setting's name or its value.
    limit: tuple[str, int] | None = None
    # Cheap to build and to refuse: fit for soaking a worker with hundreds of them.
    cheap: bool = True

    @property
    def size_bytes(self) -> int:
        return len(self.key or b"") + len(self.value or b"")


def of_request(
    name: str,
    req: OcrRequest,
    code: str,
    *,
    key: bytes | None = None,
    limit: tuple[str, int] | None = None,
    cheap: bool = True,
) -> Poison:
    """A poison record holding ``req``, keyed by its id unless ``key`` is given."""
    return Poison(
        name,
        key if key is not None else req.document_id.encode(),
        encode_record(req),
        code,
        limit,
        cheap,
    )


# --- good documents --------------------------------------------------------------

GOOD_WORDS = "MEDOCR 4711"


@dataclass(frozen=True)
class GoodScan:
    raw: bytes
    words: str = GOOD_WORDS


def good_png(words: str = GOOD_WORDS) -> GoodScan:
    """A small clean PNG with a few printed words (fast for Tesseract)."""
    font = ImageFont.load_default(size=48)
    page = Image.new("L", (520, 120), 255)
    ImageDraw.Draw(page).text((24, 30), words, fill=0, font=font)
    return GoodScan(encode(page, "PNG"), words)


def tiny_png() -> bytes:
    return encode(Image.new("L", (16, 16), 255), "PNG")


# --- hand-written Avro ------------------------------------------------------------


def overflowing_timestamp(name: str = "timestamp-2-62") -> Poison:
    """``submitted_at`` = 2**62 ms: fastavro's datetime conversion overflows on decode.

    Written with a copy of the schema where ``submitted_at`` is a plain long; the
    fingerprint is the real schema's (a canonical form has no logical types anyway).
    """
    schema = read_schema("medocr.OcrRequest")
    for fld in schema["fields"]:
        if fld["name"] == "submitted_at":
            fld["type"] = "long"
    body = io.BytesIO()
    body.write(MAGIC + AvroSchema.load("medocr.OcrRequest").fingerprint)
    record = request(name, tiny_png(), "image/png").to_avro()
    record["submitted_at"] = 2**62
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return Poison(name, name.encode(), body.getvalue(), "UNDECODABLE_RECORD")


# --- TIFFs written tag by tag ------------------------------------------------------

SHORT, LONG = 3, 4
Entry = tuple[int, int, Sequence[int]]  # tag, type, values


@dataclass(frozen=True)
class TiffPage:
    """One IFD: its tags except the strip's offset and length, and the strip itself.

    Pages may share one strip object: it is written once and pointed at by each.
    """

    entries: list[Entry]
    strip: bytes


def _entry_bytes(entries: list[Entry], at: int) -> tuple[bytes, bytes]:
    table, extra = bytearray(), bytearray()
    extra_at = at + 2 + 12 * len(entries) + 4
    for tag, kind, values in sorted(entries):
        packed = struct.pack(f"<{len(values)}{'H' if kind == SHORT else 'I'}", *values)
        table += struct.pack("<HHI", tag, kind, len(values))
        if len(packed) <= 4:
            table += packed.ljust(4, b"\0")
        else:
            table += struct.pack("<I", extra_at + len(extra))
            extra += packed + b"\0" * (len(packed) % 2)
    return bytes(table), bytes(extra)


def tiff_file(pages: Sequence[TiffPage]) -> bytes:
    """A little-endian TIFF: the strips first, then the IFDs one after the other."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    strip_at: dict[int, int] = {}
    for page in pages:
        if id(page.strip) not in strip_at:
            strip_at[id(page.strip)] = len(out)
            out += page.strip + b"\0" * (len(page.strip) % 2)
    struct.pack_into("<I", out, 4, len(out))
    for number, page in enumerate(pages, 1):
        at = len(out)
        entries = [
            *page.entries,
            (273, LONG, [strip_at[id(page.strip)]]),
            (279, LONG, [len(page.strip)]),
        ]
        table, extra = _entry_bytes(entries, at)
        end = at + 2 + len(table) + 4 + len(extra)
        out += struct.pack("<H", len(entries)) + table
        out += struct.pack("<I", end if number < len(pages) else 0) + extra
    return bytes(out)


def _size_entries(width: int, height: int) -> list[Entry]:
    return [(256, LONG, [width]), (257, LONG, [height])]


@functools.cache
def _deflated_zeros(count: int) -> bytes:
    packer = zlib.compressobj(9)
    chunk = b"\0" * MiB
    parts = [packer.compress(chunk) for _ in range(count // MiB)]
    parts.append(packer.compress(b"\0" * (count % MiB)))
    parts.append(packer.flush())
    return b"".join(parts)


def palette_tiff(pages: int, width: int = 10_000, height: int = 10_000) -> bytes:
    """``pages`` deflated 8-bit palette pages of one colour: ~97 KB each on disk,
    ``width*height`` bytes each once decoded (100 MB at the defaults)."""
    strip = _deflated_zeros(width * height)
    colormap = [0xFFFF] * 768
    entries = [
        *_size_entries(width, height),
        (258, SHORT, [8]),
        (259, SHORT, [8]),  # Adobe deflate
        (262, SHORT, [3]),  # palette
        (277, SHORT, [1]),
        (278, LONG, [height]),
        (320, SHORT, colormap),
    ]
    # Each page its own copy of the strip, as a real scanner's file would be.
    return tiff_file([TiffPage(entries, bytes(bytearray(strip))) for _ in range(pages)])


def g4_tiff(pages: int, width: int = 10_000, height: int = 10_000) -> bytes:
    """``pages`` blank CCITT G4 pages: one bit a row (vertical mode V0), so ~1.2 KB
    each on disk and ``width*height`` pixels each once decoded."""
    rows = b"\xff" * ((height + 7) // 8)
    strip = rows + b"\x00\x10\x01"  # EOFB: two EOL codes
    entries = [
        *_size_entries(width, height),
        (258, SHORT, [1]),
        (259, SHORT, [4]),  # CCITT T.6
        (262, SHORT, [0]),  # WhiteIsZero
        (277, SHORT, [1]),
        (278, LONG, [height]),
    ]
    return tiff_file([TiffPage(entries, bytes(bytearray(strip))) for _ in range(pages)])


def many_ifd_tiff(pages: int = 150_000) -> bytes:
    """``pages`` 1x1 uncompressed gray IFDs sharing one strip (~100 bytes a page)."""
    strip = b"\xff"
    entries = [
        *_size_entries(1, 1),
        (258, SHORT, [8]),
        (259, SHORT, [1]),
        (262, SHORT, [1]),
        (277, SHORT, [1]),
    ]
    return tiff_file([TiffPage(entries, strip) for _ in range(pages)])


def tiff_second_page_without_width() -> bytes:
    """A 2-page TIFF from Pillow whose second IFD's ImageWidth tag (256) is renamed
    to an unknown tag: Pillow raises ``TypeError: Missing dimensions``."""
    raw = bytearray(multipage_tiff([(64, 32), (64, 32)]))
    assert raw[:4] == b"II*\x00"  # Pillow writes little-endian
    (first,) = struct.unpack_from("<I", raw, 4)
    (count,) = struct.unpack_from("<H", raw, first)
    (second,) = struct.unpack_from("<I", raw, first + 2 + 12 * count)
    (count,) = struct.unpack_from("<H", raw, second)
    for entry in range(second + 2, second + 2 + 12 * count, 12):
        if struct.unpack_from("<H", raw, entry)[0] == 256:
            struct.pack_into("<H", raw, entry, 0xFDE8)  # a private, unknown tag
            return bytes(raw)
    raise AssertionError("Pillow wrote no ImageWidth tag")


# --- the corpus -------------------------------------------------------------------


def decoding_poisons() -> list[Poison]:
    """Records that fail before a request exists, and small hostile images."""
    good = good_png().raw
    jpeg = encode(Image.open(io.BytesIO(good)).convert("RGB"), "JPEG")
    return [
        overflowing_timestamp(),
        Poison("tombstone", b"tombstone", None, "UNDECODABLE_RECORD"),
        Poison(
            "garbage", b"garbage", b"\x00\x01 not avro \xff" * 8, "UNDECODABLE_RECORD"
        ),
        of_request(
            "tiff-missing-width",
            request(
                "tiff-missing-width", tiff_second_page_without_width(), "image/tiff"
            ),
            "UNREADABLE_IMAGE",
        ),
        of_request(
            "truncated-png",
            request("truncated-png", good[: len(good) // 3], "image/png"),
            "UNREADABLE_IMAGE",
        ),
        of_request(
            "jpeg-as-png",
            request("jpeg-as-png", jpeg, "image/png"),
            "INVALID_REQUEST",
        ),
    ]


def _id_limit() -> tuple[str, int]:
    return ("OCR_MAX_ID_CHARS", MAX_ID_CHARS)


def field_poisons() -> list[Poison]:
    """Requests whose fields are absurd: each is INVALID_REQUEST, naming its limit."""
    png = tiny_png()

    def invalid(
        name: str,
        limit: tuple[str, int] | None = None,
        key: bytes | None = None,
        **fields: Any,
    ) -> Poison:
        fields.setdefault("document_id", name)
        req = request(fields.pop("document_id"), png, "image/png", **fields)
        return of_request(name, req, "INVALID_REQUEST", key=key, limit=limit)

    ids = {
        "id-nul": "doc\x00id",
        "id-control": "doc\x07\x08\r\nid",
        "id-ansi": "\x1b[31mred\x1b[0m",
        "id-path": "../../etc/passwd",
    }
    return [
        invalid("id-1mb", _id_limit(), document_id="i" * 1_000_000),
        *(invalid(name, document_id=doc_id) for name, doc_id in ids.items()),
        invalid("correlation-id-long", _id_limit(), correlation_id="c" * 1000),
        invalid("source-system-long", _id_limit(), source_system="s" * 1000),
        invalid(
            "attributes-100k",
            ("OCR_MAX_ATTRIBUTES", MAX_ATTRIBUTES),
            attributes={f"k{n}": "v" for n in range(100_000)},
        ),
        invalid(
            "attributes-bytes",
            ("OCR_MAX_ATTRIBUTES_BYTES", MAX_ATTRIBUTES_BYTES),
            attributes={f"k{n}": "v" * 4096 for n in range(8)},
        ),
        # Refused, yet echoed on the result, they would make a result of megabytes.
        invalid("correlation-id-4mib", _id_limit(), correlation_id="c" * (4 * MiB)),
        invalid(
            "attributes-2mib",
            ("OCR_MAX_ATTRIBUTES_BYTES", MAX_ATTRIBUTES_BYTES),
            attributes={f"k{n}": "v" * (128 * 1024) for n in range(16)},
        ),
        invalid(
            "prompt-10mb",
            ("OCR_MAX_PROMPT_BYTES", MAX_PROMPT_BYTES),
            prompt="p" * 10_000_000,
        ),
    ]


def size_poisons() -> list[Poison]:
    """Records whose result or dead letter would not fit the producer's limit as-is."""
    huge_id = request("h" * (11 * MiB), tiny_png(), "image/png")
    # A request near the document cap behind a large key: its dead letter carries the
    # key twice (record key and field) and the whole value.
    near_cap = request("dlq-near-cap", b"\x00junk" * (19 * MiB // 5), "image/png")
    return [
        of_request(
            "id-11mib",
            huge_id,
            "INVALID_REQUEST",
            key=b"id-11mib",
            limit=_id_limit(),
            cheap=False,
        ),
        of_request(
            "dlq-near-cap",
            near_cap,
            "UNSUPPORTED_FORMAT",
            key=b"k" * (3 * MiB // 2),
            cheap=False,
        ),
        # Larger than the worker's fetch size: the broker must still hand it over.
        of_request(
            "record-over-fetch",
            request("record-over-fetch", b"\x00junk" * (23 * MiB // 5), "image/png"),
            "DOCUMENT_TOO_LARGE",
            limit=("OCR_MAX_DOCUMENT_BYTES", 20 * MiB),
            cheap=False,
        ),
        # Undecodable: the key also becomes the document id (fallback): 3x in the letter.
        Poison(
            "dlq-undecodable-big-key",
            b"k" * (5 * MiB),
            b"\x00junk" * (12 * MiB // 5),
            "UNDECODABLE_RECORD",
            cheap=False,
        ),
    ]


def uri_poisons(root: Path) -> list[Poison]:
    """``file://`` URIs inside the allowed ``root`` that no read can finish (and one
    that names another host). Makes the device and FIFO in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    fifo = root / "scan-fifo.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    made = [("uri-fifo", fifo)]
    device = root / "scan-zero.png"
    if os.geteuid() == 0:  # mknod needs root (the test hosts run as root)
        if not device.exists():
            os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        made.append(("uri-char-device", device))

    def by_uri(name: str, uri: str) -> Poison:
        req = request(name, None, "image/png", image_uri=uri)
        return of_request(name, req, "IMAGE_URI")

    return [
        *(by_uri(name, path.as_uri()) for name, path in made),
        by_uri("uri-other-host", f"file://otherhost{root}/scan.png"),
        # Error messages that quote a part of the URI must not carry megabytes of it.
        by_uri("uri-huge-host", f"file://{'h' * (4 * MiB)}{root}/scan.png"),
        by_uri("uri-huge-scheme", f"{'s' * (4 * MiB)}://{root}/scan.png"),
    ]


def bomb_poisons() -> list[Poison]:
    """Decoding bombs within the per-page limits (TIFF of 1e8-px pages, 150k IFDs)."""

    def tiff(name: str, raw: bytes, code: str, limit: tuple[str, int]) -> Poison:
        req = request(name, raw, "image/tiff")
        return of_request(name, req, code, limit=limit, cheap=False)

    pixels = ("OCR_MAX_DOCUMENT_PIXELS", MAX_DOCUMENT_PIXELS)
    return [
        tiff("bomb-palette-50", palette_tiff(MAX_PAGES), "PIXEL_LIMIT", pixels),
        tiff("bomb-g4-50", g4_tiff(MAX_PAGES), "PIXEL_LIMIT", pixels),
        tiff(
            "bomb-150k-ifds",
            many_ifd_tiff(),
            "TOO_MANY_PAGES",
            ("OCR_MAX_PAGES", MAX_PAGES),
        ),
    ]


def slow_decode(pages: int = 6) -> Poison:
    """``pages`` 1e8-px palette pages: within every pixel limit, yet seconds to decode
    (fails with ``DECODE_TIMEOUT`` under a worker with a short OCR_DECODE_TIMEOUT_S)."""
    req = request("slow-decode", palette_tiff(pages), "image/tiff")
    return of_request("slow-decode", req, "DECODE_TIMEOUT", cheap=False)


def corpus(uri_root: Path, *, bombs: bool = True) -> list[Poison]:
    """Every shape, named; ``uri_root`` must be in the worker's OCR_FILE_URI_ROOTS."""
    builders: list[Callable[[], list[Poison]]] = [
        decoding_poisons,
        field_poisons,
        size_poisons,
        lambda: uri_poisons(uri_root),
    ]
    if bombs:
        builders += [bomb_poisons, lambda: [slow_decode()]]
    shapes = [poison for build in builders for poison in build()]
    assert len({p.name for p in shapes}) == len(shapes)
    return shapes


def cheap_corpus(uri_root: Path) -> list[Poison]:
    """The shapes that are small (<= 1 MiB) and quick to refuse: no bombs, no big ids."""
    shapes = corpus(uri_root, bombs=False)
    return [p for p in shapes if p.cheap and p.size_bytes <= MiB]
