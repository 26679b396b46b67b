"""docker-compose.yml: valid against the Compose Specification schema, and consistent
with the worker's settings, topics and size limits."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.settings import KafkaSettings, LimitSettings
from tests.deploy.manifests import (
    COMPOSE,
    allowed_env_names,
    load_compose,
    medocr_services,
    seconds,
)
from tests.deploy.tools import REPO

pytestmark = pytest.mark.deploy

MIB = 1024 * 1024
SECRET_NAMES = ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "API_KEY")


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    # The Compose Specification schema vendored in check-jsonschema: no download.
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
         "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


def test_compose_file_matches_the_compose_spec() -> None:
    done = _check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_misspelt_key(tmp_path: Path) -> None:
    compose = load_compose()
    compose["services"]["worker-cpu"]["stop_grace_perod"] = "120s"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose), encoding="utf-8")
    done = _check_jsonschema(broken)
    assert done.returncode != 0
    assert "stop_grace_perod" in done.stdout + done.stderr


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, so merges stay readable"
    return {str(key): str(value) for key, value in env.items()}


def test_worker_containers_set_only_settings_the_worker_reads() -> None:
    services = medocr_services(load_compose())
    assert {"worker", "worker-cpu", "publisher"} <= set(services)
    unknown = {
        name: sorted(set(_env(service)) - allowed_env_names())
        for name, service in services.items()
    }
    assert unknown == {name: [] for name in services}


def test_secrets_come_from_the_environment() -> None:
    for name, service in medocr_services(load_compose()).items():
        env = _env(service)
        for secret in SECRET_NAMES:
            if secret in env:
                assert re.fullmatch(rf"\$\{{{secret}(:?-|:\?[^}}]+)\}}", env[secret]), (
                    name,
                    secret,
                )


def test_workers_refuse_to_start_without_an_api_key() -> None:
    """The sidecar listens on 0.0.0.0: /metrics is never served without a key."""
    services = load_compose()["services"]
    for name in ("worker", "worker-cpu"):
        env = _env(services[name])
        assert env["HOST"] == "0.0.0.0", name
        assert re.fullmatch(r"\$\{API_KEY:\?[^}]+\}", env["API_KEY"]), name


def test_prometheus_scrapes_with_the_workers_key() -> None:
    compose = load_compose()
    (secret,) = compose["services"]["prometheus"]["secrets"]
    assert compose["secrets"][secret] == {"environment": "API_KEY"}
    scrape = yaml.safe_load(
        (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text("utf-8")
    )
    (job,) = scrape["scrape_configs"]
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": f"/run/secrets/{secret}",
    }


def test_idempotence_stays_on_against_apache_kafka() -> None:
    for name, service in medocr_services(load_compose()).items():
        assert _env(service)["KAFKA_ENABLE_IDEMPOTENCE"] == "true", name


def test_engines_and_profiles() -> None:
    services = load_compose()["services"]
    gpu, cpu = services["worker"], services["worker-cpu"]
    assert _env(gpu)["OCR_ENGINE"] == "vllm"
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert _env(cpu)["OCR_ENGINE"] == "tesseract"
    assert cpu["build"]["dockerfile"] == "deploy/Dockerfile.cpu"
    assert cpu["profiles"] == ["cpu"]
    assert gpu["profiles"] == ["gpu"]


def test_workers_get_longer_to_stop_than_they_take_to_drain() -> None:
    for name in ("worker", "worker-cpu"):
        service = load_compose()["services"][name]
        drain_s = float(_env(service)["OCR_DRAIN_TIMEOUT_S"])
        assert seconds(service["stop_grace_period"]) > drain_s + 10, name


def _topic_job_script() -> str:
    command = load_compose()["services"]["kafka-topics"]["command"]
    return "\n".join(command) if isinstance(command, list) else str(command)


def test_topic_job_creates_every_topic_the_worker_uses() -> None:
    script = _topic_job_script()
    fields = KafkaSettings.model_fields
    for topic_field in ("input_topic", "result_topic", "dlq_topic", "progress_topic"):
        topic = fields[topic_field].default
        assert re.search(rf"^\s*create {re.escape(topic)}\s+\d+", script, re.M), topic


def test_broker_and_topics_take_the_largest_inlined_scan() -> None:
    """Scans up to OCR_MAX_DOCUMENT_BYTES are inlined: Kafka takes them + framing."""
    largest_scan = LimitSettings.model_fields["max_document_bytes"].default
    assert largest_scan == 20 * MIB
    kafka_env = load_compose()["services"]["kafka"]["environment"]
    assert int(kafka_env["KAFKA_MESSAGE_MAX_BYTES"]) >= largest_scan + MIB
    topic_limits = re.findall(r"max\.message\.bytes=(\d+)", _topic_job_script())
    assert topic_limits
    assert all(int(limit) >= largest_scan + MIB for limit in topic_limits)


def test_mounted_files_exist() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), (name, source)
    assert services["publisher"]["command"][:2] == ["publish", "/samples"]


def test_gateway_runs_the_cpu_image_behind_the_key_on_loopback() -> None:
    services = load_compose()["services"]
    gateway = services["gateway"]
    assert gateway["command"] == ["gateway"]
    assert (
        gateway["image"] == services["worker-cpu"]["image"]
    )  # one image, two commands
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile.cpu"
    assert sorted(gateway["profiles"]) == ["cpu", "gpu"]
    env = _env(gateway)
    assert re.fullmatch(r"\$\{API_KEY:\?[^}]+\}", env["API_KEY"])
    (published,) = gateway["ports"]
    assert published == f"127.0.0.1:{env['PORT']}:{env['PORT']}"
