"""LogDrain: a child's output lands in a file that never grows past its bound."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from consumers.local.broker import LogDrain


def drain_bytes(path: Path, chunks: list[bytes], max_bytes: int) -> LogDrain:
    """Write ``chunks`` into a real pipe that a LogDrain reads; return it once at EOF."""
    read_fd, write_fd = os.pipe()
    drain = LogDrain(os.fdopen(read_fd, "rb"), path, max_bytes)
    drain.start()
    with os.fdopen(write_fd, "wb") as writer:
        for chunk in chunks:
            writer.write(chunk)
            writer.flush()
    drain.join(5)
    return drain


def test_everything_lands_in_the_file_below_the_bound(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    drain_bytes(log, [b"ready\n", b"panicked at stream.rs\n"], 1024)
    assert log.read_bytes() == b"ready\npanicked at stream.rs\n"
    assert not (tmp_path / "broker.log.1").exists()


@pytest.mark.parametrize("chunk_bytes", [1, 100, 999, 70_000])
def test_rotation_keeps_one_old_file_and_the_newest_bytes(
    tmp_path: Path, chunk_bytes: int
) -> None:
    log = tmp_path / "broker.log"
    stream = bytes(i % 251 for i in range(300_000))
    chunks = [stream[i : i + chunk_bytes] for i in range(0, len(stream), chunk_bytes)]
    drain_bytes(log, chunks, 4096)
    old = tmp_path / "broker.log.1"
    assert old.stat().st_size == 4096
    assert 0 < log.stat().st_size <= 4096
    kept = old.read_bytes() + log.read_bytes()
    assert stream.endswith(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broker.log", "broker.log.1"]


def test_an_unwritable_log_never_stops_the_reading(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    read_fd, write_fd = os.pipe()
    drain = LogDrain(os.fdopen(read_fd, "rb"), log, 1024)
    drain.start()
    # the first rotation's rename fails (even as root): a non-empty folder is in the way
    (tmp_path / "broker.log.1").mkdir()
    (tmp_path / "broker.log.1" / "keep").touch()
    try:
        # far more than a pipe buffer (64 KiB): a writer blocked on a full pipe
        # would never finish, so this thread's finishing shows the drain kept reading
        writer = threading.Thread(target=os.write, args=(write_fd, b"x" * 1_000_000))
        writer.start()
        writer.join(10)
        assert not writer.is_alive()
    finally:
        os.close(write_fd)
        drain.join(5)
    assert log.stat().st_size == 1024


def test_tail_gives_the_last_characters(tmp_path: Path) -> None:
    drain = drain_bytes(tmp_path / "b.log", [b"one\n", b"two\n", b"three\n"], 1024)
    assert drain.tail(9) == "two\nthree"
