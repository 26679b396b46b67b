"""promtool checks the scrape config and alert rules, and runs the rules' unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY

pytestmark = pytest.mark.deploy

PROMETHEUS_DIR = DEPLOY / "prometheus"


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _scrape_config_with_a_key_file(tmp_path: Path) -> Path:
    """prometheus.yml with its key file (a compose secret) and rules moved to tmp_path:
    promtool checks that both exist."""
    config = _load(PROMETHEUS_DIR / "prometheus.yml")
    key_file = tmp_path / "medocr_api_key"
    key_file.write_text("k3y\n", encoding="utf-8")
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(key_file)
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_scrape_config_is_valid(promtool: str, tmp_path: Path) -> None:
    config = _scrape_config_with_a_key_file(tmp_path)
    done = _promtool(promtool, "check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_config_check_needs_the_key_file(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: a credentials_file that is not there is refused."""
    config = _scrape_config_with_a_key_file(tmp_path)
    (tmp_path / "medocr_api_key").unlink()
    done = _promtool(promtool, "check", "config", str(config))
    assert done.returncode != 0


def test_alert_rules_are_valid(promtool: str) -> None:
    done = _promtool(promtool, "check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    done = _promtool(promtool, "test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: a rule with a PromQL syntax error is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n"
        "    expr: sum(rate(ocr_pages_total[5m])\n",
        encoding="utf-8",
    )
    done = _promtool(promtool, "check", "rules", str(broken))
    assert done.returncode != 0


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    rules = _load(PROMETHEUS_DIR / "alerts.yml")
    alerts = {
        rule["alert"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    cases = _load(PROMETHEUS_DIR / "alerts.test.yml")
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts, "no alerts found"
    assert alerts - fires == set(), "alerts without a test that fires"
    assert alerts - quiet == set(), "alerts without a test that stays quiet"


def _alert_exprs() -> dict[str, str]:
    rules = _load(PROMETHEUS_DIR / "alerts.yml")
    return {
        rule["alert"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_the_required_alerts_exist() -> None:
    exprs = _alert_exprs()
    wanted = {
        "MedocrConsumerLagGrowing": "ocr_consumer_lag_records",
        "MedocrDeadLetterRateHigh": "ocr_dead_letters_total",
        "MedocrWorkerDown": "up{",
        "MedocrEngineDown": "ocr_engine_up",
        "MedocrWorkerNotReady": "ocr_worker_ready",
        "MedocrEndToEndLatencyHigh": "ocr_end_to_end_seconds_bucket",
        "MedocrNoResultsWhileLagging": "ocr_records_total",
        "MedocrWorkerStalled": "ocr_worker_stalled",
        "MedocrInternalError": 'ocr_dead_letters_total{error_code="INTERNAL_ERROR"}',
        "MedocrEngineSaturating": "ocr_engine_queue_seconds_bucket",
        "MedocrLatencyBoundCrossed": "ocr_end_to_end_seconds_bucket",
    }
    for alert, metric in wanted.items():
        assert alert in exprs
        # The lag alerts use the recording rule built on ocr_consumer_lag_records.
        expr = exprs[alert].replace(
            "medocr:consumer_lag_records:sum", "ocr_consumer_lag_records"
        )
        assert metric in expr, alert


def test_the_saturation_alert_watches_queue_waiting_and_kv_cache() -> None:
    expr = _alert_exprs()["MedocrEngineSaturating"]
    for metric in (
        "ocr_engine_queue_seconds_bucket",
        "ocr_engine_requests_waiting",
        "ocr_engine_kv_cache_usage_ratio",
    ):
        assert metric in expr


def test_a_unit_test_has_the_saturation_alert_fire_before_the_bound() -> None:
    """The ordering the alert exists for stays proven in alerts.test.yml: at one
    eval_time MedocrEngineSaturating fires while MedocrLatencyBoundCrossed does not,
    and later in the same case the bound alert fires (promtool checks both)."""
    cases = _load(PROMETHEUS_DIR / "alerts.test.yml")["tests"]

    def times(case: dict[str, Any], alert: str, firing: bool) -> list[str]:
        return [
            check["eval_time"]
            for check in case.get("alert_rule_test", [])
            if check["alertname"] == alert and bool(check.get("exp_alerts")) == firing
        ]

    def minutes(eval_time: str) -> int:
        assert eval_time.endswith("m"), eval_time
        return int(eval_time[:-1])

    proofs = [
        case["name"]
        for case in cases
        for early in times(case, "MedocrEngineSaturating", firing=True)
        if early in times(case, "MedocrLatencyBoundCrossed", firing=False)
        and any(
            minutes(late) > minutes(early)
            for late in times(case, "MedocrLatencyBoundCrossed", firing=True)
        )
    ]
    assert proofs, "no case shows MedocrEngineSaturating firing before the bound"
