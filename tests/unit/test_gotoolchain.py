"""Which Go the tool builds use (tools/gotoolchain.py), against the machine's real `go` (make deps installs one): a
new-enough Go builds as is, and a missing or insufficient one is refused in one line saying what to do. The fetch of
an older Go's replacement is exercised by `make kubelab` / `make gitea` with such a Go first on PATH (README)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from gotoolchain import FETCHED, GoToolchainError, dotted, release, select

GO = shutil.which("go")


def local_go() -> tuple[str, tuple[int, ...]]:
    assert GO is not None, "go: not found on PATH; `make deps` installs it"
    line = subprocess.run(
        [GO, "version"], env={**os.environ, "GOTOOLCHAIN": "local"}, capture_output=True, text=True, check=True
    ).stdout.strip()
    found = release(line)
    assert found is not None, line
    return line, found


def test_a_new_enough_go_builds_as_is() -> None:
    line, found = local_go()
    said: list[str] = []
    toolchain = select(found, "kubelab", os.environ, said.append)
    assert toolchain.env == {"GOTOOLCHAIN": "local"}
    assert toolchain.version == line
    assert said == []


def test_no_go_on_path_names_make_deps(tmp_path: Path) -> None:
    with pytest.raises(GoToolchainError, match=r"go: not found on PATH; kubelab needs Go >= 1\.24: `make deps`"):
        select((1, 24), "kubelab", {**os.environ, "PATH": str(tmp_path)}, print)


def test_a_need_beyond_the_fetched_go_is_refused_before_any_download() -> None:
    _, found = local_go()
    beyond = (FETCHED[0], FETCHED[1] + 1)
    if found >= beyond:
        pytest.fail(f"the local Go ({found}) is newer than {beyond}: bump FETCHED in tools/gotoolchain.py")
    with pytest.raises(GoToolchainError, match=re.escape(f"newer than go{dotted(FETCHED)} (FETCHED in tools/")):
        select(beyond, "Flux v1.10.0", os.environ, print)
