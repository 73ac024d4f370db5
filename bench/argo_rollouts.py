"""Argo Rollouts for bench/rollout.py: the controller built from its published Go module, its CRDs, and the
controller run as a local process against kubelab (namespaced, no leader election).

    .venv/bin/python bench/argo_rollouts.py     build (or find) the controller and print its path

The build follows ../shared/research/rollouts-vs-gitsync.md: ``go mod download`` of the module at VERSION, a copy
of the module's directory (so its own go.mod and its ``replace`` directives apply), one source edit made on that
copy, ``go build`` with CGO off and the local Go (or, when it is older than the module's go line, the Go that
tools/gotoolchain.py fetches). The binary and the CRDs it ships with are cached under
~/.cache/gitsync/argo-rollouts/<VERSION>/ (stamped with the building Go's ``go version`` and RECIPE); the Go module
cache keeps the downloaded sources. The one edit: the controller binds its metrics and healthz servers to 0.0.0.0
with no flag to change it, so the copy binds them to 127.0.0.1 like every other kubelab component.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from gotoolchain import GoToolchainError, Toolchain, select  # tools/gotoolchain.py

MODULE = "github.com/argoproj/argo-rollouts"
VERSION = "v1.10.1"
MIN_GO = (1, 26, 1)  # the go line of VERSION's go.mod
RECIPE = "1"  # bump when the build below changes
GO_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}  # plus the toolchain's GOTOOLCHAIN
LISTEN_FILE = "controller/controller.go"
LISTEN_FROM = 'listenAddr                         = "0.0.0.0:%d"'
LISTEN_TO = 'listenAddr                         = "127.0.0.1:%d"'
USER_AGENT_PREFIX = "rollouts-controller/"  # client-go's default: the binary's name, then its version
CACHE = Path.home() / ".cache" / "gitsync" / "argo-rollouts" / VERSION


@functools.cache
def _toolchain() -> Toolchain:
    try:
        return select(MIN_GO, f"Argo Rollouts {VERSION}", os.environ, lambda line: print(f"bench: {line}"))
    except GoToolchainError as error:
        sys.exit(f"bench: {error}")


def _go(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["go", *args],
        cwd=cwd,
        env={**os.environ, **GO_ENV, **_toolchain().env},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"bench: go {' '.join(args[:3])}: exit {done.returncode}: {(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def _stamp() -> str:
    return f"recipe {RECIPE}; {_toolchain().version}"


def build() -> Path:
    """The cache directory holding ``rollouts-controller`` and ``crds/``; built first unless the stamp matches."""
    stamp_file = CACHE / "build.json"
    stamp = _stamp()
    if stamp_file.is_file() and json.loads(stamp_file.read_text()).get("stamp") == stamp:
        return CACHE
    started = time.monotonic()
    print(f"bench: building Argo Rollouts {VERSION} from its Go module (minutes, once) into {CACHE}", flush=True)
    module = json.loads(_go("mod", "download", "-json", f"{MODULE}@{VERSION}"))
    with tempfile.TemporaryDirectory(prefix="argo-rollouts-build-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(module["Dir"], copy)
        for path in copy.rglob("*"):  # the module cache is read-only, and so is the copy
            path.chmod(path.stat().st_mode | 0o200)
        copy.chmod(0o755)
        listen = copy / LISTEN_FILE
        source = listen.read_text()
        if source.count(LISTEN_FROM) != 1:
            sys.exit(f"bench: {LISTEN_FILE} of {VERSION}: the listen address line to edit was not found")
        listen.write_text(source.replace(LISTEN_FROM, LISTEN_TO))
        CACHE.mkdir(parents=True, exist_ok=True)
        binary = CACHE / "rollouts-controller"
        ldflags = f"-s -w -X {MODULE}/utils/version.version={VERSION.removeprefix('v')}"
        _go("build", "-trimpath", "-ldflags", ldflags, "-o", f"{binary}.tmp", "./cmd/rollouts-controller", cwd=copy)
        Path(f"{binary}.tmp").rename(binary)
        shutil.rmtree(CACHE / "crds", ignore_errors=True)
        shutil.copytree(copy / "manifests" / "crds", CACHE / "crds")
    stamp_file.write_text(json.dumps({"stamp": stamp, "seconds": round(time.monotonic() - started, 1)}) + "\n")
    print(f"bench: built rollouts-controller in {time.monotonic() - started:.0f} s", flush=True)
    return CACHE


def crds(built: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of this version (the files its kustomization lists)."""
    folder = built / "crds"
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    return [yaml.safe_load((folder / name).read_text()) for name in listed]


if __name__ == "__main__":
    print(build() / "rollouts-controller")
