"""Reading ``file://`` scans: real files, FIFOs, devices and links in a temporary folder."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.errors import DocumentTooLargeError, ImageUriError, PoisonRecordError
from consumers.settings import LimitSettings
from consumers.storage import read_uri, read_uri_within, read_within

SCAN = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
LIMIT = 4096
TIMEOUT_S = 5.0


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.png").write_bytes(SCAN)
    return folder


def uri_of(path: Path | str) -> str:
    return "file://" + str(path).replace("%", "%25").replace(" ", "%20")


def roots_of(*folders: Path | str) -> tuple[str, ...]:
    return tuple(os.path.realpath(folder) for folder in folders)


async def timed_read(uri: str, roots: tuple[str, ...]) -> tuple[float, Exception]:
    """Seconds ``read_uri_within`` took to refuse ``uri``, and its error."""
    started = time.monotonic()
    with pytest.raises(PoisonRecordError) as refused:
        await read_uri_within(uri, roots, LIMIT, TIMEOUT_S)
    return time.monotonic() - started, refused.value


def test_a_regular_file_below_a_root_is_read(root: Path) -> None:
    scan = root / "a b%.png"
    scan.write_bytes(SCAN)
    assert read_uri(uri_of(scan), roots_of(root), LIMIT) == SCAN


def test_localhost_is_this_host(root: Path) -> None:
    uri = "file://localhost" + str(root / "a.png")
    assert read_uri(uri, roots_of(root), LIMIT) == SCAN


def test_a_link_inside_the_root_to_a_file_inside_it_is_followed(root: Path) -> None:
    (root / "link.png").symlink_to(root / "a.png")
    assert read_uri(uri_of(root / "link.png"), roots_of(root), LIMIT) == SCAN


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.org/a.png", "unsupported image_uri scheme 'http'"),
        ("https://example.org/a.png", "unsupported image_uri scheme 'https'"),
        ("s3://bucket/a.png", "unsupported image_uri scheme 's3'"),
        ("file://otherhost{root}/a.png", "names host 'otherhost'"),
        ("file://localhost:8080{root}/a.png", "names host 'localhost:8080'"),
        ("file:a.png", "must name an absolute path"),
        ("file://{root}/a%00.png", "NUL byte"),
        ("file://{root}/../outside.png", "outside OCR_FILE_URI_ROOTS"),
        ("file://{root}-evil/a.png", "outside OCR_FILE_URI_ROOTS"),
        ("file://{root}/out.png", "outside OCR_FILE_URI_ROOTS"),  # link leading out
        ("file:///dev/zero", "outside OCR_FILE_URI_ROOTS"),
        ("file:///etc/passwd", "outside OCR_FILE_URI_ROOTS"),
        ("file://{root}/missing.png", "cannot read image_uri: No such file"),
        ("file://{root}", "not a regular file"),  # the folder itself
    ],
)
def test_refusals(root: Path, uri: str, message: str) -> None:
    (root.parent / "outside.png").write_bytes(SCAN)
    (root / "out.png").symlink_to(root.parent / "outside.png")
    evil = root.parent / "scans-evil"
    evil.mkdir()
    (evil / "a.png").write_bytes(SCAN)
    with pytest.raises(ImageUriError, match=message) as refused:
        read_uri(uri.format(root=root), roots_of(root), LIMIT)
    assert str(root) not in str(refused.value)  # no path in what the sender sees


def test_no_roots_means_file_uris_are_disabled(root: Path) -> None:
    with pytest.raises(ImageUriError, match="disabled \\(set OCR_FILE_URI_ROOTS\\)"):
        read_uri(uri_of(root / "a.png"), (), LIMIT)


def test_every_root_of_the_setting_is_allowed(tmp_path: Path) -> None:
    first, second = tmp_path / "x", tmp_path / "y"
    for folder in (first, second):
        folder.mkdir()
        (folder / "a.png").write_bytes(folder.name.encode())
    roots = LimitSettings(file_uri_roots=f" {first} , {second}").uri_roots()
    assert read_uri(uri_of(first / "a.png"), roots, LIMIT) == b"x"
    assert read_uri(uri_of(second / "a.png"), roots, LIMIT) == b"y"
    with pytest.raises(ImageUriError, match="outside"):
        read_uri(uri_of(tmp_path / "a.png"), roots, LIMIT)


@pytest.fixture
def fifo(root: Path) -> Path:
    path = root / "fifo.png"
    os.mkfifo(path)
    return path


async def test_a_fifo_without_a_writer_is_refused_at_once(fifo: Path) -> None:
    took_s, error = await timed_read(uri_of(fifo), roots_of(fifo.parent))
    assert isinstance(error, ImageUriError)
    assert "not a regular file" in str(error)
    assert took_s < 1.0


@pytest.fixture
def writer(fifo: Path) -> Iterator[int]:
    # O_RDWR opens a FIFO without waiting for a reader (Linux).
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    os.write(fd, SCAN)
    yield fd
    os.close(fd)


async def test_a_fifo_with_a_writer_is_refused_unread(fifo: Path, writer: int) -> None:
    took_s, error = await timed_read(uri_of(fifo), roots_of(fifo.parent))
    assert "not a regular file" in str(error)
    assert took_s < 1.0
    assert os.read(writer, len(SCAN) + 1) == SCAN  # nothing was taken out of it


@pytest.fixture
def device_root(root: Path) -> tuple[str, Path]:
    """A folder holding a ``/dev/zero`` node: its own device node when root."""
    if os.geteuid() != 0:
        return "/dev", Path("/dev/zero")
    node = root / "zero.png"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    return str(root), node


async def test_a_character_device_is_refused_not_read_forever(
    device_root: tuple[str, Path],
) -> None:
    folder, node = device_root
    took_s, error = await timed_read(uri_of(node), roots_of(folder))
    assert "not a regular file" in str(error)
    assert took_s < 1.0


async def test_dev_zero_is_refused_even_below_a_root() -> None:
    took_s, error = await timed_read("file:///dev/zero", roots_of("/dev"))
    assert "not a regular file" in str(error)
    assert took_s < 1.0


def test_a_file_of_exactly_the_limit_is_read_one_more_byte_is_not(root: Path) -> None:
    (root / "exact.png").write_bytes(b"x" * LIMIT)
    (root / "over.png").write_bytes(b"x" * (LIMIT + 1))
    assert read_uri(uri_of(root / "exact.png"), roots_of(root), LIMIT) == b"x" * LIMIT
    with pytest.raises(DocumentTooLargeError, match=f"more than {LIMIT} bytes"):
        read_uri(uri_of(root / "over.png"), roots_of(root), LIMIT)


def test_a_huge_sparse_file_is_refused_without_reading_it(root: Path) -> None:
    sparse = root / "sparse.png"
    with sparse.open("wb") as out:
        out.truncate(2 * 1024**3)
    started = time.monotonic()
    with pytest.raises(DocumentTooLargeError):
        read_uri(uri_of(sparse), roots_of(root), 20 * 1024 * 1024)
    assert time.monotonic() - started < 1.0


async def test_a_read_that_hangs_is_abandoned_at_the_time_limit() -> None:
    release = threading.Event()  # a hung filesystem that answers when the test ends

    def hung_read() -> bytes:
        release.wait(60)
        return SCAN

    started = time.monotonic()
    try:
        with pytest.raises(ImageUriError, match=r"longer than 0\.5 s \(OCR_URI_READ"):
            await read_within(hung_read, 0.5)
    finally:
        release.set()
    assert 0.5 <= time.monotonic() - started < 2.0


async def test_a_read_within_the_time_limit_returns_the_bytes(root: Path) -> None:
    uri = uri_of(root / "a.png")
    assert await read_uri_within(uri, roots_of(root), LIMIT, TIMEOUT_S) == SCAN
