"""Fixtures for the deploy checks: the external tools they drive."""

from __future__ import annotations

import pytest

from tests.deploy.tools import PROMETHEUS_HINT, require_tool


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool", PROMETHEUS_HINT)


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool("prometheus", PROMETHEUS_HINT)
