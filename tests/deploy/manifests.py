"""Reading the compose file, the Kubernetes manifests and the Dockerfiles for checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from consumers.settings import env_names
from tests.deploy.tools import DEPLOY, REPO

COMPOSE = REPO / "docker-compose.yml"
K8S = DEPLOY / "k8s"
DOCKERFILES = (DEPLOY / "Dockerfile.cpu", DEPLOY / "Dockerfile.gpu")

# Names set for our containers that the worker does not read, each with its reader.
NOT_WORKER_SETTINGS = {
    "HF_HOME": "Hugging Face hub and vLLM: where model weights are cached",
    "PATH": "the shell: finds the venv's medocr script",
    "PYTHONUNBUFFERED": "CPython: log lines reach the container log at once",
    "PYTHONDONTWRITEBYTECODE": "CPython: no .pyc files written at run time",
    "PIP_NO_CACHE_DIR": "pip, build stage only: no wheel cache in the layer",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip, build stage only",
    "DEBIAN_FRONTEND": "apt-get: no prompts during the image build",
}


def allowed_env_names() -> set[str]:
    return env_names() | set(NOT_WORKER_SETTINGS)


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text("utf-8"))
    return document


def medocr_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run our image (third-party containers have their own settings)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("medocr:")
    }


def load_k8s() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, document)
        for path in sorted(K8S.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text("utf-8"))
        if document
    ]


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in load_k8s() if document["kind"] == kind]


def medocr_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"][
        "containers"
    ]
    return [c for c in containers if str(c.get("image", "")).startswith("medocr:")]


def seconds(duration: str | int) -> float:
    """``90``, ``"90s"``, ``"2m"``, ``"1m30s"`` -> seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration.strip())
    if not parts or not any(parts.groups()):
        raise ValueError(f"not a duration: {duration!r}")
    hours, minutes, secs = (int(part or 0) for part in parts.groups())
    return float(hours * 3600 + minutes * 60 + secs)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def dockerfile_stages(path: Path) -> list[Stage]:
    """Build stages of a Dockerfile: continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
    return stages


def dockerfile_env_names(path: Path) -> set[str]:
    names: set[str] = set()
    for stage in dockerfile_stages(path):
        for args in stage.args("ENV"):
            names.update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args))
    return names
