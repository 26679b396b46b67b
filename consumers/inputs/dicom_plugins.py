"""Which pixel-data plugins pydicom may use here, and GDCM run in a child process.

Hostile frames found two plugins that take the worker down with them: GDCM throws a C++
exception on a broken JPEG that nothing catches (the process aborts), and pylibjpeg-rle
panics (a ``BaseException``). So pylibjpeg-rle is never used (pydicom's own RLE decoder
is), and GDCM never runs in the worker: it decodes only what no other licence-compatible
plugin can (JPEG Lossless, 12-bit JPEG Extended), one frame per child process. pydicom's
own GDCM plugin also refuses 12-bit JPEG Extended, which GDCM decodes correctly (its
8-bit codec complains on stderr, then its 12-bit codec reads the frame).

This file runs as that child too (``python -I -P dicom_plugins.py``: standard library
and GDCM only, no package imports): a JSON header line and the frame on stdin, the decoded
frame on stdout.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeRunner

LABEL = "gdcm-child"
# pydicom's plugin interface: what this plugin needs, per transfer syntax
_JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
_GDCM_ONLY = (_JPEG_EXTENDED, "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
DECODER_DEPENDENCIES = {uid: ("gdcm>=3.0.10",) for uid in _GDCM_ONLY}
_RLE = "1.2.840.10008.1.2.5"
# A worker abandons a decode after OCR_DECODE_TIMEOUT_S (60 s by default); the child
# must not outlive it by much.
_CHILD_TIMEOUT_S = 60.0


def configure() -> None:
    """Set pydicom's decoders as above (idempotent; not thread-safe: call at start)."""
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import AllTransferSyntaxes

    for uid in AllTransferSyntaxes:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:  # pydicom decodes nothing in this syntax
            continue
        for label in ("gdcm", "pylibjpeg") if uid == _RLE else ("gdcm",):
            with contextlib.suppress(ValueError):  # not there: not installed
                decoder.remove_plugin(label)
        if uid in _GDCM_ONLY:
            with contextlib.suppress(ValueError):  # already added
                decoder.add_plugin(LABEL, (__name__, "decode_frame"))


def is_available(uid: str) -> bool:
    try:
        _gdcm()
    except ImportError:
        return False
    return uid in _GDCM_ONLY


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One frame, decoded by GDCM in a child process (pydicom's plugin signature)."""
    header = {
        "syntax": str(runner.transfer_syntax),
        "rows": runner.rows,
        "columns": runner.columns,
        "samples": runner.samples_per_pixel,
        "planar": runner.planar_configuration if runner.samples_per_pixel > 1 else 0,
        "bits_allocated": runner.bits_allocated,
        "bits_stored": runner.bits_stored,
        "signed": runner.pixel_representation,
        "photometric": str(runner.photometric_interpretation),
    }
    child = subprocess.run(
        # -I: no environment, no user site; -P: this folder's modules shadow nothing
        [sys.executable, "-I", "-P", __file__],
        input=json.dumps(header).encode() + b"\n" + bytes(src),
        capture_output=True,
        timeout=_CHILD_TIMEOUT_S,
        check=False,
    )
    if child.returncode != 0:
        said = child.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"GDCM could not decode the frame (exit {child.returncode}): "
            f"{said[-1][:200] if said else 'no message'}"
        )
    expected = int(runner.frame_length(unit="bytes"))
    if len(child.stdout) < expected:
        raise ValueError(f"GDCM returned {len(child.stdout)} bytes of {expected}")
    return child.stdout[:expected]


def _decode(header: dict[str, Any], src: bytes) -> bytes:
    """The child's work: pydicom's GDCM plugin, less its 12-bit refusal."""
    gdcm = _gdcm()

    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((header["columns"], header["rows"], 1))
    image.SetDataElement(element)
    photometric = gdcm.PhotometricInterpretation.GetPIType(header["photometric"])
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(photometric))
    if header["samples"] > 1:
        image.SetPlanarConfiguration(header["planar"])
    syntax = gdcm.TransferSyntax.GetTSType(header["syntax"])
    image.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    bits_stored = header["bits_stored"]
    image.SetPixelFormat(
        gdcm.PixelFormat(
            header["samples"],
            header["bits_allocated"],
            bits_stored,
            bits_stored - 1,
            header["signed"],
        )
    )
    buffer = image.GetBuffer()  # char* as str; None when GDCM could not decode
    if buffer is None:
        raise ValueError("GDCM decoded nothing")
    frame: bytes = buffer.encode("utf-8", "surrogateescape")
    return frame


def _gdcm() -> Any:
    import gdcm  # type: ignore[import-untyped]

    return gdcm


def _child() -> int:
    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    sys.stdout.buffer.write(_decode(header, stdin.read()))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
