"""What both integration suites need: where ComfyUI comes from, and two small helpers."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMFY_HOST = Path(
    os.environ.get("FACEDIFFUSER_COMFY_HOST", ROOT.parent / "shared/tools/comfy-host")
)
SNAPSHOT = os.environ.get("COMFY_SNAPSHOT_GIT", "")
AVAILABLE = bool(SNAPSHOT) and Path(SNAPSHOT).exists() and COMFY_HOST.is_file()
SKIP_REASON = (
    "integration tests need a ComfyUI snapshot (COMFY_SNAPSHOT_GIT=<git dir>) and the "
    f"comfy-host tool ({COMFY_HOST}); skipping"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_requirements_like_the_manager(python: Path) -> None:
    """ComfyUI-Manager pip-installs requirements.txt one line at a time, in order."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", line],
                check=True,
                capture_output=True,
                timeout=900,
            )
