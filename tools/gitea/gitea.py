#!/usr/bin/env python3
"""gitea: a real Gitea forge on 127.0.0.1 for gitsync's forge tests (statuses, comments, pull requests, webhooks).

    gitea.py build                  compile code.gitea.io/gitea (skipped when the cached build is complete)
    gitea.py up --state-dir DIR     write app.ini, migrate the SQLite database, create an admin, start `gitea web`
                                    on a free loopback port; the last line of stdout is DIR/gitea.json
    gitea.py down --state-dir DIR   stop the `gitea web` that `up` started, by recorded PID

The binary comes from the Go module proxy (`go mod download code.gitea.io/gitea@VERSION`) and is built inside a
copy of the module's own directory, so its go.mod `replace` lines apply (building it as a dependency of another
module ignores them and fails). Gitea's SQLite driver needs cgo: with CGO_ENABLED=0 the binary starts but every
database call fails, hence CGO_ENABLED=1 and the tags `sqlite sqlite_unlock_notify`. The web frontend's assets
are not built: the tests use only the REST API, Git over HTTP and webhooks. The build is cached outside the work
tree under ~/.cache/gitsync/gitea/<stamp> (stamp: Gitea version, `go version`, BUILD_RECIPE) and serialised by a
lock file, like tools/kubelab/kubelab.py, so concurrent test sessions build it once. The Go that compiles is the local
one when it is >= MIN_GO, else one it fetches from the Go module proxy (tools/gotoolchain.py); the stamp names it.

DIR/gitea.json holds the URL, the admin's name and password and the PID; tests create their own tokens with them.
Dependencies: the standard library and tools/gotoolchain.py.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gotoolchain import GoToolchainError, Toolchain, select  # tools/gotoolchain.py

GITEA_MODULE = "code.gitea.io/gitea"
GITEA_VERSION = "v1.26.0"
# Bump whenever what `build` produces changes (flags, tags): the cache stamp includes it.
BUILD_RECIPE = "1"
BUILD_TAGS = "sqlite sqlite_unlock_notify"
GO_ENV = {"CGO_ENABLED": "1"}  # plus the Toolchain's GOTOOLCHAIN
MIN_GO = (1, 26, 2)
"""The `go` line of Gitea v1.26.0's go.mod."""
ADMIN_USER = "gitsync-admin"
ADMIN_EMAIL = "admin@gitsync.test"


class GiteaError(Exception):
    """A failure the user must act on; the message names the step and the log to read."""


