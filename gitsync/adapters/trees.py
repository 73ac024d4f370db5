"""Directories holding a repository's tree at a commit: how the renderer reads a pinned chart.

``extract_archive`` turns the tar stream of ``git_archive`` into a directory atomically, reading it as git writes
it (the agent's snapshots use it too). The archive never touches the disk, and a file past
``ports.WHOLE_FILE_BYTES`` is written cut to one byte more (the renderer reads no more of any file, and one byte
more still reads as too large), so a snapshot takes at most about that much disk per file however large the
repository's files are (a video in ``docs/``); one log event per tree names the files cut.
``LocalTrees`` is the ``trees`` callable of the command line (``renderers.render.Trees``): it reads commits
from the local checkout that holds ``--repo`` (a folder inside a larger checkout works: only that folder is
extracted) and caches each tree outside the checkout, under ``$XDG_CACHE_HOME/gitsync/trees/<tree id>``, keyed by
the Git id of the extracted tree, so the cache is content-addressed and never stale. It is bounded: a use
refreshes a tree's modification time, and after an extraction the least recently used trees past ``MAX_TREES``
are removed, unless used in the last ``IN_USE_SECONDS`` (another command may be reading one). Uses the ``git``
command directly (no GitPython): ``gitsync render`` stays quick to start.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import IO

from gitsync import log as logging
from gitsync.errors import TerminalError
from gitsync.ports import WHOLE_FILE_BYTES

__all__ = [
    "STAGING_PREFIX",
    "ArchiveFailed",
    "LocalTrees",
    "extract_archive",
    "git_archive",
    "remove_stale_staging",
    "user_cache_dir",
]

log = logging.get("gitsync.trees")

_SHA = re.compile(r"[0-9a-f]{40}\Z")
_GIT_TIMEOUT = 60.0
_CHUNK = 1 << 20
MAX_TREES = 64
"""Trees ``LocalTrees`` keeps: the pinned commits and pull-request bases and heads a checkout's commands read."""
IN_USE_SECONDS = 600.0
"""A tree used this recently is never removed, whatever the count."""
STAGING_PREFIX = ".tmp-"
"""Starts the name of the folder ``extract_archive`` extracts into beside its target (``remove_stale_staging``)."""
LOGGED_PATHS = 20
"""Files cut that the log event names (with their sizes); it counts the others."""


class ArchiveFailed(Exception):
    """``git archive`` exited with an error or ran past its time; callers name their repository (and scrub it)."""

    def __init__(self, status: int, stderr: str) -> None:
        super().__init__(stderr or f"exit status {status}")
        self.status = status
        self.stderr = stderr


@contextmanager
def git_archive(tree_ish: str, *, cwd: Path, env: Mapping[str, str], timeout: float) -> Iterator[IO[bytes]]:
    """The tar of ``tree_ish`` (``git archive`` run in ``cwd``) as git writes it, for ``extract_archive``.

    Leaving the block normally reads what is left and checks git's exit status (``ArchiveFailed``), so a stream cut
    short never passes for a whole tree; leaving it by an exception kills git (nothing waits for the rest of a
    700 MB file). Git gets ``timeout`` seconds for the whole stream. It streams blobs past ``WHOLE_FILE_BYTES``
    instead of holding each whole in its memory (``core.bigFileThreshold``; the default, 512 MiB, would put a
    300 MB file in the agent's 256 MiB). Its stderr goes to a temporary file, so it can never block on it.
    """
    argv = ["git", "-c", f"core.bigFileThreshold={WHOLE_FILE_BYTES}"]
    argv += ["archive", "--format=tar", "--end-of-options", tree_ish]
    expired = threading.Event()
    with tempfile.TemporaryFile() as errors:
        try:
            started = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as e:  # no git, or the folder vanished
            raise ArchiveFailed(-1, f"cannot run git: {e.strerror or e}") from None
        with started as process:
            assert process.stdout is not None

            def expire() -> None:
                expired.set()
                process.kill()

            timer = threading.Timer(timeout, expire)
            timer.daemon = True
            timer.start()
            try:
                yield process.stdout
                while process.stdout.read(_CHUNK):  # the end-of-archive padding
                    pass
            except BaseException:
                process.kill()  # a no-op when git ended by itself: then its own status says why
                if process.wait() in (0, -signal.SIGKILL) and not expired.is_set():
                    raise  # the reader's error (a member refused, a full disk)
                status = process.returncode
            else:
                status = process.wait()
            finally:
                timer.cancel()
        if expired.is_set():
            raise ArchiveFailed(status, f"git archive ran past {timeout:g} seconds") from None
        if status:
            errors.seek(0)
            raise ArchiveFailed(status, errors.read().decode(errors="replace").strip()) from None


