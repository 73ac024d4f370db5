"""Directories holding a repository's tree at a commit: how the renderer reads a pinned chart.

``extract_archive`` turns a ``git archive`` tar stream into a directory atomically (the agent's snapshots use it
too). ``LocalTrees`` is the ``trees`` callable of the command line (``renderers.render.Trees``): it reads commits
from the local checkout that holds ``--repo`` (a folder inside a larger checkout works: only that folder is
extracted) and caches each tree outside the checkout, under ``$XDG_CACHE_HOME/gitsync/trees/<tree id>``, keyed by
the Git id of the extracted tree, so the cache is content-addressed and never stale. It is bounded: a use
refreshes a tree's modification time, and after an extraction the least recently used trees past ``MAX_TREES``
are removed, unless used in the last ``IN_USE_SECONDS`` (another command may be reading one). Uses the ``git``
command directly (no GitPython): ``gitsync render`` stays quick to start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from gitsync.errors import TerminalError

__all__ = ["LocalTrees", "extract_archive", "user_cache_dir"]

_SHA = re.compile(r"[0-9a-f]{40}\Z")
_GIT_TIMEOUT = 60.0
MAX_TREES = 64
"""Trees ``LocalTrees`` keeps: the pinned commits and pull-request bases and heads a checkout's commands read."""
IN_USE_SECONDS = 600.0
"""A tree used this recently is never removed, whatever the count."""


def extract_archive(write: Callable[[BinaryIO], object], target: Path, subject: str = "") -> None:
    """Fill ``target`` (absent; its parent exists) from the tar stream ``write`` produces, all at once: a reader
    never sees a half-extracted tree, and a concurrent extraction of the same tree simply loses the race.
    ``subject`` (the repository and commit) leads the error of a member that may not be extracted."""
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        archive = staging / "tree.tar"
        with archive.open("wb") as out:
            write(out)
        tree = staging / "tree"
        with tarfile.open(archive) as tar:
            _extract(tar, tree, subject or str(target))
        tree.mkdir(exist_ok=True)  # the archive of an empty tree has no entries
        try:
            tree.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(tar: tarfile.TarFile, tree: Path, subject: str) -> None:
    """Extract a commit's `git archive` into ``tree``. A member that is not a file, directory or symlink, or whose
    path lands outside ``tree``, is a TerminalError naming it (nothing is extracted). A symbolic link pointing out
    of the tree is kept, as a link: one such link in a commit must not fail the snapshot every app of that commit
    shares; nothing follows it here, and the renderer refuses it, as one error at the link, when a render would
    read through it (``renderers.values.check_inside``).

    Checked here, not only by tarfile's "data" filter (also applied where it exists, links kept): extraction
    filters arrived in Python 3.11.4, and Debian 12's python3, the base of the agent's image, is 3.11.2.
    """
    root = tree.resolve()
    members = tar.getmembers()
    for member in members:
        inside = (root / member.name).resolve(strict=False).is_relative_to(root)
        if not (member.isfile() or member.isdir() or member.issym()) or not inside:
            raise TerminalError(f"{subject}: {member.name}: not a file, directory or link inside the repository")
    try:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tree, members=members, filter=_data_keeping_links)  # noqa: S202 (data filter, links kept)
        else:
            tar.extractall(tree, members=members)  # noqa: S202 (every member was checked above)
    except (tarfile.TarError, OSError) as e:  # a full disk; nothing git archive writes otherwise
        raise TerminalError(f"{subject}: cannot unpack its tree: {e}") from None


def _data_keeping_links(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, except that a symbolic link out of the tree is kept (see ``_extract``)."""
    try:
        return tarfile.data_filter(member, dest)
    except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
        if member.issym():
            return member
        raise


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gitsync`` (default ``~/.cache/gitsync``): per-user caches that outlive a checkout."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gitsync"


class LocalTrees:
    """``sha -> directory`` for the folder ``repo`` of a local Git checkout, as of commit ``sha``.

    Errors are ``TerminalError``s naming the checkout and the commit (``git fetch`` brings a missing one).
    """

    def __init__(self, repo: Path, cache_dir: Path | None = None) -> None:
        self.repo = repo
        self.cache_dir = cache_dir or user_cache_dir() / "trees"

    def _git(self, *args: str, cwd: str = "", stdout: BinaryIO | int = subprocess.PIPE) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", cwd or str(self.repo), *args],
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=_GIT_TIMEOUT,
                check=True,
                env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"},
            )
        except subprocess.CalledProcessError as e:
            detail = next((x for x in reversed(e.stderr.decode(errors="replace").splitlines()) if x.strip()), "")
            raise TerminalError(
                f"{self.repo}: git {args[0]} failed: {detail or f'exit status {e.returncode}'}"
            ) from None
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TerminalError(f"{self.repo}: git {args[0]} failed: {e}") from None
        return done.stdout.decode() if isinstance(done.stdout, bytes) else ""

    def resolve(self, revision: str) -> str:
        """The commit id ``revision`` (a branch, tag, ``HEAD~1``, a short id) names in this checkout."""
        try:
            return self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}").strip()
        except TerminalError:
            raise TerminalError(f"{self.repo}: {revision[:80]!r} is not a commit in this checkout") from None

    def __call__(self, sha: str) -> Path:
        if not _SHA.match(sha):
            raise TerminalError(f"{self.repo}: not a commit id: {sha[:80]!r}")
        top, prefix = [*self._git("rev-parse", "--show-toplevel", "--show-prefix").splitlines(), ""][:2]
        try:
            tree = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{sha}:{prefix}").strip()
        except TerminalError:
            raise TerminalError(
                f"{self.repo}: commit {sha[:12]} (or {prefix or 'its root'} in it) is not in this checkout; "
                "git fetch it first"
            ) from None
        target = self.cache_dir / tree
        if target.is_dir():
            with contextlib.suppress(OSError):
                os.utime(target)
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # From the top: in a subfolder, git archive would only take what lies below the current directory.
        extract_archive(lambda out: self._git("archive", "--format=tar", tree, cwd=top, stdout=out), target)
        self._bound(keep=target)
        return target

    def _bound(self, keep: Path) -> None:
        """Remove the least recently used trees past ``MAX_TREES`` that no command used lately."""
        trees: list[tuple[float, Path]] = []
        for entry in self.cache_dir.iterdir():
            if entry.name.startswith(".") or entry == keep:
                continue
            with contextlib.suppress(OSError):
                trees.append((entry.stat().st_mtime, entry))
        trees.sort(reverse=True)  # newest first
        stale_before = time.time() - IN_USE_SECONDS
        for used, entry in trees[MAX_TREES - 1 :]:
            if used < stale_before:
                shutil.rmtree(entry, ignore_errors=True)