def say(message: str) -> None:
    print(f"gitea: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("GITEA_CACHE") or Path.home() / ".cache" / "gitsync" / "gitea").expanduser().resolve()


def toolchain() -> Toolchain:
    """The Go that compiles, checked first: one older than Gitea's go.mod asks would fail deep in the build."""
    try:
        return select(MIN_GO, f"Gitea {GITEA_VERSION}", os.environ, say)
    except GoToolchainError as error:
        raise GiteaError(str(error)) from error


def build_stamp(go_line: str) -> str:
    digest = hashlib.sha256(
        f"recipe {BUILD_RECIPE}\n{GITEA_MODULE}@{GITEA_VERSION}\n{BUILD_TAGS}\n{go_line}\n".encode()
    )
    return f"{GITEA_VERSION}-{digest.hexdigest()[:12]}"


def binary(stamp_dir: Path) -> Path:
    return stamp_dir / "bin" / "gitea"


ASSETS = ("options", "templates")
"""Read from disk at run time by a build without the ``bindata`` tag (locales, mail and page templates): kept
next to the binary, and named by ``[server] STATIC_ROOT_PATH``."""


def is_complete(stamp_dir: Path) -> bool:
    return (
        (stamp_dir / "build.json").is_file()
        and os.access(binary(stamp_dir), os.X_OK)
        and all((stamp_dir / name).is_dir() for name in ASSETS)
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialises concurrent builds of one stamp (two pytest sessions starting at once)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build() -> Path:
    """Returns the path of the gitea binary, compiling it first unless the stamp's build is complete."""
    go = toolchain()
    root = cache_root()
    final = root / build_stamp(go.version)
    if not is_complete(final):
        root.mkdir(parents=True, exist_ok=True)
        with locked(root / f"{final.name}.lock"):
            if not is_complete(final):
                compile_into(final, go)
    else:
        say(f"binary up to date: {binary(final)}")
    return binary(final)


def module_dir(log: Path, go: Toolchain) -> Path:
    """Downloads the module through the Go module proxy and returns its (read-only) directory in the module cache."""
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{GITEA_MODULE}@{GITEA_VERSION}"],
        env={**os.environ, **GO_ENV, **go.env},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise GiteaError(
            f"go mod download {GITEA_MODULE}@{GITEA_VERSION}: exit {done.returncode}: {done.stderr.strip()}"
        )
    info = json.loads(done.stdout)
    if info.get("Error") or not info.get("Dir"):
        raise GiteaError(f"go mod download {GITEA_MODULE}@{GITEA_VERSION}: {info.get('Error') or 'no Dir'}")
    with log.open("a") as out:
        out.write(f"module {GITEA_MODULE}@{GITEA_VERSION} in {info['Dir']}\n")
    return Path(info["Dir"])


def writable_copy(source: Path, target: Path) -> None:
    """The module cache is read-only; go build writes nothing there, but a copy lets go.mod's replaces apply."""
    shutil.copytree(source, target, symlinks=True)
    for path in (target, *target.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def compile_into(final: Path, go: Toolchain) -> None:
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    (partial / "bin").mkdir(parents=True)
    log_path = final.with_name(final.name + ".build.log")
    log_path.write_text("")
    started = time.monotonic()
    source = partial / "src"
    writable_copy(module_dir(log_path, go), source)
    version = GITEA_VERSION.removeprefix("v")
    argv = [
        "go",
        "build",
        "-trimpath",
        "-tags",
        BUILD_TAGS,
        "-ldflags",
        f"-s -w -X main.Version={version} -X 'main.Tags={BUILD_TAGS}'",
        "-o",
        str(binary(partial)),
        ".",
    ]
    say(f"building Gitea {GITEA_VERSION} with {go.version}; takes minutes the first time (log: {log_path})")
    with log_path.open("a") as log:
        log.write(f"$ cd {source} && CGO_ENABLED=1 GOTOOLCHAIN={go.env['GOTOOLCHAIN']} {' '.join(argv)}\n")
        log.flush()
        done = subprocess.run(
            argv, cwd=source, env={**os.environ, **GO_ENV, **go.env}, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
        raise GiteaError(f"go build gitea: exit {done.returncode}; full log: {log_path}\n{tail}")
    for name in ASSETS:
        shutil.copytree(source / name, partial / name, symlinks=True)
    shutil.rmtree(source)
    record = {
        "gitea": GITEA_VERSION,
        "go": go.version,
        "tags": BUILD_TAGS,
        "recipe": BUILD_RECIPE,
        "seconds": round(time.monotonic() - started, 1),
    }
    (partial / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    partial.rename(final)
    say(f"built {binary(final)} in {record['seconds']} s")


# ----------------------------------------------------------------------------------------------------------- run


@dataclass(frozen=True, slots=True)
class Instance:
    """What `up` leaves in DIR/gitea.json: enough for a test to call the API as the admin."""

    url: str
    port: int
    admin: str
    password: str
    pid: int
    log: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_ini(state: Path, port: int, assets: Path) -> str:
    """Everything a headless Gitea needs; `I_AM_BEING_UNSAFE_RUNNING_AS_ROOT` must precede every section, since
    CI machines run as root and Gitea refuses to start as root without it."""
    return f"""I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
APP_NAME = gitsync test forge
RUN_MODE = prod
WORK_PATH = {state}

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:{port}/
APP_DATA_PATH = {state}/data
STATIC_ROOT_PATH = {assets}
DISABLE_SSH = true
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = {state}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = {state}/repositories
DEFAULT_BRANCH = main
ENABLE_PUSH_CREATE_USER = true

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_hex(32)}
INTERNAL_TOKEN = {internal_token()}
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
ENABLED = false

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 5

[queue]
TYPE = channel

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[mailer]
ENABLED = false

[cron]
ENABLED = false

[log]
MODE = file
LEVEL = Info
ROOT_PATH = {state}/log

[session]
PROVIDER = memory

[cache]
ADAPTER = memory
"""


def internal_token() -> str:
    """A JWT-shaped token, which is what Gitea's INTERNAL_TOKEN must look like (it checks the shape)."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'nbf': int(time.time())})}.{secrets.token_urlsafe(32)}"


def run_gitea(gitea: Path, state: Path, *args: str) -> str:
    config = state / "custom" / "conf" / "app.ini"
    done = subprocess.run(
        [str(gitea), "--config", str(config), "--work-path", str(state), *args],
        env={**os.environ, "GITEA_WORK_DIR": str(state), "HOME": str(state)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise GiteaError(f"gitea {args[0]}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
            raise GiteaError(f"gitea web exited ({process.returncode}) before serving; log: {log}\n{tail}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{url}api/v1/version", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise GiteaError(f"gitea web did not answer {url}api/v1/version within {timeout:.0f} s; log: {log}")


def up(state: Path, timeout: float = 120.0) -> Instance:
    """Starts a fresh Gitea in `state` (wiped first) and returns how to reach it."""
    gitea = build()
    down(state)
    shutil.rmtree(state, ignore_errors=True)
    (state / "custom" / "conf").mkdir(parents=True)
    (state / "log").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    (state / "custom" / "conf" / "app.ini").write_text(app_ini(state, port, gitea.parent.parent))
    started = time.monotonic()
    run_gitea(gitea, state, "migrate")
    password = secrets.token_urlsafe(18)
    run_gitea(
        gitea,
        state,
        "admin",
        "user",
        "create",
        "--admin",
        "--username",
        ADMIN_USER,
        "--password",
        password,
        "--email",
        ADMIN_EMAIL,
        "--must-change-password=false",
    )
    log = state / "log" / "web.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(gitea), "--config", str(state / "custom" / "conf" / "app.ini"), "--work-path", str(state), "web"],
            env={**os.environ, "GITEA_WORK_DIR": str(state), "HOME": str(state)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state / "gitea.pid").write_text(f"{process.pid}\n")
    wait_ready(url, process, log, timeout)
    instance = Instance(url=url, port=port, admin=ADMIN_USER, password=password, pid=process.pid, log=str(log))
    (state / "gitea.json").write_text(json.dumps(asdict(instance), indent=2) + "\n")
    (state / "gitea.json").chmod(0o600)
    say(f"serving {url} (started in {time.monotonic() - started:.1f} s)")
    return instance


def running_pid(state: Path) -> int | None:
    """The recorded PID if that process is alive and still runs gitea (PIDs get reused)."""
    try:
        pid = int((state / "gitea.pid").read_text().strip())
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return pid if Path(argv0).name == "gitea" else None


def down(state: Path, timeout: float = 15.0) -> None:
    pid = running_pid(state)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(state) is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if running_pid(state) is not None:
        os.kill(pid, signal.SIGKILL)
    say(f"stopped gitea (pid {pid})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gitea.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the binary unless the cached build is complete")
    for name, text in (("up", "start a fresh Gitea"), ("down", "stop it")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--state-dir", type=Path, required=True, help="app.ini, SQLite database, repositories, logs")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        elif args.command == "up":
            up(args.state_dir.resolve())
            print(args.state_dir.resolve() / "gitea.json")
        else:
            down(args.state_dir.resolve())
        return 0
    except GiteaError as error:
        say(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