def extract_archive(
    open_archive: Callable[[], AbstractContextManager[IO[bytes]]], target: Path, subject: str = ""
) -> None:
    """Fill ``target`` (absent; its parent exists) from the tar stream ``open_archive`` opens (``git_archive``),
    all at once: a reader never sees a half-extracted tree, and a concurrent extraction of the same tree simply
    loses the race. ``subject`` (the repository and commit) leads the error of a member that may not be extracted.
    The files written cut (see the module doc) are logged once (``snapshot.truncated``).

    Read as a stream, members cannot be checked all before the first is written: each is checked as it comes, into
    a staging folder beside ``target`` that becomes ``target`` only once the whole stream was read and git exited
    well; on any error it is removed, so a refused member still leaves nothing behind.
    """
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.parent))
    try:
        tree = staging / "tree"
        with open_archive() as stream:
            cut = _extract(stream, tree, subject or str(target))
        try:
            tree.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if cut:
        log.info(
            "snapshot.truncated",
            tree=subject or str(target),
            files=len(cut),
            kept_bytes=WHOLE_FILE_BYTES + 1,
            sizes=dict(list(cut.items())[:LOGGED_PATHS]),
        )


def remove_stale_staging(folder: Path, older_than: float) -> None:
    """Remove the staging folders ``extract_archive`` left in ``folder`` when its process was killed mid-extraction
    (an OOM kill, a restart, Ctrl-C twice). Only folders named as its own (``STAGING_PREFIX``), and only those
    untouched for ``older_than`` seconds, the time git gets for a whole archive: an extraction under way, of this
    process or of another sharing the folder, is younger than that."""
    stale_before = time.time() - older_than
    for staging in folder.glob(f"{STAGING_PREFIX}*"):
        with contextlib.suppress(OSError):
            if staging.is_dir() and staging.stat().st_mtime < stale_before:
                shutil.rmtree(staging, ignore_errors=True)


def _extract(stream: IO[bytes], tree: Path, subject: str) -> dict[str, int]:
    """Extract a commit's `git archive` into ``tree``, cutting the files past ``WHOLE_FILE_BYTES``. A member that is
    not a file, directory or symlink, or whose path lands outside ``tree`` (through a link extracted before it
    too), is a TerminalError naming it. A symbolic link pointing out of the tree is kept, as a link: one such link
    in a commit must not fail the snapshot every app of that commit shares; nothing follows it here, and the
    renderer refuses it, as one error at the link, when a render would read through it
    (``renderers.values.check_inside``).

    Checked here, not only by tarfile's "data" filter (also applied where it exists, links kept): extraction
    filters arrived in Python 3.11.4, and Debian 12's python3, the base of the agent's image, is 3.11.2.
    """
    tree.mkdir()  # also the whole tree of an empty commit, whose archive has no entries
    root = tree.resolve()
    cut: dict[str, int] = {}  # path: its size in the commit

    def checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        for member in tar:  # each header is read just before its member is extracted
            inside = (root / member.name).resolve(strict=False).is_relative_to(root)
            if not (member.isfile() or member.isdir() or member.issym()) or not inside:
                raise TerminalError(f"{subject}: {member.name}: not a file, directory or link inside the repository")
            if member.isfile() and member.size > WHOLE_FILE_BYTES:
                cut[member.name] = member.size
                member = copy.copy(member)  # the stream still skips the original's whole data to the next header
                member.size = WHOLE_FILE_BYTES + 1
            yield member

    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=_CHUNK) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tree, members=checked(tar), filter=_data_keeping_links)  # noqa: S202 (data filter, links kept)
            else:
                tar.extractall(tree, members=checked(tar))  # noqa: S202 (every member is checked first)
    except (tarfile.TarError, OSError) as e:  # a full disk, a stream git cut short
        raise TerminalError(f"{subject}: cannot unpack its tree: {e}") from None
    return cut


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

    def _git(self, *args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(self.repo), *args],
                capture_output=True,
                timeout=_GIT_TIMEOUT,
                check=True,
                env=_git_environment(),
            )
        except subprocess.CalledProcessError as e:
            raise TerminalError(
                f"{self.repo}: git {args[0]} failed: "
                f"{_last_line(e.stderr.decode(errors='replace')) or f'exit status {e.returncode}'}"
            ) from None
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TerminalError(f"{self.repo}: git {args[0]} failed: {e}") from None
        return done.stdout.decode()

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
        archive = partial(git_archive, tree, cwd=Path(top), env=_git_environment(), timeout=_GIT_TIMEOUT)
        try:
            extract_archive(archive, target)
        except ArchiveFailed as e:
            raise TerminalError(f"{self.repo}: git archive failed: {_last_line(e.stderr) or e}") from None
        self._bound(keep=target)
        return target

    def _bound(self, keep: Path) -> None:
        """Remove the least recently used trees past ``MAX_TREES`` that no command used lately, and what a command
        killed mid-extraction left."""
        remove_stale_staging(self.cache_dir, _GIT_TIMEOUT)
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


def _git_environment() -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}


def _last_line(text: str) -> str:
    return next((line for line in reversed(text.splitlines()) if line.strip()), "")
