"""The source stage of the CLI: a local checkout (``gitsync sync --repo R``) as a ``reconcile.SnapshotSource``.

The tree is the directory as it is on disk (what the user sees and rendered). Its revision is the checkout's
``HEAD`` commit, with ``-dirty`` appended when the work tree has uncommitted changes, so a status or history entry
written from a laptop never claims a commit it did not deploy (and the agent, which compares revisions, never takes
a dirty sync for its commit). A directory that is not a Git work tree has revision "" and no author.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gitsync.adapters.trees import LocalTrees
from gitsync.ports import Commit, Snapshot

__all__ = ["LocalCheckout"]

_TIMEOUT = 10.0


class LocalCheckout:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._trees = LocalTrees(path)

    def resolve(self, wanted: str = "") -> Snapshot:
        return Snapshot(self._head(), self._path)

    def tree(self, sha: str) -> Path:
        return self._trees(sha)

    def _git(self, *args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(self._path), *args],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    def _head(self) -> Commit:
        shown = self._git("log", "-1", "--format=%H%x00%an <%ae>%x00%ct%x00%B", "HEAD")
        if not shown:
            return Commit("", "", "", 0.0)
        sha, author, when, message = [*shown.split("\0", 3), "", "", ""][:4]
        dirty = self._git("status", "--porcelain", "--untracked-files=no", "--", ".")
        revision = sha + ("-dirty" if dirty else "")
        return Commit(revision, author, message.strip(), float(when or 0))
