"""A decoded frame as the page an engine reads: upright, 8-bit gray or RGB, bounded."""

from __future__ import annotations

from PIL import Image, ImageOps

from consumers.inputs.base import Page


def to_page(
    number: int, frame: Image.Image, dpi: float | None, max_side_px: int
) -> Page:
    """Page ``number``: upright, 8-bit L or RGB, long side at most ``max_side_px``.

    The image never shares pixels with ``frame``: the next ``seek`` of a multi-page
    file reuses the frame's buffer. ``exif_transpose`` (not in place) always returns a
    new image, the one copy made here; the conversions below return new images too.
    A shrunk page keeps its paper size: its resolution shrinks with it.
    """
    image = _to_8bit(ImageOps.exif_transpose(frame))
    if max(image.size) > max_side_px:  # never the frame's own buffer: shrink in place
        width = image.width
        image.thumbnail((max_side_px, max_side_px), Image.Resampling.LANCZOS)
        factor = image.width / width
        dpi = dpi * factor if dpi is not None else None
    return Page(number, image, dpi)


def _to_8bit(page: Image.Image) -> Image.Image:
    mode = page.mode
    if mode in ("L", "RGB"):
        return page
    if mode == "1":
        return page.convert("L")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit gray: scale the real range to 0..255 rather than clip at 255.
        wide = page.convert("I")
        low, high = (float(v) for v in wide.getextrema() if isinstance(v, int | float))
        span = max(high - low, 1.0)
        return wide.point(lambda v: (v - low) * 255 / span).convert("L")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in page.info):
        rgba = page.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if mode == "P" and _gray_palette(page):
        return page.convert("L")  # a third of RGB's memory, the same pixels
    return page.convert("RGB")  # CMYK, YCbCr, palette without transparency, ...


def _gray_palette(page: Image.Image) -> bool:
    """Every palette entry is a gray (scanners write bilevel and gray pages so)."""
    palette = page.getpalette() or []
    return all(
        palette[i] == palette[i + 1] == palette[i + 2]
        for i in range(0, len(palette) - 2, 3)
    )
