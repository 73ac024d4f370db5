"""A private kubelab for a benchmark: started in a state folder, stopped after (every bench script uses these)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KUBELAB = Path(__file__).resolve().parent.parent / "tools" / "kubelab" / "kubelab.py"


def start_lab(state: Path, *apiserver_args: str) -> Path:
    """Starts a private kubelab in ``state`` (extra kube-apiserver flags given as ``--flag=value``); its kubeconfig."""
    extra = [f"--apiserver-arg={arg}" for arg in apiserver_args]
    up = subprocess.run(
        [sys.executable, str(KUBELAB), "up", "--state-dir", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if up.returncode != 0:
        sys.exit(f"bench: kubelab did not start: {up.stderr.strip()[-2000:]}")
    return Path(up.stdout.strip().splitlines()[-1])


def stop_lab(state: Path) -> None:
    """Stops the kubelab of ``state``; a failure to stop is not the benchmark's result, so it is not raised."""
    subprocess.run(
        [sys.executable, str(KUBELAB), "down", "--state-dir", str(state)], capture_output=True, timeout=120, check=False
    )
