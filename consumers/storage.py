"""Read the scan a request names by URI: a ``file://`` path below an allowed folder.

Only regular files are read. The path is opened without blocking and the *opened*
descriptor is checked, so a FIFO, a device or a socket placed in a shared folder is
refused at once instead of blocking a thread in ``open()`` or filling memory from
``/dev/zero``. What is read is capped at the size limit (plus one byte to tell), never
what ``stat`` promised. The read still blocks on a hung network filesystem: the caller
runs it in a thread it can walk away from (``read_uri_within``).

Error messages go back to the sender in the result: they name the reason, never the
file's contents.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from consumers.errors import DocumentTooLargeError, ImageUriError
from consumers.threads import run_abandonable

# O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
# O_NOFOLLOW: the path was resolved already; a final component swapped for a symbolic
# link since then fails to open rather than leading outside the roots.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW
_CHUNK_BYTES = 1024 * 1024
_LOCAL_HOSTS = ("", "localhost")


def read_uri(uri: str, roots: tuple[str, ...], max_bytes: int) -> bytes:
    """The bytes of the regular file ``uri`` names below one of ``roots`` (blocking).

    ``roots`` are absolute folders with symbolic links resolved; none = refused.
    """
    path = _local_path(uri, roots)
    try:
        fd = os.open(path, _OPEN_FLAGS)
        try:
            return _read_regular(fd, max_bytes)
        finally:
            os.close(fd)
    except OSError as exc:  # TimeoutError (ETIMEDOUT on NFS) included: it is one
        raise ImageUriError(f"cannot read image_uri: {exc.strerror}") from exc


async def read_uri_within(
    uri: str, roots: tuple[str, ...], max_bytes: int, timeout_s: float
) -> bytes:
    """``read_uri`` in a thread abandoned after ``timeout_s`` seconds."""
    return await read_within(
        functools.partial(read_uri, uri, roots, max_bytes), timeout_s
    )


async def read_within(read: Callable[[], bytes], timeout_s: float) -> bytes:
    """``read()`` in a daemon thread; ``ImageUriError`` if it outlasts ``timeout_s``.

    The thread is left behind, not joined: a read stuck on a hung filesystem must not
    hold the worker's exit.
    """
    try:
        return await run_abandonable(read, timeout_s=timeout_s, name="read-uri")
    except TimeoutError:
        raise ImageUriError(
            f"reading image_uri took longer than {timeout_s:g} s "
            "(OCR_URI_READ_TIMEOUT_S)"
        ) from None


def _local_path(uri: str, roots: tuple[str, ...]) -> str:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ImageUriError(
            f"unsupported image_uri scheme {parsed.scheme!r} (only file://)"
        )
    if parsed.netloc.lower() not in _LOCAL_HOSTS:
        raise ImageUriError(
            f"image_uri names host {parsed.netloc!r}; only local files "
            "(file:///path or file://localhost/path) can be read"
        )
    if not roots:
        raise ImageUriError("file:// image URIs are disabled (set OCR_FILE_URI_ROOTS)")
    name = unquote(parsed.path)
    if not name.startswith("/"):
        raise ImageUriError("image_uri must name an absolute path")
    if "\x00" in name:
        raise ImageUriError("image_uri has a NUL byte in its path")
    path = os.path.realpath(name)
    if not any(Path(path).is_relative_to(root) for root in roots):
        raise ImageUriError("image_uri is outside OCR_FILE_URI_ROOTS")
    return path


def _read_regular(fd: int, max_bytes: int) -> bytes:
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        raise ImageUriError("image_uri is not a regular file")
    if status.st_size > max_bytes:
        raise _too_large(max_bytes)
    # A regular file never waits for a writer; blocking reads avoid EAGAIN from the
    # few filesystems that honour O_NONBLOCK on files.
    os.set_blocking(fd, True)
    chunks: list[bytes] = []
    remaining = max_bytes + 1  # the file may have grown since fstat
    while remaining > 0:
        chunk = os.read(fd, min(remaining, _CHUNK_BYTES))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    if remaining <= 0:
        raise _too_large(max_bytes)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> DocumentTooLargeError:
    return DocumentTooLargeError(
        f"document is more than {max_bytes} bytes; the limit is {max_bytes}"
    )
