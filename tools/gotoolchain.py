"""gotoolchain: which Go compiles the binaries built from Go modules (kubelab, Gitea, and bench's Helm, Flux and Argo
Rollouts), and the GOTOOLCHAIN setting that makes it so.

A local Go new enough for a build compiles it as is: GOTOOLCHAIN=local, nothing is downloaded, and no go.mod `go` or
`toolchain` line can swap in another Go. An older local Go (>= 1.21, the first that can switch; `make deps` installs
Debian's when there is none) runs FETCHED instead: GOTOOLCHAIN=go1.26.8 makes it download that release from the Go
module proxy (module golang.org/toolchain, about 76 MB, once per module cache) and hand every go command to it. The
setting is always a name, never `auto`, so the Go that compiles is the one `Toolchain.version` reports, which the
build caches' stamps name.

Standard library only: the tools import it with tools/ on sys.path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

FETCHED = (1, 26, 8)
"""What an older Go fetches: the Go of CI's machines, new enough for every build here (Gitea 1.26 needs 1.26.2)."""
SWITCHES_FROM = (1, 21)
"""Go 1.21 is the first that fetches and runs another toolchain."""


class GoToolchainError(Exception):
    """No Go can compile the build: none on PATH, or one too old to fetch a newer one. The message is one line."""


@dataclass(frozen=True, slots=True)
class Toolchain:
    """The Go that compiles a build: its `go version` line, and the environment every go command of the build adds."""

    version: str
    env: Mapping[str, str]

    @property
    def goversion(self) -> str:
        """The release name alone (`go1.26.8`), as `go env GOVERSION` prints it."""
        return self.version.split()[2]


def release(text: str) -> tuple[int, ...] | None:
    """(1, 26, 8) from `go version go1.26.8 linux/amd64` or `go1.26.8`; a missing patch number counts as 0."""
    found = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", text)
    return None if found is None else (int(found[1]), int(found[2]), int(found[3] or 0))


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def go_version(go: str, env: Mapping[str, str]) -> tuple[str, tuple[int, ...]]:
    """The `go version` line and its release, from the Go that `env`'s GOTOOLCHAIN picks (fetching it if need be)."""
    done = subprocess.run([go, "version"], env=env, capture_output=True, text=True, check=False, timeout=900)
    found = release(done.stdout)
    if done.returncode != 0 or found is None:
        raise GoToolchainError(f"{go} version: exit {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip(), found


def select(minimum: tuple[int, ...], needs: str, environ: Mapping[str, str], say: Callable[[str], None]) -> Toolchain:
    """The Go that builds what `needs` names (in messages), which asks for Go >= `minimum`. Fetches FETCHED (once
    per module cache, saying so) when the local Go is older; `environ` is the build's environment otherwise."""
    want = dotted(minimum)
    go = shutil.which("go", path=environ.get("PATH"))
    if go is None:
        raise GoToolchainError(f"go: not found on PATH; {needs} needs Go >= {want}: `make deps` installs it")
    local, found = go_version(go, {**environ, "GOTOOLCHAIN": "local"})
    if found >= minimum:
        return Toolchain(local, {"GOTOOLCHAIN": "local"})
    if found < SWITCHES_FROM:
        raise GoToolchainError(
            f"{go}: {local} is too old for {needs} (Go >= {want}) and to fetch a newer Go (that needs "
            f">= {dotted(SWITCHES_FROM)}): `make deps` installs one that can"
        )
    fetched = f"go{dotted(FETCHED)}"
    if minimum > FETCHED:
        raise GoToolchainError(f"{needs} needs Go >= {want}, newer than {fetched} (FETCHED in tools/gotoolchain.py)")
    say(f"{go} is go{dotted(found)}, older than {needs} needs ({want}): using {fetched} from the Go module proxy")
    env = {"GOTOOLCHAIN": fetched}
    return Toolchain(go_version(go, {**environ, **env})[0], env)
