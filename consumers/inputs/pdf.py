"""PDF through PDFium (pypdfium2): pages counted, sized and read for text before any render.

``open_pdf`` asks a renderer (child processes by default: ``pdf_renderer``) to open the
bytes and measure every page; it refuses what it can there: a password (PDF_ENCRYPTED),
bytes PDFium cannot parse (UNREADABLE_DOCUMENT; PDFium repairs many broken
cross-reference tables, and a repaired file is fine), no pages (EMPTY_DOCUMENT), more
than ``max_pages`` (TOO_MANY_PAGES, from the page count alone), absurd page boxes.
A PDF with an empty user password opens like any other.

Each page is drawn at ``render_dpi``, lowered so it has at most ``render_max_pixels``
(the engine's own bound) and a long side of at most ``max_side_px``; ``Page.dpi`` is the
resolution drawn. A page that would need less than ``MIN_RENDER_DPI`` to fit
``max_side_px`` is refused (PIXEL_LIMIT: our limit, not a broken file); one outside the
1/24 in..200 in that PDF allows is UNREADABLE_DOCUMENT.

``text_layer(i)`` is page i's text layer when it is usable (``usable_text``): read at
open, so a page taken from its text needs no render.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from consumers.errors import (
    EmptyDocumentError,
    EncryptedDocumentError,
    PixelLimitError,
    TooManyPagesError,
    UnreadableDocumentError,
)
from consumers.inputs.base import ImageLimits, Page, check_page_sizes
from consumers.inputs.pdf_renderer import DocumentRef, PdfRenderer, default_renderer
from consumers.inputs.pdf_workbench import (
    Opened,
    OpenRequest,
    PageFacts,
    Refused,
    RenderRequest,
)

# One pixel per point: below it 10-pt text is under 10 px tall, legible to no engine.
MIN_RENDER_DPI = 72.0
# What PDF allows a page (ISO 32000-1, annex C): 3 to 14,400 units of 1/72 in.
MIN_PAGE_PT = 3.0
MAX_PAGE_PT = 14_400.0

# A usable text layer: at least this many visible characters...
MIN_TEXT_CHARS = 16
# ...of which at most this share are unmapped glyphs (U+FFFD, private use, controls)...
MAX_BAD_SHARE = 0.05
# ...and at least this share letters or digits (a font without a Unicode map reads as
# runs of symbols)...
MIN_WORD_SHARE = 0.5
# ...and, over a page mostly covered by images (a scan), at least this many: a
# scanner's header stamp ("Received 2024-05-02 p.1") over an unread scan is no text
# layer, while another tool's OCR layer holds the whole page.
IMAGE_PAGE_SHARE = 0.5
MIN_TEXT_CHARS_OVER_IMAGE = 100

_BAD_CATEGORIES = frozenset({"Co", "Cn", "Cs", "Cc"})
_doc_ids = itertools.count(1)
R = TypeVar("R", Opened, Image.Image)


class PdfDecoder:
    content_types = ("application/pdf",)

    def __init__(
        self,
        renderer: PdfRenderer | None = None,
        *,
        grayscale: bool = False,
        text_layers: bool = True,
    ) -> None:
        self._renderer = renderer
        self._grayscale = grayscale
        self._text_layers = text_layers

    @property
    def concurrency(self) -> int:
        """One page per renderer child: more would queue for a child, fewer idle one."""
        return self._get_renderer().size

    def open(self, raw: bytes, limits: ImageLimits) -> PdfDocument:
        return open_pdf(
            raw,
            limits,
            renderer=self._get_renderer(),
            grayscale=self._grayscale,
            text_layers=self._text_layers,
        )

    def _get_renderer(self) -> PdfRenderer:
        return self._renderer or default_renderer()


def open_pdf(
    raw: bytes,
    limits: ImageLimits,
    *,
    format: str = "application/pdf",  # DecodedDocument.format
    metadata: Mapping[str, str] | None = None,
    renderer: PdfRenderer | None = None,
    grayscale: bool = False,
    text_layers: bool = True,
) -> PdfDocument:
    """PDF bytes opened and every page measured; ``format``/``metadata``: what the
    document reports (a DICOM Encapsulated PDF says "application/dicom" and its tags)."""
    renderer = renderer or default_renderer()
    ref = DocumentRef(next(_doc_ids), raw, limits.max_pages)
    try:
        plans, texts = _measure(renderer, ref, limits, text_layers)
    except BaseException:
        renderer.forget(ref.doc_id)
        raise
    return PdfDocument(ref, plans, texts, renderer, format, metadata or {}, grayscale)


def _measure(
    renderer: PdfRenderer, ref: DocumentRef, limits: ImageLimits, text_layers: bool
) -> tuple[list[RenderPlan], list[str | None]]:
    """Each page's render plan and usable text layer, or the error the PDF is."""
    request = OpenRequest(ref.doc_id, ref.raw, limits.max_pages, text=text_layers)
    opened = _expect(renderer.open(ref, request), Opened)
    if opened.page_count > limits.max_pages:
        raise TooManyPagesError(
            f"PDF has {opened.page_count} pages; the limit is {limits.max_pages}"
        )
    if opened.page_count < 1:
        raise EmptyDocumentError("PDF has no pages")
    plans = [plan_render(n, facts, limits) for n, facts in enumerate(opened.pages, 1)]
    check_page_sizes([plan.size for plan in plans], limits)
    texts = [usable_text(facts.text, facts.image_share) for facts in opened.pages]
    return plans, texts


