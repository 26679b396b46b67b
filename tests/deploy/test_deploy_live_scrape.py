"""A real Prometheus scrapes a real worker and finds the pipeline's metrics.

``medocr broker`` (embedded), ``medocr worker`` (Tesseract, with an ``API_KEY``) and
``medocr publish`` of the bundled samples run as child processes; Prometheus (Debian's
binary) runs on a free loopback port with its own storage, scrapes the sidecar every
second with the shipped job's ``authorization`` (its key file moved to a temporary
folder) and loads ``deploy/prometheus/alerts.yml``. The test then asks Prometheus's
HTTP API, the way Grafana and the alert rules will.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from consumers.local.broker import free_port
from consumers.local.demo import sample_scans
from producers.kafka import EMBEDDED_BROKER_FETCH_MAX_WAIT_MS
from tests.deploy.processes import (
    MEDOCR,
    answers,
    child,
    host_env,
    medocr_broker,
    medocr_publish,
    wait_for,
)
from tests.deploy.tools import DEPLOY, REPO

pytestmark = [pytest.mark.deploy, pytest.mark.tesseract]

SAMPLES = REPO / "producers" / "samples"
SCANS = sample_scans()


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5
    )
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _value(prometheus: str, expr: str) -> float:
    result = _query(prometheus, expr)
    return float(result[0]["value"][1]) if result else 0.0


API_KEY = "live-scrape-k3y"


def _scrape_job(sidecar_port: int, key_file: Path) -> dict[str, Any]:
    """The shipped medocr-worker job, pointed at one loopback worker."""
    shipped = yaml.safe_load(
        (DEPLOY / "prometheus" / "prometheus.yml").read_text("utf-8")
    )
    (job,) = shipped["scrape_configs"]
    assert job["job_name"] == "medocr-worker"
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{sidecar_port}"]}]
    job["authorization"]["credentials_file"] = str(key_file)
    return dict(job)


def test_prometheus_scrapes_pipeline_metrics_from_a_running_worker(
    prometheus_bin: str, tmp_path: Path
) -> None:
    broker_port, sidecar_port, prometheus_port = free_port(), free_port(), free_port()
    env = host_env()
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{broker_port}",
        # The embedded broker has no idempotent producer.
        KAFKA_ENABLE_IDEMPOTENCE="false",
        KAFKA_FETCH_MAX_WAIT_MS=str(EMBEDDED_BROKER_FETCH_MAX_WAIT_MS),
        OCR_ENGINE="tesseract",
        OCR_TOPIC_PARTITIONS="2",
        OCR_BATCH_MAX_WAIT_MS="100",
        TESSERACT_WORKERS="1",
        HOST="127.0.0.1",
        PORT=str(sidecar_port),
        API_KEY=API_KEY,
        PYTHONUNBUFFERED="1",
    )
    key_file = tmp_path / "medocr_api_key"
    key_file.write_text(API_KEY + "\n", encoding="utf-8")  # Prometheus trims it
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
                "scrape_configs": [_scrape_job(sidecar_port, key_file)],
            }
        ),
        encoding="utf-8",
    )
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    logs = {
        name: tmp_path / f"{name}.log" for name in ("broker", "worker", "prometheus")
    }

    with ExitStack() as stack:
        stack.enter_context(medocr_broker(broker_port, env, logs["broker"]))

        worker = stack.enter_context(child([*MEDOCR, "worker"], env, logs["worker"]))
        wait_for(
            "the worker's /ready",
            lambda: (
                answers(f"http://127.0.0.1:{sidecar_port}/ready")
                or worker.poll() is not None
            ),
            90,
            logs["worker"],
        )
        assert worker.poll() is None, logs["worker"].read_text("utf-8", "replace")
        # the key is on: a scrape without it is refused, the probes stay open
        assert answers(f"http://127.0.0.1:{sidecar_port}/metrics", 401)
        assert answers(f"http://127.0.0.1:{sidecar_port}/health")

        stack.enter_context(
            child(
                [
                    prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    "--log.level=warn",
                ],
                env,
                logs["prometheus"],
            )
        )
        wait_for(
            "Prometheus",
            lambda: answers(f"{prometheus}/-/ready"),
            60,
            logs["prometheus"],
        )

        medocr_publish(SCANS, env, wait_s=240)

        wait_for(
            "a scrape that counts every document",
            lambda: (
                _value(prometheus, 'sum(ocr_records_total{outcome="ok"})') >= len(SCANS)
            ),
            30,
            logs["prometheus"],
        )
        assert _value(prometheus, 'up{job="medocr-worker"}') == 1
        # One ground-truth text per page: pub-0007.p1.txt, pub-0007.p2.txt, ...
        pages = sum(1 for _ in SAMPLES.glob("*.p*.txt"))
        assert _value(prometheus, 'sum(ocr_pages_total{status="OK"})') == pages
        for expr in (
            "sum(ocr_batch_size_records_count)",
            'sum(ocr_engine_page_seconds_count{engine="tesseract"})',
            "sum(ocr_end_to_end_seconds_count)",
            "sum(ocr_offset_commits_total)",
            "ocr_engine_up",
            "ocr_worker_ready",
            "ocr_inflight_pages_limit",
        ):
            assert _value(prometheus, expr) > 0, expr
        assert _value(prometheus, "sum(ocr_end_to_end_seconds_count)") >= len(SCANS)
        # Lag is reported per assigned partition of the input topic, 0 once drained.
        lag = _query(prometheus, "ocr_consumer_lag_records")
        assert {series["metric"]["topic"] for series in lag} == {"ocr.requests"}
        assert {series["metric"]["partition"] for series in lag} == {"0", "1"}

        # The alert rules load and evaluate against the real series.
        wait_for(
            "the recording rule",
            lambda: bool(_query(prometheus, "medocr:consumer_lag_records:sum")),
            15,
            logs["prometheus"],
        )
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"][
            "groups"
        ]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == 12
        assert all(rule["health"] != "err" for rule in rules), rules
        firing = _query(prometheus, 'ALERTS{alertstate="firing"}')
        assert firing == []

        worker.terminate()  # SIGTERM: drain, commit, exit 0
        assert worker.wait(timeout=60) == 0, logs["worker"].read_text(
            "utf-8", "replace"
        )
