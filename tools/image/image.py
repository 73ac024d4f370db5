#!/usr/bin/env python3
"""image: build deploy/Dockerfile with podman where no image registry is reachable, for `make image` and the tests.

    image.py build          make the local base (cached), then build the image unless the one for this tree exists;
                            the last line of stdout is the image reference (localhost/gitsync:<tree key>)
    image.py podman ARGS... run podman with the settings that work on these machines (for tests and by hand)

The Dockerfile stays the standard one: `ARG BASE` names python:3.11-slim-bookworm, which a user elsewhere pulls
(pinned by digest). Here that base cannot be pulled, so `build` makes an equivalent one: `debootstrap --variant=minbase`
of Debian bookworm with Debian's python3 (3.11, the same minor version), pip, venv and ca-certificates, from the
Debian mirror apt already uses, with the tweaks Debian's slim images carry (no docs, man pages or locales; apt cleans
its downloads). It is imported as localhost/gitsync-base:<recipe key> and passed as `--build-arg BASE=...`, so it never
poses as the real python image in podman's storage. Debian's python3 is 3.11.2 where the real base carries a later
3.11 release, so the image tests also hold gitsync to its oldest supported 3.11 (no tarfile extraction filters).

Cache (outside the work tree, like kubelab's binaries): ~/.cache/gitsync/image/ or $GITSYNC_IMAGE_CACHE holds the base
rootfs tarball keyed by its recipe (Debian suite, packages, mirror, architecture, BASE_RECIPE), so a second build does
not re-debootstrap even when podman's storage was pruned, and containers.conf. The image tag is a digest of the
Dockerfile, .dockerignore, what the Dockerfile COPYs and the base key: an unchanged tree reuses its image.

podman here must use runc (crun fails on cgroups and rlimits), cgroupfs, and no default ulimits; `podman` writes that
into containers.conf and points CONTAINERS_CONF at it. Builds use `--isolation chroot` and mount the host's
/etc/pip.conf with the CA bundle it names (package registries are reached through a proxy whose CA lives there; see
`pip_mounts`). Progress goes to stderr.

Needs root (debootstrap and rootful podman) and Debian's podman, runc and debootstrap; runs with the project's venv
python (it borrows kubelab.py's lock and duration helpers).
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubelab"))
from kubelab import locked, took  # noqa: E402  (one build lock and duration format for both tools)

DOCKERFILE = REPO / "deploy" / "Dockerfile"
IGNORE_FILE = REPO / ".dockerignore"
IMAGE_NAME = "localhost/gitsync"
BASE_NAME = "localhost/gitsync-base"
PACKAGES_NEEDED = "podman runc debootstrap"
KEPT_IMAGES = 3

# Bump whenever what the local base holds changes in a way its recipe fields do not show (the tweaks below).
BASE_RECIPE = "1"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What python:3.11-slim-bookworm's image config sets and the Dockerfile may rely on.
BASE_CHANGES = (
    "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV=LANG=C.UTF-8",
    'CMD=["python3"]',
)
# Debian's official images (debuerreotype) ship these apt and dpkg settings; the slim variant adds the dpkg excludes.
SLIM_FILES = {
    "etc/apt/apt.conf.d/docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "etc/apt/apt.conf.d/docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    "etc/dpkg/dpkg.cfg.d/docker": (
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\n"
        "path-exclude /usr/share/groff/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/lintian/*\n"
        "path-exclude /usr/share/linda/*\npath-exclude /usr/share/locale/*\n"
        "path-include /usr/share/locale/locale.alias\n"
    ),
}
SLIM_REMOVED = ("usr/share/man", "usr/share/groff", "usr/share/info", "usr/share/lintian", "usr/share/linda")
CONTAINERS_CONF = (
    "# Written by tools/image/image.py: what podman needs on these machines (crun fails on cgroups and rlimits).\n"
    '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
)


class ImageError(Exception):
    """A failure the user must act on; the message names the command or file and what to do."""


def say(message: str) -> None:
    print(f"image: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    default = Path.home() / ".cache" / "gitsync" / "image"
    return Path(os.environ.get("GITSYNC_IMAGE_CACHE") or default).expanduser().resolve()


# --------------------------------------------------------------------------------------------------------- podman


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ImageError(f"{', '.join(missing)}: not found on PATH; install with `apt-get install {PACKAGES_NEEDED}`")
    if os.geteuid() != 0:
        raise ImageError("debootstrap and rootful podman need root; run `make image` as root")


def podman_env() -> dict[str, str]:
    conf = cache_root() / "containers.conf"
    if not conf.is_file() or conf.read_text() != CONTAINERS_CONF:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref).returncode == 0


def image_size(ref: str) -> int:
    done = podman("image", "inspect", "--format", "{{.Size}}", ref)
    if done.returncode != 0:
        raise ImageError(f"podman image inspect {ref}: {done.stderr.strip()}")
    return int(done.stdout.strip())


def mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# ----------------------------------------------------------------------------------------------------------- base


@dataclass(frozen=True, slots=True)
class BaseRecipe:
    """Everything the local base's content depends on; its digest names the tarball and the image tag."""

    recipe: str
    suite: str
    packages: tuple[str, ...]
    mirror: str
    security_mirror: str | None
    architecture: str

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def ref(self) -> str:
        return f"{BASE_NAME}:{self.key}"


