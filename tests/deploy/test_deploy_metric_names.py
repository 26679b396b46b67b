"""Every metric the alert rules and the dashboard query is one the sidecar exposes.

Both sides are collected, not listed by hand: the used names are parsed out of the
PromQL in ``deploy/prometheus/alerts.yml`` and ``deploy/grafana/dashboards/*.json``;
the exposed names come from one real registry holding the worker's ``WorkerMetrics``
and the vLLM engine's ``EngineMetrics`` (importable without vLLM), as in a GPU worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumers.engines.vllm_pages import EngineMetrics
from consumers.metrics import WorkerMetrics
from tests.deploy.tools import DEPLOY

pytestmark = pytest.mark.deploy

# Series Prometheus makes itself for every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

# The engine figures the issue asks for (the vLLM engine adds them to the registry).
ENGINE_FIGURES = {
    "ocr_engine_requests_running",
    "ocr_engine_requests_waiting",
    "ocr_engine_kv_cache_usage_ratio",
    "ocr_engine_prompt_tokens",
    "ocr_engine_generation_tokens",
    "ocr_engine_page_capacity",
}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
}

_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}  # fmt: skip
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords, labels)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries, $__rate_interval
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end() :].lstrip()[:1]
        name = match.group()
        if before.isdigit() or before in ".$" or after == "(":
            continue  # 1e-9, 0.5, $variable, func(
        if name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ('up{job="medocr-worker"} == 0', {"up"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(e2e_bucket[5m])))",
            {"e2e_bucket"},
        ),
        (
            'sum(rate(a_total{x=~"$i"}[$__rate_interval])) / sum(rate(b[1m])) > 1e-9',
            {"a_total", "b"},
        ),
        ("x > 0 and on () (sum(increase(y[10m])) or vector(0)) == 0", {"x", "y"}),
        ("sum without (instance) (m) offset 5m", {"m"}),
        ("rec:lag:sum > 100 and delta(rec:lag:sum[15m]) > 0", {"rec:lag:sum"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ("a * on (instance) group_left (engine) b", {"a", "b"}),
    ],
)
def test_metric_names_parser(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def exposed_families() -> dict[str, str]:
    """Family name -> type, from a registry built the way a vLLM worker builds it."""
    registry = CollectorRegistry()
    WorkerMetrics(registry, engine="vllm")
    EngineMetrics(registry)
    return {family.name: family.type for family in registry.collect()}


def exposed_series_names() -> set[str]:
    return {
        name + suffix
        for name, kind in exposed_families().items()
        for suffix in _SUFFIXES[kind]
    }


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text("utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_queries() -> Iterator[tuple[str, str]]:
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text("utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("definition", "")
            found = re.match(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,", query)
            if found:
                yield f"{path.name}: ${variable['name']}", found.group(1)


def _recorded() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def used_names() -> dict[str, set[str]]:
    """Metric name -> where it is used (alert rules and dashboard panels)."""
    used: dict[str, set[str]] = {}
    for rule in _rules():
        where = f"alerts.yml: {rule.get('alert') or rule.get('record')}"
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(where)
    for where, expr in _dashboard_queries():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


def test_rules_and_dashboard_use_only_exposed_metrics() -> None:
    known = exposed_series_names() | PROMETHEUS_SERIES | _recorded()
    unknown = {
        name: sorted(where) for name, where in used_names().items() if name not in known
    }
    assert unknown == {}


def test_the_check_sees_both_sides() -> None:
    used = used_names()
    assert len(used) >= 15, sorted(used)
    assert "ocr_pages_total" in exposed_series_names()
    assert "ocr_pages" not in exposed_series_names()  # counters are exposed as *_total


def test_dashboard_shows_every_exposed_family() -> None:
    queried = {name for _, expr in _dashboard_queries() for name in metric_names(expr)}
    missing = {
        family
        for family, kind in exposed_families().items()
        if not any(family + suffix in queried for suffix in _SUFFIXES[kind])
    }
    assert missing == set()


def test_engine_figures_are_exposed() -> None:
    assert ENGINE_FIGURES - set(exposed_families()) == set()
