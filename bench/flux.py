#!/usr/bin/env python3
"""Flux benchmark: gitsync against Flux's source- and kustomize-controller on the same 1,000 objects.

    .venv/bin/python bench/flux.py --build     build Flux from its Go modules into the cache (minutes, once), then run
    .venv/bin/python bench/flux.py --build-only

Method: ../shared/research/flux-vs-gitsync.md, issue #19.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLUX_VERSION = "v1.9.6"  # v1.10.x needs go >= 1.27; the machine has go 1.26.8
GO_ENV = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
BUILD_RECIPE = "1"


@dataclass(frozen=True, slots=True)
class Controller:
    """One Flux controller module. Its go.mod replaces its own `api` sub-module with `./api`, which the module zip
    does not hold (nested modules are separate), so the published api module of the same version is used instead.
    `replaces` are further `go mod edit -replace` edits."""

    name: str
    replaces: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return f"github.com/fluxcd/{self.name}"


CONTROLLERS = (
    # proxy.golang.org answers 403 for the fluxcd/pkg/artifact v0.18.3 zip; v0.18.0 builds and runs.
    Controller("source-controller", ("github.com/fluxcd/pkg/artifact=github.com/fluxcd/pkg/artifact@v0.18.0",)),
    Controller("kustomize-controller"),
)


def say(message: str) -> None:
    print(f"flux: {message}", file=sys.stderr, flush=True)


def go_version() -> str:
    done = subprocess.run(["go", "version"], env={**os.environ, **GO_ENV}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def flux_dir() -> Path:
    """~/.cache/gitsync/flux/<stamp>: the stamp covers the version, the edits, the recipe and `go version`."""
    recipe = json.dumps([FLUX_VERSION, BUILD_RECIPE, go_version(), [(c.name, c.replaces) for c in CONTROLLERS]])
    return Path.home() / ".cache" / "gitsync" / "flux" / hashlib.sha256(recipe.encode()).hexdigest()[:16]


def is_built(target: Path) -> bool:
    return all(os.access(target / "bin" / c.name, os.X_OK) for c in CONTROLLERS) and (target / "crds").is_dir()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build_flux() -> Path:
    """Builds both controllers once (`go mod download`, copy, edit go.mod, `go build -trimpath`, static)."""
    target = flux_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.with_name(target.name + ".lock")):
        if is_built(target):
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "bin").mkdir(parents=True)
        (partial / "crds").mkdir()
        log_path = target.with_name(target.name + ".build.log")
        started = time.monotonic()
        with log_path.open("w") as log:

            def go(*argv: str, cwd: Path) -> str:
                log.write(f"$ cd {cwd} && go {' '.join(argv)}\n")
                log.flush()
                done = subprocess.run(
                    ["go", *argv], cwd=cwd, env={**os.environ, **GO_ENV}, capture_output=True, text=True
                )
                log.write(done.stderr)
                log.flush()
                if done.returncode != 0:
                    raise SystemExit(f"go {' '.join(argv)}: exit {done.returncode}; log: {log_path}")
                return done.stdout

            for controller in CONTROLLERS:
                say(f"building {controller.name} {FLUX_VERSION} (log: {log_path})")
                found = json.loads(go("mod", "download", "-json", f"{controller.module}@{FLUX_VERSION}", cwd=partial))
                source = partial / "src" / controller.name
                shutil.copytree(found["Dir"], source)
                for path in source.rglob("*"):  # the module cache is read-only
                    path.chmod(path.stat().st_mode | stat.S_IWUSR)
                go("mod", "edit", f"-dropreplace={controller.module}/api", cwd=source)
                for replace in controller.replaces:
                    go("mod", "edit", f"-replace={replace}", cwd=source)
                go("build", "-trimpath", "-ldflags=-s -w", "-o", str(partial / "bin" / controller.name), ".", cwd=source)
                for crd in (source / "config" / "crd" / "bases").glob("*.yaml"):
                    shutil.copy(crd, partial / "crds" / crd.name)
            shutil.rmtree(partial / "src")
        (partial / "build.json").write_text(
            json.dumps({"version": FLUX_VERSION, "go": go_version(), "seconds": round(time.monotonic() - started)})
        )
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        say(f"built in {time.monotonic() - started:.0f} s -> {target}")
        return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-only", action="store_true", help="build Flux into the cache and stop")
    args = parser.parse_args()
    target = build_flux()
    if args.build_only:
        print(target)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
