"""The source stage: which commit to deploy, and the immutable tree of it to render from.

Contract: all Git I/O goes through ``ports.GitReader``; this module decides when to touch the remote at all.
- ``check()`` (the poller) costs one ``ls-remote``; a head that did not move costs nothing more;
- ``resolve(wanted)`` (a reconcile) reuses the current snapshot when it already is the wanted commit, or when
  nothing newer is wanted (drift, retry, startup after the first fetch); otherwise it fetches the branch head;
- the branch head always wins: a webhook naming an older commit (deliveries arrive out of order) deploys the
  head, never goes back in time; a force-push simply moves the head;
- a head whose signature does not verify raises ``RevisionRefused`` (terminal) and is never snapshotted; the
  current snapshot (the last good release) stays what drift and retries reconcile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from gitsync.errors import TerminalError
from gitsync.ports import GitReader, Snapshot


class RevisionRefused(TerminalError):
    """The branch head failed signature verification; ``revision`` is that head (the queue parks on it)."""

    def __init__(self, message: str, revision: str) -> None:
        super().__init__(message)
        self.revision = revision


class Source:
    """The one branch the agent follows, shared by all workers (fetches are serialised)."""

    def __init__(self, git: GitReader, on_fetch: Callable[[float], None] | None = None) -> None:
        """``on_fetch`` receives the seconds each fetch + verify + snapshot took (the fetch duration metric)."""
        self._git = git
        self._lock = threading.Lock()
        self._current: Snapshot | None = None
        self._refused: RevisionRefused | None = None
        self._reported = ""
        self.seen = ""
        """The remote head as last seen (by ``check`` or ``resolve``): what a reconcile enqueued later (a shard
        taken over) asks for, so it deploys that commit, not an older snapshot."""
        self._on_fetch = on_fetch

    @property
    def current(self) -> Snapshot | None:
        return self._current

    def check(self) -> str | None:
        """The remote head when it is news: not the current snapshot, not refused, not reported before (the
        poller enqueues it once; the queue keeps it until a reconcile resolves it). None otherwise."""
        head = self._git.remote_head()
        self.seen = head
        current = self._current
        known = {self._reported, current.revision if current else "", self._refused.revision if self._refused else ""}
        if head in known:
            return None
        self._reported = head
        return head

    def ledger(self) -> str:
        """The ledger's notes ref as the last ``check`` saw it (the same ``ls-remote``)."""
        return self._git.ledger_head()

    def tree(self, sha: str) -> Path:
        """The tree at ``sha`` for the renderer (its ``trees``): the current snapshot, or a revision pinned in
        ``promoted.yaml``, fetched by id. Not signature-checked itself: the verified head names it by its hash."""
        current = self._current
        if current is not None and current.revision == sha:
            return current.path
        return self._git.snapshot(sha)

    def resolve(self, wanted: str = "") -> Snapshot:
        """The snapshot to reconcile: the branch head, fetched only when it may have moved (see module doc)."""
        with self._lock:
            current = self._current
            if current is not None and wanted in ("", current.revision):
                return current
            head = self._git.remote_head()
            self.seen = head
            if current is not None and current.revision == head:
                return current
            if self._refused is not None and self._refused.revision == head:
                raise RevisionRefused(str(self._refused), head)
            started = time.monotonic()
            commit = self._git.fetch()
            try:
                self._git.verify(commit.sha)
            except TerminalError as e:
                self._refused = RevisionRefused(str(e), commit.sha)
                raise RevisionRefused(str(e), commit.sha) from None
            snapshot = Snapshot(commit, self._git.snapshot(commit.sha))
            if self._on_fetch is not None:
                self._on_fetch(time.monotonic() - started)
            self._current = snapshot
            return snapshot
