"""A decoded DICOM frame as an 8-bit picture: rescale, window, palette, colour.

Grey frames go through the Modality LUT (rescale slope/intercept or a table), then the
VOI transform (the first window, else a VOI LUT table, else the frame's own range), then
MONOCHROME1's inversion; colour frames are scaled from their bits stored to 8 bits. All
arithmetic is float32 on one frame: a frame's pixels are bounded by the page limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    convert_color_space,
)

Array = npt.NDArray[np.generic]
Floats = npt.NDArray[np.float32]
Bytes = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FrameFormat:
    """The Image Pixel module values a frame is drawn with, checked at open."""

    rows: int
    columns: int
    samples: int  # 1 or 3
    bits_allocated: int  # 1, 8, 16 or 32
    bits_stored: int
    signed: bool
    photometric: str
    frames: int


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str  # LINEAR, LINEAR_EXACT or SIGMOID


def frame_image(
    frame: Array, photometric: str, ds: Dataset, fmt: FrameFormat
) -> Image.Image:
    """``frame`` (one frame as decoded, ``photometric`` as the decoder left it: YBR_FULL
    not yet converted) as an 8-bit L or RGB image."""
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        return Image.fromarray(_full_range(rgb, 8 if rgb.dtype == np.uint8 else 16))
    if frame.ndim == 3 and photometric in ("YBR_FULL", "YBR_FULL_422"):
        return _ybr_to_rgb(frame, photometric, fmt.bits_stored)
    if frame.ndim == 3:  # RGB; the JPEG 2000 codec converted YBR_ICT and YBR_RCT
        return Image.fromarray(_full_range(frame, fmt.bits_stored))
    gray = _gray(frame, ds, fmt)
    if photometric == "MONOCHROME1":  # the lowest value is white
        np.subtract(255, gray, out=gray)
    return Image.fromarray(gray)


def _ybr_to_rgb(frame: Array, photometric: str, bits: int) -> Image.Image:
    """YBR_FULL is JPEG's YCbCr: Pillow converts 8 bits in C (pydicom's float64 numpy
    conversion took 290 ms of an A4 page's 460)."""
    if frame.dtype != np.uint8:
        rgb = convert_color_space(frame, photometric, "RGB")
        return Image.fromarray(_full_range(rgb, bits))
    height, width = frame.shape[:2]
    ycbcr = Image.frombuffer(
        "YCbCr", (width, height), np.ascontiguousarray(frame), "raw", "YCbCr", 0, 1
    )
    return ycbcr.convert("RGB")


def _gray(frame: Array, ds: Dataset, fmt: FrameFormat) -> Bytes:
    if fmt.bits_allocated == 1:
        return np.multiply(frame, 255, dtype=np.uint8)
    window = _window(ds)
    plain = frame.dtype == np.uint8 and fmt.bits_stored == 8
    if window is None and "VOILUTSequence" not in ds and plain and _no_rescale(ds):
        return np.ascontiguousarray(frame, dtype=np.uint8)  # an 8-bit scan as it is
    values = _modality(frame, ds)
    if window is not None:
        return _apply_window(values, window)
    if "VOILUTSequence" in ds:
        return _apply_voi_table(values, ds)
    low, high = float(values.min()), float(values.max())
    if high <= low:  # a flat frame: draw it against the range it could have had
        low = -(2 ** (fmt.bits_stored - 1)) if fmt.signed else 0
        high = low + 2**fmt.bits_stored - 1
    return _to_bytes((values - low) * (255 / (high - low)))


def _modality(frame: Array, ds: Dataset) -> Floats:
    """Stored values as the VOI transform expects them (PS3.3 C.11.1)."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(frame, ds), dtype=np.float32)
    values = frame.astype(np.float32)
    slope = _number(ds, "RescaleSlope", 1.0)
    intercept = _number(ds, "RescaleIntercept", 0.0)
    if slope != 1.0:
        values *= slope
    if intercept != 0.0:
        values += intercept
    return values


def _no_rescale(ds: Dataset) -> bool:
    if "ModalityLUTSequence" in ds:
        return False
    slope = _number(ds, "RescaleSlope", 1.0)
    return slope == 1.0 and _number(ds, "RescaleIntercept", 0.0) == 0.0


def _window(ds: Dataset) -> Window | None:
    """The first window the object states, or None when it states no usable one."""
    center = _number(ds, "WindowCenter", math.nan)
    width = _number(ds, "WindowWidth", math.nan)
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if math.isnan(center) or math.isnan(width):
        return None
    if width < 1 if function == "LINEAR" else width <= 0:  # PS3.3 C.11.2.1.2
        return None
    return Window(center, width, function)


def _apply_window(values: Floats, window: Window) -> Bytes:
    """PS3.3 C.11.2.1.2 and C.11.2.1.3, into 0..255."""
    center, width = window.center, window.width
    if window.function == "SIGMOID":
        values -= center
        values *= -4.0 / width
        np.exp(values, out=values)
        values += 1.0
        return _to_bytes(np.divide(255.0, values, out=values))
    if window.function == "LINEAR":
        center, width = center - 0.5, width - 1
    if width == 0:  # LINEAR with width 1: a threshold
        return np.where(values > center, 255, 0).astype(np.uint8)
    values -= center - width / 2
    values *= 255 / width
    return _to_bytes(values)


def _apply_voi_table(values: Floats, ds: Dataset) -> Bytes:
    """The first VOI LUT table; its output spans its descriptor's bits."""
    table = ds.VOILUTSequence[0]
    descriptor = table.get("LUTDescriptor") or [0, 0, 16]
    bits = int(descriptor[2]) if len(descriptor) > 2 else 16
    mapped = np.asarray(apply_voi(values, ds), dtype=np.float32)
    return _to_bytes(mapped * (255 / max(2 ** min(bits, 32) - 1, 1)))


def _full_range(frame: Array, bits: int) -> Bytes:
    """Values of ``bits`` bits scaled to 0..255."""
    if frame.dtype == np.uint8 and bits == 8:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    return _to_bytes(frame.astype(np.float32) * (255 / (2**bits - 1)))


def _to_bytes(values: Floats) -> Bytes:
    np.clip(values, 0, 255, out=values)
    return np.rint(values, out=values).astype(np.uint8)


def _number(ds: Dataset, keyword: str, default: float) -> float:
    """A DS value (the first of several) as a finite float, else ``default``."""
    try:
        value = ds.get(keyword)
        if isinstance(value, MultiValue | list):
            value = value[0] if value else None
        number = float(value) if value is not None and value != "" else default
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default
