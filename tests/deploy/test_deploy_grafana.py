"""Grafana provisioning: the dashboard uses the provisioned datasource, loads from the
folder compose mounts, and lays out its panels without overlaps."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import load_compose
from tests.deploy.tools import DEPLOY

pytestmark = pytest.mark.deploy

GRAFANA = DEPLOY / "grafana"


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(
        (GRAFANA / "dashboards" / "medocr.json").read_text("utf-8")
    )
    return dashboard


def _provisioning(kind: str) -> dict[str, Any]:
    (path,) = (GRAFANA / "provisioning" / kind).glob("*.yml")
    document: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    return document


def test_dashboard_queries_the_provisioned_datasource() -> None:
    (datasource,) = _provisioning("datasources")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"  # the compose service
    uids = {
        target["datasource"]["uid"]
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}


def test_dashboards_load_from_the_mounted_folder() -> None:
    (provider,) = _provisioning("dashboards")["providers"]
    mounts = load_compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_dashboard_has_the_figures_operators_asked_for() -> None:
    exprs = "\n".join(
        target["expr"]
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    )
    for needle in (
        "rate(ocr_pages_total",  # throughput, pages/s
        "histogram_quantile(0.99, sum by (le) (rate(ocr_end_to_end_seconds_bucket",
        "max by (topic, partition) (ocr_consumer_lag_records)",  # lag per partition
        "sum by (error_code) (rate(ocr_dead_letters_total",
        "ocr_inflight_pages",
        "ocr_engine_kv_cache_usage_ratio",
        "ocr_engine_requests_waiting",
        # engine queue time: what MedocrEngineSaturating watches
        "histogram_quantile(0.9, sum by (le) (rate(ocr_engine_queue_seconds_bucket",
        "ocr_batch_size_records_bucket",
    ):
        assert needle in exprs, needle


def test_saturation_panels_sit_together() -> None:
    """Engine queue time, waiting requests and KV-cache usage: the figures that show
    saturation coming are panels next to each other (same row or the one below)."""
    grids = {
        needle: panel["gridPos"]
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
        for needle in (
            "ocr_engine_queue_seconds_bucket",
            "ocr_engine_requests_waiting",
            "ocr_engine_kv_cache_usage_ratio",
        )
        if needle in target["expr"]
    }
    assert len(grids) == 3, grids
    rows = sorted({grid["y"] for grid in grids.values()})
    assert rows[-1] - rows[0] <= max(grid["h"] for grid in grids.values()), grids
