"""Where PDFium runs: the requests a renderer serves, and the one object that serves them.

PDFium is C code with process-wide state and no thread safety, so a ``PdfWorkbench`` is
used by one thread at a time, and in the worker only inside a renderer's child process
(``consumers.inputs.pdf_renderer``), where a crash or a hang on hostile bytes costs a
process the pool replaces, not the worker. Requests and replies are plain picklable
values; nothing in them is a PDFium handle, and pixels go through a shared ``Canvas``.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy
import pypdfium2 as pdfium  # type: ignore[import-untyped]
import pypdfium2.raw as pdfium_c  # type: ignore[import-untyped]
from PIL import Image

# Documents kept open in one workbench: a document's pages usually come to the same
# child, and one reopened after eviction costs a parse, not a failure.
OPEN_DOCUMENTS = 8
# Page objects looked at to find a page's images: a scan is one image near the start,
# and a page of 100,000 vector paths must not cost a second here.
SCANNED_OBJECTS = 2_000


@dataclass(frozen=True)
class OpenRequest:
    """Open ``raw`` as document ``doc_id``; with ``facts``, measure its pages."""

    doc_id: int
    raw: bytes
    max_pages: int
    facts: bool = True
    text: bool = True  # with the facts, each page's text layer


@dataclass(frozen=True)
class RenderRequest:
    """Draw page ``index`` of an open document into exactly ``width`` x ``height`` px."""

    doc_id: int
    index: int
    width: int
    height: int
    grayscale: bool = False


Request = OpenRequest | RenderRequest


@dataclass(frozen=True)
class PageFacts:
    """A page as PDFium draws it (crop box, /Rotate applied), in points."""

    width_pt: float
    height_pt: float
    text: str  # the text layer as PDFium reads it; "" when none or not asked for
    image_share: float  # how much of the page its images cover, 0..1


@dataclass(frozen=True)
class Opened:
    page_count: int
    pages: tuple[PageFacts, ...]  # empty past max_pages, or when facts were not asked


@dataclass(frozen=True)
class Drawn:
    """The page is on the canvas, rows ``stride`` bytes apart."""

    mode: str  # "L" or "RGBX"
    width: int
    height: int
    stride: int


@dataclass(frozen=True)
class Missing:
    """The document is not open here (another child opened it, or it was evicted)."""


@dataclass(frozen=True)
class Refused:
    code: str  # "encrypted" or "unreadable"
    message: str


Reply = Opened | Drawn | Missing | Refused


class Canvas:
    """Where pages are drawn: a file both a renderer child and its parent map.

    PDFium draws straight into the mapping and the parent copies the page out of it
    once, into the ``Image`` it returns: no pixel goes through a pipe. One page at a
    time: the parent reads it before the child draws the next. The file grows to the
    largest page drawn (64 MB at most: 4096x4096 px of 4 bytes).
    """

    def __init__(self, fd: int | None = None) -> None:
        self._fd = fd if fd is not None else _new_file()
        self._map: mmap.mmap | None = None

    def fileno(self) -> int:
        return self._fd

    def writable(self, nbytes: int) -> ctypes.Array[ctypes.c_char]:
        """The first ``nbytes`` of the canvas, for PDFium to write."""
        if os.fstat(self._fd).st_size < nbytes:
            os.ftruncate(self._fd, nbytes)
        return (ctypes.c_char * nbytes).from_buffer(self._mapped(nbytes))

    def image(self, drawn: Drawn) -> Image.Image:
        """The drawn page, copied out of the canvas: L or RGB."""
        nbytes = drawn.stride * drawn.height
        view = numpy.frombuffer(self._mapped(nbytes), numpy.uint8, nbytes)
        size = (drawn.width, drawn.height)
        frame = Image.frombuffer(
            drawn.mode, size, view, "raw", drawn.mode, drawn.stride, 1
        )
        return frame.convert("RGB") if drawn.mode == "RGBX" else frame.copy()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _mapped(self, nbytes: int) -> mmap.mmap:
        if self._map is None or len(self._map) < nbytes:
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        return self._map


def _new_file() -> int:
    """A file in memory only (Linux), else an unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("medocr-pdf-canvas", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as backing:
        return os.dup(backing.fileno())


class PdfWorkbench:
    """Open documents by id, and the requests about them. One thread at a time."""

    def __init__(self, canvas: Canvas, open_documents: int = OPEN_DOCUMENTS) -> None:
        self._canvas = canvas
        # each document with the bytes PDFium reads from: they must outlive it
        self._open: OrderedDict[int, tuple[pdfium.PdfDocument, bytes]] = OrderedDict()
        self._limit = open_documents

    def handle(self, request: Request, forget: Iterable[int] = ()) -> Reply:
        self.forget(forget)
        try:
            if isinstance(request, OpenRequest):
                return self._open_document(request)
            return self._render(request)
        except pdfium.PdfiumError as exc:
            return Refused("unreadable", f"PDFium: {exc}")
        except MemoryError:
            return Refused("unreadable", "it needs more memory than a renderer may use")

    def close(self) -> None:
        self.forget(list(self._open))

    def forget(self, doc_ids: Iterable[int]) -> None:
        for doc_id in doc_ids:
            entry = self._open.pop(doc_id, None)
            if entry is not None:
                entry[0].close()

    def _open_document(self, request: OpenRequest) -> Reply:
        self.forget([request.doc_id])
        loaded = _load(request.raw)
        if isinstance(loaded, Refused):
            return loaded
        self._open[request.doc_id] = (loaded, request.raw)
        while len(self._open) > self._limit:
            self.forget([next(iter(self._open))])
        count = len(loaded)
        if not request.facts or count > request.max_pages:
            return Opened(count, ())
        return Opened(
            count, tuple(_facts(loaded, i, request.text) for i in range(count))
        )

    def _render(self, request: RenderRequest) -> Reply:
        entry = self._open.get(request.doc_id)
        if entry is None:
            return Missing()
        self._open.move_to_end(request.doc_id)
        page = entry[0].get_page(request.index)
        try:
            return _draw(page, request, self._canvas)
        finally:
            page.close()


def _load(raw: bytes) -> pdfium.PdfDocument | Refused:
    """``raw`` opened, or why not. PDFium reads ``raw`` in place: keep it."""
    # PDFium's last error is process-wide and a failed load does not always set it:
    # a failing file load first sets FPDF_ERR_FILE, which no memory load sets, so a
    # password error read below is this document's, never the last one's.
    pdfium_c.FPDF_LoadDocument(b"", None)
    handle = pdfium_c.FPDF_LoadMemDocument64(raw, len(raw), None)
    if not handle:
        error = pdfium_c.FPDF_GetLastError()
        if error in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            return Refused("encrypted", _LOAD_ERRORS[error])
        return Refused("unreadable", _LOAD_ERRORS.get(error, _LOAD_ERRORS[0]))
    return pdfium.PdfDocument(handle)


_LOAD_ERRORS = {
    0: "PDFium cannot parse it",
    pdfium_c.FPDF_ERR_UNKNOWN: "PDFium cannot parse it",
    pdfium_c.FPDF_ERR_FORMAT: "not a PDF PDFium can parse (damaged or truncated)",
    pdfium_c.FPDF_ERR_PASSWORD: "it needs a password",
    pdfium_c.FPDF_ERR_SECURITY: "it is encrypted with a security handler PDFium lacks",
}


def _facts(document: pdfium.PdfDocument, index: int, text: bool) -> PageFacts:
    page = document.get_page(index)
    try:
        width, height = page.get_size()
        words = _text(page) if text else ""
        share = _image_share(page) if words.strip() else 0.0
        return PageFacts(float(width), float(height), words, share)
    finally:
        page.close()


def _text(page: pdfium.PdfPage) -> str:
    """The page's text inside its visible box, in PDFium's reading order."""
    textpage = page.get_textpage()
    try:
        return str(textpage.get_text_bounded(errors="replace"))
    finally:
        textpage.close()


def _image_share(page: pdfium.PdfPage) -> float:
    """How much of the visible page image objects (or forms holding one) cover."""
    left, bottom, right, top = (float(side) for side in page.get_bbox())
    area = max((right - left) * (top - bottom), 1e-6)
    covered = 0.0
    count = min(pdfium_c.FPDFPage_CountObjects(page), SCANNED_OBJECTS)
    bounds = [ctypes.c_float() for _ in range(4)]
    for i in range(count):
        obj = pdfium_c.FPDFPage_GetObject(page, i)
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == pdfium_c.FPDF_PAGEOBJ_FORM and not _form_has_image(obj):
            continue
        if kind not in (pdfium_c.FPDF_PAGEOBJ_IMAGE, pdfium_c.FPDF_PAGEOBJ_FORM):
            continue
        if not pdfium_c.FPDFPageObj_GetBounds(obj, *map(ctypes.byref, bounds)):
            continue
        x0, y0, x1, y1 = (b.value for b in bounds)
        width = max(min(x1, right) - max(x0, left), 0.0)
        height = max(min(y1, top) - max(y0, bottom), 0.0)
        covered += width * height
    return min(covered / area, 1.0)


def _form_has_image(form: object, depth: int = 0) -> bool:
    count = min(pdfium_c.FPDFFormObj_CountObjects(form), SCANNED_OBJECTS)
    for i in range(count):
        obj = pdfium_c.FPDFFormObj_GetObject(form, i)
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            return True
        if (
            kind == pdfium_c.FPDF_PAGEOBJ_FORM
            and depth < 2
            and _form_has_image(obj, depth + 1)
        ):
            return True
    return False


def _draw(page: pdfium.PdfPage, request: RenderRequest, canvas: Canvas) -> Reply:
    """The page scaled to fill exactly the requested size, on white, on the canvas."""
    width, height = request.width, request.height
    if request.grayscale:
        kind, mode, depth, flags = pdfium_c.FPDFBitmap_Gray, "L", 1, 0
    else:  # PDFium's BGRx with the byte order reversed: RGBX, which Pillow maps as is
        kind, mode, depth = pdfium_c.FPDFBitmap_BGRx, "RGBX", 4
        flags = pdfium_c.FPDF_REVERSE_BYTE_ORDER
    stride = (width * depth + 3) // 4 * 4
    pixels = canvas.writable(stride * height)
    bitmap = pdfium_c.FPDFBitmap_CreateEx(width, height, kind, pixels, stride)
    if not bitmap:
        return Refused("unreadable", f"PDFium cannot make a {width}x{height} px page")
    try:
        pdfium_c.FPDFBitmap_FillRect(bitmap, 0, 0, width, height, 0xFFFFFFFF)
        flags |= pdfium_c.FPDF_ANNOT
        pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, 0, width, height, 0, flags)
    finally:
        pdfium_c.FPDFBitmap_Destroy(bitmap)
    return Drawn(mode, width, height, stride)
