"""The container engine the image test drives: docker when its daemon answers, else
rootful podman with the runc runtime (the Makefile picks the same way).

podman's rootful default limits (nofile 1048576, nproc 4194304) are more than a runtime
without CAP_SYS_RESOURCE may set ("error setting rlimit type 7"), so containers run
with limits at or below this process's own.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import time
from dataclasses import dataclass

NOFILE_MAX = 65536
NPROC_MAX = 8192


def _limit(kind: int, ceiling: int) -> int:
    soft, hard = resource.getrlimit(kind)
    finite = [value for value in (soft, hard) if value != resource.RLIM_INFINITY]
    return min([ceiling, *finite])


@dataclass(frozen=True)
class ContainerEngine:
    name: str  # "docker" or "podman": the Makefile's ENGINE
    argv: tuple[str, ...]

    def __call__(
        self, *args: str, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def run_flags(self) -> list[str]:
        """Options every ``run`` here needs: limits podman's runtime may set."""
        if self.name != "podman":
            return []
        nofile = _limit(resource.RLIMIT_NOFILE, NOFILE_MAX)
        nproc = _limit(resource.RLIMIT_NPROC, NPROC_MAX)
        return [
            "--ulimit",
            f"nofile={nofile}:{nofile}",
            "--ulimit",
            f"nproc={nproc}:{nproc}",
        ]

    def health_flags(self) -> list[str]:
        """docker runs the HEALTHCHECK only on its interval: a short one for the test."""
        return ["--health-interval", "2s"] if self.name == "docker" else []

    def healthy(self, container: str, timeout_s: float = 60) -> bool:
        """The image's HEALTHCHECK passes in ``container``."""
        if self.name == "podman":
            return self("healthcheck", "run", container).returncode == 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self("inspect", "--format", "{{.State.Health.Status}}", container)
            if status.stdout.strip() == "healthy":
                return True
            time.sleep(1)
        return False

    def process_uid(self, container: str) -> str:
        """The Uid line (real, effective, saved, fs) of the container's PID 1."""
        status = self("exec", container, "cat", "/proc/1/status")
        lines = [line for line in status.stdout.splitlines() if line.startswith("Uid:")]
        return " ".join(lines[0].split()[1:]) if lines else status.stderr

    def logs(self, container: str) -> str:
        done = self("logs", container)
        return (done.stdout + done.stderr)[-4000:]


def find_engine() -> ContainerEngine | str:
    """The engine, or why there is none (the test is then not run)."""
    docker = shutil.which("docker")
    if docker and _answers([docker, "info"]):
        return ContainerEngine("docker", (docker,))
    podman = shutil.which("podman")
    if podman is None:
        return "no docker daemon answers and podman is not installed (make podman)"
    runc = shutil.which("runc")
    return ContainerEngine(
        "podman", (podman, "--runtime", "runc") if runc else (podman,)
    )


def _answers(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0
