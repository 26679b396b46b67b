"""PDF bytes built in memory for tests: image pages, born-digital text, hostile files.

Text pages are written by hand so no font file is needed: Latin-1 text uses the standard
Helvetica (PDFium draws it with its built-in substitute), anything else (Korean) a Type0
font whose codes are the characters' UTF-16 units, mapped back by a /ToUnicode CMap, so
the text layer reads right on any machine. ``image_pdf`` is Pillow's PDF writer.
``TrapWorkbench`` is a renderer child's workbench that crashes or hangs on cue.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image

from consumers.inputs.pdf_workbench import (
    Canvas,
    OpenRequest,
    PdfWorkbench,
    Reply,
    Request,
)

A4_PT = (595.0, 842.0)
LETTER_PT = (612.0, 792.0)


def image_pdf(pages: Sequence[Image.Image], dpi: float = 150.0) -> bytes:
    """One page per image, each ``image.size / dpi`` inches (Pillow's PDF writer)."""
    out = io.BytesIO()
    first, *rest = pages
    first.save(out, "PDF", save_all=True, append_images=rest, resolution=dpi)
    return out.getvalue()


def text_pdf(
    lines: Sequence[str], *, size: tuple[float, float] = A4_PT, font_size: float = 12.0
) -> bytes:
    """One born-digital page of ``lines``, in any script (``build_pdf`` for more)."""
    return build_pdf([PdfPage(lines=tuple(lines), size=size, font_size=font_size)])


@dataclass(frozen=True)
class PdfPage:
    """What one page of ``build_pdf`` holds."""

    lines: tuple[str, ...] = ()
    size: tuple[float, float] = A4_PT  # media box width, height in points
    font_size: float = 12.0
    rotate: int = 0  # the page's /Rotate
    crop_box: tuple[float, float, float, float] | None = None
    image: Image.Image | None = None  # an 8-bit gray image covering the whole page
    invisible_text: bool = False  # text render mode 3: an OCR layer over a scan


def build_pdf(
    pages: Sequence[PdfPage], *, encrypt: tuple[str, str] | None = None
) -> bytes:
    """A PDF of ``pages``; ``encrypt``: (user, owner) passwords, RC4 40-bit (R2)."""
    writer = _Writer()
    catalog = writer.reserve()
    tree = writer.reserve()
    helvetica = writer.add(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica"
        b" /Encoding /WinAnsiEncoding >>"
    )
    kids = [_add_page(writer, page, tree, helvetica) for page in pages]
    writer.put(catalog, b"<< /Type /Catalog /Pages %d 0 R >>" % tree)
    writer.put(tree, _page_tree(kids))
    return writer.finish(catalog, encrypt)


def many_pages_pdf(count: int) -> bytes:
    """``count`` tiny pages that share one content stream: 10,000 pages in ~1 MB."""
    writer = _Writer()
    catalog = writer.reserve()
    tree = writer.reserve()
    content = writer.add(_stream(b"0 0 m 1 1 l S"))
    page = b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 100 100] /Contents %d 0 R >>"
    kids = [writer.add(page % (tree, content)) for _ in range(count)]
    writer.put(catalog, b"<< /Type /Catalog /Pages %d 0 R >>" % tree)
    writer.put(tree, _page_tree(kids))
    return writer.finish(catalog)


def zero_page_pdf() -> bytes:
    return build_pdf([])


def encrypted_pdf(
    user_password: str = "secret",  # noqa: S107 - a test file's password
    owner_password: str = "owner",  # noqa: S107
) -> bytes:
    """A one-page text PDF under the standard security handler (RC4, 40-bit)."""
    page = PdfPage(lines=("Encrypted patient record", "Second line of text here"))
    return build_pdf([page], encrypt=(user_password, owner_password))


