"""deploy/requirements.lock, what the CPU image installs: exact pins that satisfy
medocr's runtime dependencies, and nothing from the test, broker or vLLM extras."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.tools import DEPLOY, REPO

pytestmark = pytest.mark.deploy

LOCK = DEPLOY / "requirements.lock"
STALE = "deploy/requirements.lock is out of date with pyproject.toml: run make lock"
# The image's interpreter (Debian bookworm's python3) and platform.
IMAGE_ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.2"}


def _project() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator and version and " " not in line, f"not an exact pin: {line}"
        pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_says_how_it_is_made() -> None:
    assert "make lock" in LOCK.read_text("utf-8").splitlines()[0]


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    for line in dependencies:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(IMAGE_ENVIRONMENT):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in the lock. {STALE}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} is outside {requirement.specifier}. {STALE}"
        )


def _names(lines: object) -> set[str]:
    assert isinstance(lines, list)
    return {canonicalize_name(Requirement(line).name) for line in lines}


def test_nothing_from_the_extras_is_locked() -> None:
    """No test tools, no embedded broker, no vLLM in the CPU image."""
    project = _project()
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    extra_only = set().union(*map(_names, extras.values()))
    extra_only -= _names(project["dependencies"])
    assert extra_only
    assert extra_only & set(_pins()) == set()
