"""Paths and external tools the deploy checks share."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

PROMETHEUS_HINT = "apt-get install -y prometheus (Debian's package has promtool too)"


def require_tool(name: str, install_hint: str) -> str:
    """Path of a command-line tool; a missing tool fails the test, never skips it."""
    # Tools installed by pip live beside the interpreter, which may not be on PATH.
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {install_hint}")
    return found