def _add_page(writer: _Writer, page: PdfPage, tree: int, helvetica: int) -> int:
    width, height = page.size
    resources = b"/Font << /F1 %d 0 R /F2 %d 0 R >>" % (
        helvetica,
        _type0_font(writer, page),
    )
    content = b""
    if page.image is not None:
        gray = page.image.convert("L")
        image = writer.add(
            _stream(
                zlib.compress(gray.tobytes()),
                b"/Type /XObject /Subtype /Image /Width %d /Height %d"
                b" /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode"
                % gray.size,
            )
        )
        resources += b" /XObject << /Im1 %d 0 R >>" % image
        content += b"q %s 0 0 %s 0 0 cm /Im1 Do Q\n" % (_num(width), _num(height))
    content += _text_ops(page)
    box = b"/MediaBox [0 0 %s %s]" % (_num(width), _num(height))
    if page.crop_box is not None:
        box += b" /CropBox [%s]" % b" ".join(_num(v) for v in page.crop_box)
    if page.rotate:
        box += b" /Rotate %d" % page.rotate
    contents = writer.add(_stream(content))
    return writer.add(
        b"<< /Type /Page /Parent %d 0 R %s /Resources << %s >> /Contents %d 0 R >>"
        % (tree, box, resources, contents)
    )


def _text_ops(page: PdfPage) -> bytes:
    if not page.lines:
        return b""
    leading = page.font_size * 1.4
    ops = [b"BT", b"3 Tr" if page.invisible_text else b"0 Tr"]
    top = page.size[1] - 72 - page.font_size
    ops.append(b"72 %s Td %s TL" % (_num(top), _num(leading)))
    for number, line in enumerate(page.lines):
        font, shown = _shown(line)
        ops.append(
            b"/%s %s Tf %s%s"
            % (font, _num(page.font_size), shown, b" Tj" if number == 0 else b" '")
        )
    ops.append(b"ET")
    return b"\n".join(ops) + b"\n"


def _shown(line: str) -> tuple[bytes, bytes]:
    """The font and the string operand that show ``line``."""
    try:
        latin = line.encode("cp1252")
    except UnicodeEncodeError:
        return b"F2", b"<" + line.encode("utf-16-be").hex().encode() + b">"
    escaped = latin.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return b"F1", b"(" + escaped + b")"


def _type0_font(writer: _Writer, page: PdfPage) -> int:
    """A Type0 font whose 2-byte codes are UTF-16 units, for the page's non-Latin text."""
    units = sorted({ord(c) for line in page.lines for c in line if ord(c) < 0x10000})
    cmap = [
        b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap",
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
        b"/CMapName /Adobe-Identity-UCS def /CMapType 2 def",
        b"1 begincodespacerange <0000> <FFFF> endcodespacerange",
    ]
    for start in range(0, len(units), 100):  # at most 100 entries per block
        chunk = units[start : start + 100]
        cmap.append(b"%d beginbfchar" % len(chunk))
        cmap += [b"<%04X> <%04X>" % (unit, unit) for unit in chunk]
        cmap.append(b"endbfchar")
    cmap.append(b"endcmap CMapName currentdict /CMap defineresource pop end end")
    to_unicode = writer.add(_stream(b"\n".join(cmap)))
    descendant = writer.add(
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /NanumGothic"
        b" /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >>"
        b" /FontDescriptor << /Type /FontDescriptor /FontName /NanumGothic /Flags 4"
        b" /FontBBox [0 -200 1000 800] /ItalicAngle 0 /Ascent 800 /Descent -200"
        b" /CapHeight 700 /StemV 80 >> /DW 1000 >>"
    )
    return writer.add(
        b"<< /Type /Font /Subtype /Type0 /BaseFont /NanumGothic /Encoding /Identity-H"
        b" /DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>" % (descendant, to_unicode)
    )


def _page_tree(kids: Sequence[int]) -> bytes:
    refs = b" ".join(b"%d 0 R" % kid for kid in kids)
    return b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids))


def _stream(body: bytes, entries: bytes = b"") -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (entries, len(body), body)


def _num(value: float) -> bytes:
    return (b"%.4f" % value).rstrip(b"0").rstrip(b".")