def apt_sources() -> Iterator[tuple[str, tuple[str, ...]]]:
    """(URI, suites) of every `deb` source apt uses, from one-line .list and deb822 .sources files."""
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                found = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if found:
                    yield found[1], (found[2],)
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                for uri in fields.get("URIs", "").split():
                    yield uri, tuple(fields.get("Suites", "").split())


def base_recipe() -> BaseRecipe:
    mirror = security = None
    for uri, suites in apt_sources():
        if mirror is None and SUITE in suites:
            mirror = uri.rstrip("/")
        if security is None and f"{SUITE}-security" in suites:
            security = uri.rstrip("/")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    return BaseRecipe(BASE_RECIPE, SUITE, BASE_PACKAGES, mirror or DEFAULT_MIRROR, security, arch)


def ensure_base(recipe: BaseRecipe) -> None:
    """The base image in podman's storage, imported from the cached tarball, made first when missing."""
    if image_exists(recipe.ref):
        say(f"base {recipe.ref} present")
        return
    tarball = cache_root() / f"base-{recipe.key}.tar"
    if not tarball.is_file():
        make_base_tarball(recipe, tarball)
    started = time.monotonic()
    changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
    done = podman("import", *changes, str(tarball), recipe.ref, timeout=600)
    if done.returncode != 0:
        raise ImageError(f"podman import {tarball} {recipe.ref}: {done.stderr.strip()}")
    say(f"imported {recipe.ref} in {took(started)}")


def make_base_tarball(recipe: BaseRecipe, tarball: Path) -> None:
    root = tarball.with_suffix(".rootfs")
    log_path = tarball.with_suffix(".log")
    shutil.rmtree(root, ignore_errors=True)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(root),
        recipe.mirror,
    ]
    say(f"debootstrap {recipe.suite} from {recipe.mirror} (about 3 minutes; log: {log_path})")
    started = time.monotonic()
    with log_path.open("w") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=1800, check=False)
    if done.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
        raise ImageError(f"debootstrap: exit {done.returncode}; full log: {log_path}\n{tail}")
    slim(root, recipe)
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=600)
    partial.rename(tarball)
    shutil.rmtree(root)
    say(f"base rootfs made in {took(started)}: {tarball} ({mb(tarball.stat().st_size)})")


def slim(root: Path, recipe: BaseRecipe) -> None:
    """Debian's official-image tweaks, the apt sources of the mirror used, and no downloaded package lists."""
    for name, text in SLIM_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for name in SLIM_REMOVED:
        shutil.rmtree(root / name, ignore_errors=True)
    for directory, keep in (("usr/share/doc", "copyright"), ("usr/share/locale", "locale.alias")):
        for path in sorted((root / directory).rglob("*"), reverse=True):
            if (path.is_symlink() or path.is_file()) and path.name != keep:
                path.unlink()
            elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
    sources = f"deb {recipe.mirror} {recipe.suite} main\ndeb {recipe.mirror} {recipe.suite}-updates main\n"
    if recipe.security_mirror:
        sources += f"deb {recipe.security_mirror} {recipe.suite}-security main\n"
    (root / "etc/apt/sources.list").write_text(sources)
    for directory in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for path in (root / directory).glob("*"):
            if path.is_file():
                path.unlink()
    for path in (root / "var/cache/apt").glob("*.bin"):
        path.unlink()