@dataclass(frozen=True)
class RenderPlan:
    size: tuple[int, int]  # (width, height) px
    dpi: float


class PdfDocument:
    """An opened PDF: pages measured and text layers read; each page drawn on demand."""

    def __init__(
        self,
        ref: DocumentRef,
        plans: list[RenderPlan],
        texts: list[str | None],
        renderer: PdfRenderer,
        content_type: str,
        metadata: Mapping[str, str],
        grayscale: bool,
    ) -> None:
        self._ref = ref
        self._plans = plans
        self._texts = texts
        self._renderer = renderer
        self._grayscale = grayscale
        self.sizes = [plan.size for plan in plans]
        self.format = content_type
        self.metadata = dict(metadata)
        # the renderer's copy goes when this does, closed or not
        self._forget = weakref.finalize(self, renderer.forget, ref.doc_id)

    @property
    def page_count(self) -> int:
        return len(self._plans)

    def page(self, index: int) -> Page:
        """Page ``index`` (0-based), drawn now."""
        plan = self._plans[index]
        width, height = plan.size
        request = RenderRequest(self._ref.doc_id, index, width, height, self._grayscale)
        image = _expect(self._renderer.render(self._ref, request), Image.Image)
        return Page(index + 1, image, plan.dpi)

    def text_layer(self, index: int) -> str | None:
        return self._texts[index]

    def close(self) -> None:
        """Release the renderer's copy; a render still running for it is stopped."""
        self._forget()


def plan_render(number: int, facts: PageFacts, limits: ImageLimits) -> RenderPlan:
    """The size and resolution page ``number`` is drawn at (see the module docstring)."""
    width_pt, height_pt = facts.width_pt, facts.height_pt
    sides = (width_pt, height_pt)
    if not all(
        math.isfinite(side) and MIN_PAGE_PT <= side <= MAX_PAGE_PT for side in sides
    ):
        raise UnreadableDocumentError(
            f"page {number} is {width_pt:g}x{height_pt:g} pt; PDF allows "
            f"{MIN_PAGE_PT:g} to {MAX_PAGE_PT:g} pt (1/24 in to 200 in) a side"
        )
    long_pt = max(sides)
    fit_dpi = 72.0 * limits.max_side_px / long_pt
    if fit_dpi < MIN_RENDER_DPI:
        raise PixelLimitError(
            f"page {number} is {width_pt / 72:.1f}x{height_pt / 72:.1f} in: its long side "
            f"fits {limits.max_side_px} px (OCR_MAX_SIDE_PX) only at {fit_dpi:.0f} dpi, "
            f"under the {MIN_RENDER_DPI:g} dpi a page needs to be legible"
        )
    dpi = min(limits.render_dpi, fit_dpi)
    if limits.render_max_pixels > 0:
        dpi = min(
            dpi, 72.0 * math.sqrt(limits.render_max_pixels / (width_pt * height_pt))
        )
    scale = dpi / 72.0
    # floor: a side never passes the bound it was fit to; the hundredth of a pixel is
    # for PDFium's float32 sizes (841.92 pt reads 841.91998)
    size = (max(1, int(width_pt * scale + 0.01)), max(1, int(height_pt * scale + 0.01)))
    return RenderPlan(size, dpi)


def usable_text(text: str, image_share: float = 0.0) -> str | None:
    """``text`` as a page's text layer, or None when it is too thin or garbled to trust
    over OCR (the thresholds above); in doubt, OCR: a wrong text layer loses a page."""
    text = _plain(text)
    visible = [c for c in text if not c.isspace()]
    if len(visible) < MIN_TEXT_CHARS:
        return None
    categories = [unicodedata.category(c) for c in visible]
    bad = sum(
        c == "\ufffd" or cat in _BAD_CATEGORIES
        for c, cat in zip(visible, categories, strict=True)
    )
    words = sum(cat[0] in "LN" for cat in categories)
    if bad > MAX_BAD_SHARE * len(visible) or words < MIN_WORD_SHARE * len(visible):
        return None
    if image_share >= IMAGE_PAGE_SHARE and len(visible) < MIN_TEXT_CHARS_OVER_IMAGE:
        return None
    return text


def _plain(text: str) -> str:
    """PDFium's line breaks (CR LF) as LF, trailing spaces and NULs gone."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def _expect(reply: R | Refused, kind: type[R]) -> R:
    """The reply expected, or the refusal it is as a poison error."""
    if isinstance(reply, kind):
        return reply
    if isinstance(reply, Refused) and reply.code == "encrypted":
        raise EncryptedDocumentError(f"PDF is encrypted: {reply.message}")
    if isinstance(reply, Refused):
        raise UnreadableDocumentError(f"PDF cannot be read: {reply.message}")
    raise TypeError(f"the PDF renderer answered {type(reply).__name__}")
