"""The worker's path never imports the local-use package (embedded broker, demo, CER)."""

from __future__ import annotations

import subprocess
import sys


def test_the_worker_path_imports_nothing_local() -> None:
    probe = (
        "import sys, consumers.cli, consumers.runner; "
        "print(sorted(m for m in sys.modules if m.startswith('consumers.local')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
