"""A DICOM file read into a data set of the elements wanted, or a clean refusal.

pydicom reads what it can and keeps quiet about a file that ends early: it stops at a
partial element header, hands back a value shorter than its length, seeks past the end
over a skipped value, or (the file ending inside an undefined length) drops the whole
data set read so far. ``read_dicom`` notices each of these (UNREADABLE_DOCUMENT), and
parses nothing that would grow past a bound (DOCUMENT_TOO_LARGE): a deflated data set
inflating too far, a flood of sequence items. Only the wanted elements are kept: a file
of a million tiny elements costs seconds (under the decode timeout), not memory.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_dataset, read_partial
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from consumers.errors import (
    DocumentTooLargeError,
    PoisonRecordError,
    UnreadableDocumentError,
    UnsupportedFormatError,
)

PREAMBLE_BYTES = 128
# Far above what a document needs (an item per frame and per functional group, a
# fragment per frame or per 64 KB of compressed frame), far below a flood.
MAX_ITEMS = 100_000
_ITEM_LE, _ITEM_BE = b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00"  # (FFFE,E000)
_UNDEFINED_LENGTH = 0xFFFFFFFF

# What pydicom and its plugins raise on hostile bytes.
LIBRARY_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError,
    EOFError,
    ValueError,  # and UnicodeDecodeError
    TypeError,
    LookupError,  # KeyError, IndexError: an element or item a value points to
    BytesLengthException,  # a binary value whose length its VR cannot have
    OverflowError,
    struct.error,
    zlib.error,
    NotImplementedError,
    OSError,  # "No tag to read": a sequence item cut short
    RecursionError,  # sequences nested thousands deep
)


def read_dicom(raw: bytes, keywords: Iterable[str], max_inflated_bytes: int) -> Dataset:
    """The data set of a Part-10 file (its preamble optional), with only the elements
    named by ``keywords`` (unknown keywords are ignored)."""
    if raw.startswith(b"DICM", PREAMBLE_BYTES):
        source = raw
    elif raw.startswith(b"DICM"):  # a Part-10 file someone stripped of its preamble
        source = bytes(PREAMBLE_BYTES) + raw
    else:
        raise UnsupportedFormatError(
            "not a DICOM Part-10 file: no 'DICM' at byte 128 or 0 (a data set without "
            "File Meta Information does not say how it is encoded)"
        )
    wanted = {BaseTag(tag) for tag in map(tag_for_keyword, keywords) if tag is not None}
    seen = _SeenTags(wanted)
    fp = _Source(source)
    with reading():
        _check_size(source, max_inflated_bytes)
        ds = read_partial(fp, stop_when=seen, specific_tags=list(wanted))
        truncated = (
            fp.ended_short
            or fp.tell() > len(source)
            or _meta_cut_short(ds, len(source))
            or _cut_short(ds)
            or any(tag not in ds for tag in seen.tags)
        )
    if truncated:
        raise UnreadableDocumentError(
            "DICOM file is truncated: it ends inside an element"
        )
    return ds


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """pydicom's errors while reading a data set, as UNREADABLE_DOCUMENT."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-conformant values: checked by callers
            yield
    except PoisonRecordError:
        raise
    except LIBRARY_ERRORS as exc:
        raise UnreadableDocumentError(
            f"DICOM data set cannot be read: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc


class _Source(io.BytesIO):
    """The file, remembering a read that found only part of what it asked for and was
    not followed by a seek back (pydicom's delimiter scan reads past the end, then
    seeks back to the delimiter): a complete data set ends with a read of nothing."""

    ended_short = False

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if size is not None and 0 < len(chunk) < size:
            self.ended_short = True
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        position = super().seek(offset, whence)
        if position < len(self.getbuffer()):
            self.ended_short = False
        return position


class _SeenTags:
    """A ``stop_when`` that never stops: the wanted top-level tags the reader met."""

    def __init__(self, wanted: set[BaseTag]) -> None:
        self._wanted = wanted
        self.tags: set[BaseTag] = set()

    def __call__(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag in self._wanted:
            self.tags.add(tag)
        return False


def _check_size(source: bytes, max_inflated_bytes: int) -> None:
    """Refuse before parsing what would make pydicom's data set huge: a deflated data
    set inflating past ``max_inflated_bytes`` (pydicom inflates it whole), or more
    than ``MAX_ITEMS`` sequence items (a Python object each: a million empty items
    took 28 s and 400 MB), counted by their tags in the (inflated) bytes."""
    fp = io.BytesIO(source)
    fp.seek(PREAMBLE_BYTES + 4)
    meta = read_dataset(
        fp, is_implicit_VR=False, is_little_endian=True, stop_when=_past_file_meta
    )
    if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        items = _inflated_items(source[fp.tell() :], max_inflated_bytes)
    else:
        items = source.count(_ITEM_LE) + source.count(_ITEM_BE)
    if items > MAX_ITEMS:
        raise DocumentTooLargeError(
            f"DICOM data set has more than {MAX_ITEMS} sequence items or fragments"
        )


def _inflated_items(deflated: bytes, limit: int) -> int:
    """Item tags in the inflated data set, streamed through a bounded buffer."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, inflated, items, tail = deflated, 0, 0, b""
    while pending and not inflater.eof:
        chunk = inflater.decompress(pending, 1 << 20)
        inflated += len(chunk)
        if inflated > limit:
            raise DocumentTooLargeError(
                f"DICOM deflated data set inflates to more than {limit} bytes"
            )
        items += (tail + chunk).count(_ITEM_LE)  # a tag across two chunks counts once
        tail = chunk[-3:]
        pending = inflater.unconsumed_tail
    return items


def _past_file_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag.group != 2


def _meta_cut_short(ds: Dataset, size: int) -> bool:
    """The File Meta Information's group length runs past the end of the file."""
    meta = ds.file_meta if ds.file_meta is not None else FileMetaDataset()
    length = meta.get("FileMetaInformationGroupLength")
    # "DICM", then (0002,0000) UL: 12 bytes from byte 132, then the rest of the group
    return isinstance(length, int) and PREAMBLE_BYTES + 16 + length > size


def _cut_short(ds: Dataset) -> bool:
    """An element kept whose value is shorter than its length: the file ended in it."""
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if (
            isinstance(elem, RawDataElement)
            and elem.length != _UNDEFINED_LENGTH
            and elem.value is not None
            and len(elem.value) < elem.length
        ):
            return True
    return False
