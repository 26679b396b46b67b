"""Broker TLS for real: stunnel in front of the embedded broker, real worker and publisher
processes over KAFKA_SECURITY_PROTOCOL=SSL; a CA that did not sign the broker's
certificate stops both at once with one sentence."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.local.broker import free_port
from consumers.local.demo import sample_scans
from consumers.settings import Settings
from tests.support.tls import Authority, TlsBroker, make_authority, tls_broker
from tests.support.topics import case_settings
from tests.support.workers import WorkerProcess, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with tls_broker(tmp_path_factory.mktemp("tls")) as running:
        yield running


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A CA that signed nothing the broker presents."""
    return make_authority(tmp_path_factory.mktemp("stranger"), "stranger-ca")


@pytest.fixture
async def settings(broker: TlsBroker) -> Settings:
    """This test's own topics and group on the TLS broker, created over TLS."""
    return await case_settings(
        broker.bootstrap_servers,
        partitions=2,
        fetch_max_wait_ms=None,
        security_protocol="SSL",
        ssl_cafile=str(broker.ca.cert),
    )


def tls_env(settings: Settings, cafile: Path | str) -> dict[str, str]:
    return worker_env(
        settings, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(cafile)
    )


def medocr(
    env: dict[str, str], *args: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.tesseract
def test_worker_and_publish_over_tls(settings: Settings, broker: TlsBroker) -> None:
    scan = next(p for p in sample_scans() if p.suffix == ".png")
    worker = WorkerProcess(
        settings,
        "tls",
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(broker.ca.cert),
    )
    try:
        worker.wait_ready(120)
        done = medocr(
            tls_env(settings, broker.ca.cert),
            "publish",
            "--wait",
            "--timeout",
            "180",
            str(scan),
            timeout_s=240,
        )
    finally:
        worker.stop()
    assert done.returncode == 0, done.stdout + done.stderr + worker.log()
    assert f"== {scan.stem}: OK" in done.stdout


@pytest.mark.parametrize("command", [["publish", "--wait"], ["worker"]])
def test_a_wrong_ca_stops_at_once_with_one_sentence(
    settings: Settings, broker: TlsBroker, stranger_ca: Authority, command: list[str]
) -> None:
    args = [*command, str(sample_scans()[0])] if command[0] == "publish" else command
    env = tls_env(settings, stranger_ca.cert)
    env["PORT"] = str(free_port())
    started = time.monotonic()
    done = medocr(env, *args, timeout_s=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    assert done.stderr.splitlines() == [
        "medocr: TLS certificate verification failed for the broker at"
        f" {broker.bootstrap_servers} (unable to get local issuer certificate):"
        f" check that KAFKA_SSL_CAFILE ({stranger_ca.cert}) holds the CA that signed"
        " its certificate"
    ]