class _Writer:
    """Numbered objects, then the cross-reference table and the trailer."""

    def __init__(self) -> None:
        self._objects: list[bytes | None] = []

    def reserve(self) -> int:
        self._objects.append(None)
        return len(self._objects)

    def add(self, body: bytes) -> int:
        number = self.reserve()
        self.put(number, body)
        return number

    def put(self, number: int, body: bytes) -> None:
        self._objects[number - 1] = body

    def finish(self, root: int, encrypt: tuple[str, str] | None = None) -> bytes:
        file_id = hashlib.md5(b"medocr test", usedforsecurity=False).digest()
        trailer = b"/Root %d 0 R /ID [<%s> <%s>]" % (
            root,
            file_id.hex().encode(),
            file_id.hex().encode(),
        )
        bodies = [body or b"null" for body in self._objects]
        if encrypt is not None:
            security = _Rc4Security(*encrypt, file_id)
            bodies = [security.encrypt(n, body) for n, body in enumerate(bodies, 1)]
            bodies.append(security.dictionary())
            trailer += b" /Encrypt %d 0 R" % len(bodies)
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(bodies, 1):
            offsets.append(len(out))
            out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
        out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
        out += b"trailer\n<< /Size %d %s >>\n" % (len(bodies) + 1, trailer)
        out += b"startxref\n%d\n%%%%EOF\n" % xref
        return bytes(out)


_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


class _Rc4Security:
    """The standard security handler, revision 2 (PDF 1.7, 7.6.3, algorithms 2-4)."""

    def __init__(self, user: str, owner: str, file_id: bytes) -> None:
        owner_key = _md5(_padded(owner))[:5]
        self._owner_entry = _rc4(owner_key, _padded(user))
        self._permissions = -4
        self._key = _md5(
            _padded(user)
            + self._owner_entry
            + self._permissions.to_bytes(4, "little", signed=True)
            + file_id
        )[:5]

    def dictionary(self) -> bytes:
        user_entry = _rc4(self._key, _PAD)
        return b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
            self._owner_entry.hex().encode(),
            user_entry.hex().encode(),
            self._permissions,
        )

    def encrypt(self, number: int, body: bytes) -> bytes:
        """The object's stream encrypted (the test objects have no other strings)."""
        head, marker, rest = body.partition(b"\nstream\n")
        if not marker:
            return body
        plain = rest.removesuffix(b"\nendstream")
        key = _md5(self._key + number.to_bytes(3, "little") + b"\x00\x00")[:10]
        cipher = _rc4(key, plain)
        length = b"/Length %d" % len(plain)
        head = head.replace(length, b"/Length %d" % len(cipher))
        return head + marker + cipher + b"\nendstream"


def _padded(password: str) -> bytes:
    return (password.encode("latin-1") + _PAD)[:32]


def _md5(raw: bytes) -> bytes:
    return hashlib.md5(raw, usedforsecurity=False).digest()


def _rc4(key: bytes, raw: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in raw:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


# --- a renderer child that fails on cue (for the pool's crash and hang tests) ------

CRASH_MARK = b"%medocr-test:crash-on-render\n"
HANG_MARK = b"%medocr-test:hang-on-render\n"


def trapped_pdf(mark: bytes) -> bytes:
    """A good one-page PDF that ``TrapWorkbench`` crashes or hangs on when drawing."""
    return text_pdf(["A page the renderer never finishes"]) + mark


class TrapWorkbench(PdfWorkbench):
    """A workbench that dies (SIGABRT) or hangs drawing a PDF marked for it."""

    def __init__(self, canvas: Canvas) -> None:
        super().__init__(canvas)
        self._traps: dict[int, bytes] = {}

    def handle(self, request: Request, forget: Iterable[int] = ()) -> Reply:
        if isinstance(request, OpenRequest):
            for mark in (CRASH_MARK, HANG_MARK):
                if request.raw.endswith(mark):
                    self._traps[request.doc_id] = mark
        elif self._traps.get(request.doc_id) == CRASH_MARK:
            os.abort()
        elif self._traps.get(request.doc_id) == HANG_MARK:
            time.sleep(3600)
        return super().handle(request, forget)


class BrokenWorkbench(PdfWorkbench):
    """A workbench that cannot even start: a renderer child that never gets ready."""

    def __init__(self, canvas: Canvas) -> None:
        raise RuntimeError("this renderer child is broken on purpose")
