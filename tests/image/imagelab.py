"""podman for the tests in tests/image, with the settings `make image` uses (tools/image/image.py podman)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IMAGE_TOOL = Path(__file__).resolve().parents[2] / "tools" / "image" / "image.py"


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(IMAGE_TOOL), "podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