# ---------------------------------------------------------------------------------------------------------- image


def copied_sources() -> list[Path]:
    """What the Dockerfile COPYs from the build context (the paths .dockerignore lets through)."""
    sources: list[Path] = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(word.startswith("--from") for word in words):
            sources += [REPO / word for word in words[1:-1]]
    return sources


def tree_key(recipe: BaseRecipe) -> str:
    digest = hashlib.sha256(f"base {recipe.key}\n".encode())
    files = [DOCKERFILE, IGNORE_FILE]
    for source in copied_sources():
        files += sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for path in files:
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(f"{path.relative_to(REPO)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def pip_mounts() -> list[str]:
    """`podman build -v` arguments that let pip in the build reach the package index as the host's pip does.

    The host's /etc/pip.conf is mounted rewritten: each `cert` bundle it names is mounted under /run/host-pip/
    and the copy points there. Mounting the host's /etc/ssl/certs itself would break the image's own apt-get when it
    upgrades ca-certificates (its postinst rewrites that directory). No host pip.conf: nothing is mounted.
    """
    host = Path("/etc/pip.conf")
    if not host.is_file():
        return []
    config = configparser.ConfigParser(interpolation=None)
    config.read(host)
    mounts: list[str] = []
    for number, section in enumerate(config.sections()):
        bundle = config.get(section, "cert", fallback=None)
        if bundle and Path(bundle).is_file():
            inside = f"/run/host-pip/cert-{number}.pem"
            mounts += ["-v", f"{Path(bundle).resolve()}:{inside}:ro"]
            config.set(section, "cert", inside)
    copy = cache_root() / "pip.conf"
    with copy.open("w") as out:
        config.write(out)
    return [*mounts, "-v", f"{copy}:/etc/pip.conf:ro"]


def prune_old_images() -> None:
    """Each tree gets its own tag: keep the KEPT_IMAGES newest (a session may still use one), untag the rest, and
    drop the intermediate images only those used. podman refuses to remove an image a container runs from."""
    listed = podman(
        "images", "--format", "{{.Repository}}:{{.Tag}} {{.CreatedAt}}", "--filter", f"reference={IMAGE_NAME}"
    )
    tags = [line.split(" ", 1) for line in listed.stdout.splitlines() if line.strip()]
    old = [tag for tag, _ in sorted(tags, key=lambda row: row[1], reverse=True)[KEPT_IMAGES:]]
    if old:
        podman("rmi", *old)
        podman("image", "prune", "--force")
        say(f"removed {len(old)} older image(s): {' '.join(old)}")


def build() -> str:
    """Returns the reference of the image for the current tree, building it (and the base) when missing."""
    require("podman", "runc", "debootstrap")
    started = time.monotonic()
    cache_root().mkdir(parents=True, exist_ok=True)
    with locked(cache_root() / "build.lock"):
        recipe = base_recipe()
        ref = f"{IMAGE_NAME}:{tree_key(recipe)}"
        if image_exists(ref):
            say(f"{ref} is up to date ({mb(image_size(ref))})")
            return ref
        ensure_base(recipe)
        argv = ["build", "--pull=never", "--isolation", "chroot", "--build-arg", f"BASE={recipe.ref}"]
        argv += pip_mounts()
        argv += ["-t", ref, "-f", str(DOCKERFILE), str(REPO)]
        log_path = cache_root() / "build.log"
        say(f"podman {' '.join(argv)}  (log: {log_path})")
        build_started = time.monotonic()
        with log_path.open("w") as log:
            done = subprocess.run(
                ["podman", *argv], env=podman_env(), stdout=log, stderr=subprocess.STDOUT, timeout=1800, check=False
            )
        if done.returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
            raise ImageError(f"podman build: exit {done.returncode}; full log: {log_path}\n{tail}")
        say(f"built {ref} in {took(build_started)}")
        prune_old_images()
    say(f"{ref}: {mb(image_size(ref))} (base {recipe.ref}: {mb(image_size(recipe.ref))}); total {took(started)}")
    return ref


# ----------------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the image for the current tree unless it exists")
    run = commands.add_parser("podman", help="run podman with this machine's settings (CONTAINERS_CONF)")
    run.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
            return 0
        require("podman")
        return subprocess.run(["podman", *args.args], env=podman_env(), check=False).returncode
    except ImageError as error:
        say(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
