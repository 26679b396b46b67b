"""The one list of scan formats the contract allows: mime type, file suffixes, magic probe.

Adding a format is one entry in ``FORMATS`` (and one decoder in ``consumers/inputs/``).
A probe sees the first ``HEAD_BYTES`` of a file, so a marker may sit past the start
(DICOM's ``DICM`` at offset 128, PDF's ``%PDF-`` anywhere in the first kilobyte).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

# How much of a file a probe sees: the producer reads this much of a file it sends by
# reference, and the worker sniffs no more than this of the bytes it has.
HEAD_BYTES = 1024

Probe = Callable[[bytes], bool]


def magic(*markers: bytes, offset: int = 0) -> Probe:
    """A probe that is true when the head holds one of ``markers`` at ``offset``."""

    def probe(head: bytes) -> bool:
        return any(head.startswith(marker, offset) for marker in markers)

    return probe


@dataclass(frozen=True)
class ContentType:
    mime: str
    name: str  # what a person calls it: "PNG"
    suffixes: tuple[str, ...]  # lower case, with the dot; the first is the usual one
    probe: Probe  # true when the first HEAD_BYTES are this format


FORMATS: tuple[ContentType, ...] = (
    ContentType("image/png", "PNG", (".png",), magic(b"\x89PNG\r\n\x1a\n")),
    ContentType("image/jpeg", "JPEG", (".jpg", ".jpeg"), magic(b"\xff\xd8\xff")),
    ContentType("image/tiff", "TIFF", (".tif", ".tiff"), magic(b"II*\x00", b"MM\x00*")),
    # "%PDF-" anywhere in the head, unless it is a DICOM file's: an Encapsulated PDF's
    # document starts within its first kilobyte
    ContentType(
        "application/pdf",
        "PDF",
        (".pdf",),
        lambda head: b"%PDF-" in head and b"DICM" not in (head[:4], head[128:132]),
    ),
    # Part-10 files: a 128-byte preamble, then "DICM" (some writers leave the preamble
    # out and start with "DICM"). PACS exports often have no suffix.
    ContentType(
        "application/dicom",
        "DICOM",
        (".dcm", ".dicom"),
        lambda head: head.startswith(b"DICM", 128) or head.startswith(b"DICM"),
    ),
)


def sniff_content_type(
    raw: bytes, formats: Iterable[ContentType] = FORMATS
) -> str | None:
    """The MIME type the bytes really are, or None when they are no supported format.

    Only the first ``HEAD_BYTES`` count, whether ``raw`` is a head or a whole file, so
    the producer (which may read only the head) and the worker always agree.
    """
    head = raw[:HEAD_BYTES]
    for content_type in formats:
        if content_type.probe(head):
            return content_type.mime
    return None


def in_words(names: list[str]) -> str:
    """``["PNG", "JPEG", "TIFF"]`` as "PNG, JPEG or TIFF"."""
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


SUPPORTED_TYPES = frozenset(content_type.mime for content_type in FORMATS)
SUFFIX_TYPES = {
    suffix: content_type.mime
    for content_type in FORMATS
    for suffix in content_type.suffixes
}
FORMAT_NAMES = in_words([content_type.name for content_type in FORMATS])
