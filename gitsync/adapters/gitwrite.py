"""Writing commits to the followed repository: ``CacheWriter`` (the agent, in its bare cache) and ``LocalWriter``
(the ``gitsync promote``/``rollback`` commands, in a person's clone). Both implement ``ports.GitWriter``.

A commit is built with plumbing only (a temporary index, ``read-tree``, ``update-index``, ``write-tree``,
``commit-tree``), so no work tree is needed and nothing a person has checked out is touched.

Safety contract of ``CacheWriter.write``:
- exactly once: before building, the tracked branch's recent history (and the review branch) is searched for a
  commit whose trailers carry the request's identity; if one exists it is returned and nothing is written. A
  process killed after the commit or after the push therefore writes nothing more on its next attempt, and of
  two replicas racing, the loser finds the winner's commit after its push is refused;
- the tracked branch is pushed without force. A refused push after which the remote head moved is a lost race:
  the same edits (functions of the file's content) are applied again on the new head, up to ``ATTEMPTS`` times;
  a refused push while the head did not move is ``WriteAccessError`` (terminal: no write access, a protected
  branch, a hook), one line, so the agent reports it and does not loop;
- a review branch (pull-request mode) is set by force, but only with a lease on the value just read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from git import Git
from git.exc import GitCommandError

from gitsync.adapters.git import GitError, GitRepository, scrub
from gitsync.errors import TerminalError
from gitsync.ports import CommitRequest, FileEdit, WriteResult

__all__ = [
    "ATTEMPTS",
    "SEARCH_DEPTH",
    "CacheWriter",
    "Identity",
    "LocalWriter",
    "Run",
    "Session",
    "WriteAccessError",
    "find_identified",
    "local_session",
]

Run = Callable[..., str]
"""``run(verb, *args, **execute_options) -> stdout``: one git command in one repository; ``GitError`` on failure."""
Session = Callable[..., AbstractContextManager[Run]]
"""``session(**environment)``: a ``Run`` for one repository (``GitRepository.cache`` or ``local_session``)."""

SEARCH_DEPTH = 200
"""Commits of the tracked branch searched for an existing write of the same identity (and fetched for it)."""
ATTEMPTS = 5
"""Pushes tried, each on the newest head, before a write gives up for this round (a transient error)."""
_EMPTY = "0" * 40
_HEAD_REF = "refs/gitsync/write/head"
_REVIEW_REF = "refs/gitsync/write/review"


class WriteAccessError(TerminalError):
    """The remote refused a push that lost no race: no write access, a protected branch or a rejecting hook."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Author and committer of what gitsync writes (``agent.yaml``)."""

    name: str
    email: str

    def environment(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


def find_identified(run: Run, refs: Sequence[str], identity: Sequence[tuple[str, str]], depth: int) -> str | None:
    """The newest commit reachable from ``refs`` (at most ``depth`` of them) whose trailers include every
    ``identity`` pair (keys compared case-insensitively, as Git does), or None."""
    wanted = {(key.lower(), value) for key, value in identity}
    out = run("log", f"--max-count={depth}", "--format=%H%x1f%(trailers:only,unfold)%x1e", "--end-of-options", *refs)
    for record in out.split("\x1e"):
        sha, _, block = record.strip().partition("\x1f")
        if sha and wanted <= set(parse_trailers(block)):
            return sha
    return None


def parse_trailers(block: str) -> list[tuple[str, str]]:
    """``Key: value`` lines as (lower-cased key, value) pairs, in order."""
    pairs = []
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            pairs.append((key.strip().lower(), value.strip()))
    return pairs


def build_commit(
    run: Run, parent: str, request: CommitRequest, scratch: Path, signing_key: Path | bool | None = None
) -> str | None:
    """A commit on ``parent`` with ``request``'s edits and message, built in the index ``GIT_INDEX_FILE`` names
    (the caller's session sets it to a file in ``scratch``); None when the edits change nothing. Signed with
    ``signing_key``, or with the repository's configured ``user.signingKey`` when it is True (``commit-tree``
    signs only when asked: it does not read ``commit.gpgSign``)."""
    run("read-tree", "--end-of-options", parent)
    for edit in request.edits:
        if isinstance(edit, FileEdit):
            current = _file_text(run, parent, edit.path)
            text_file = scratch / "blob"
            text_file.write_text(edit.edit(current), encoding="utf-8")
            blob = run("hash-object", "-w", "--no-filters", "--", str(text_file)).strip()
            lines = [f"100644 {blob}\t{edit.path}"]
        else:
            lines = [f"0 {_EMPTY}\t{path}" for path in _blobs(run, parent, edit.path)]
            lines += [line for line in run("ls-tree", "-r", "--full-tree", edit.commit, "--", edit.path).splitlines()]
        index_info = scratch / "index-info"
        index_info.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        with index_info.open("rb") as stdin:
            run("update-index", "--index-info", istream=stdin)
    tree = run("write-tree").strip()
    if tree == run("rev-parse", "--verify", "--end-of-options", f"{parent}^{{tree}}").strip():
        return None
    message = scratch / "message"
    message.write_text(request.message, encoding="utf-8")
    sign = ["-S"] if signing_key is True else [f"-S{signing_key}"] if isinstance(signing_key, Path) else []
    return run("commit-tree", *sign, "-p", parent, "-F", str(message), tree).strip()


def _file_text(run: Run, commit: str, path: str) -> str | None:
    if not run("ls-tree", "--full-tree", commit, "--", path).strip():
        return None
    return run("cat-file", "blob", f"{commit}:{path}", strip_newline_in_stdout=False)


def _blobs(run: Run, commit: str, path: str) -> list[str]:
    listing = run("ls-tree", "-r", "--name-only", "--full-tree", commit, "--", path)
    return [line for line in listing.splitlines() if line]


class CacheWriter:
    """``ports.GitWriter`` for the agent: commits built in the bare cache of a ``GitRepository`` and pushed to
    its remote with its credentials (see the module doc for the safety contract)."""

    def __init__(
        self,
        repo: GitRepository,
        identity: Identity,
        *,
        signing_key: Path | None = None,
        attempts: int = ATTEMPTS,
        depth: int = SEARCH_DEPTH,
    ) -> None:
        self._repo = repo
        self._identity = identity
        self._signing_key = signing_key
        self._attempts = attempts
        self._depth = depth

    def write(self, request: CommitRequest) -> WriteResult:
        target = request.branch or self._repo.branch
        with tempfile.TemporaryDirectory(prefix="gitsync-write-") as scratch_dir:
            scratch = Path(scratch_dir)
            session = self._repo.cache(GIT_INDEX_FILE=str(scratch / "index"), **self._identity.environment())
            with session as run:
                if self._signing_key is not None:
                    run("config", "gpg.format", "ssh")
                for _ in range(self._attempts):
                    heads = self._fetch(run, request.branch)
                    head = heads[self._repo.branch]
                    searched = [(_HEAD_REF, self._repo.branch)]
                    if heads.get(request.branch):
                        searched.append((f"{_HEAD_REF}..{_REVIEW_REF}", request.branch))
                    for ref, branch in searched:
                        found = find_identified(run, [ref], request.identity, self._depth)
                        if found:
                            return WriteResult(found, branch, written=False)
                    commit = build_commit(run, head, request, scratch, self._signing_key)
                    if commit is None:
                        return WriteResult(head, self._repo.branch, written=False)
                    try:
                        pushed = self._push(run, commit, request.branch, heads.get(request.branch, ""))
                    except GitError as e:
                        if self._remote_heads(run, request.branch).get(target, "") != heads.get(target, ""):
                            continue  # lost a race: rebuild on the new head
                        raise WriteAccessError(
                            f"{target}: push refused (no write access, a protected branch, or a hook refused it): {e}"
                        ) from None
                    # An identical commit (same parent, edits, message and second) another replica pushed first
                    # makes this push a no-op: the same one commit, not written by us.
                    return WriteResult(commit, target, written=pushed)
        raise GitError(
            f"{self._repo.display_url}: {target} moved under each of {self._attempts} pushes; retrying later"
        )

    def _remote_heads(self, run: Run, review: str) -> dict[str, str]:
        names = [self._repo.branch] + ([review] if review else [])
        out = run("ls-remote", "--end-of-options", self._repo.url, *(f"refs/heads/{n}" for n in names))
        heads = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    def _fetch(self, run: Run, review: str) -> dict[str, str]:
        """The remote heads of the tracked (and review) branch, fetched ``depth`` deep into private refs."""
        heads = self._remote_heads(run, review)
        if self._repo.branch not in heads:
            raise GitError(f"{self._repo.display_url}: branch {self._repo.branch} not found on the remote")
        specs = [f"+refs/heads/{self._repo.branch}:{_HEAD_REF}"]
        if review in heads:
            specs.append(f"+refs/heads/{review}:{_REVIEW_REF}")
        run(
            "fetch",
            f"--depth={self._depth}",
            "--no-tags",
            "--no-write-fetch-head",
            "--end-of-options",
            self._repo.url,
            *specs,
        )
        return heads

    def _push(self, run: Run, commit: str, review: str, review_head: str) -> bool:
        """Push ``commit``; False when the remote had it already (``git push --porcelain`` flag ``=``)."""
        ref = f"refs/heads/{review or self._repo.branch}"
        lease = [f"--force-with-lease={ref}:{review_head}"] if review else []
        out = run("push", "--porcelain", *lease, "--end-of-options", self._repo.url, f"{commit}:{ref}")
        return not any(line.startswith("=\t") for line in out.splitlines())


@contextmanager
def local_session(path: Path, timeout: float = 60.0, **environment: str) -> Iterator[Run]:
    """A runner for the repository at ``path`` (a person's clone; their own Git configuration and credentials
    apply), time-bounded, errors as one scrubbed ``GitError`` line naming ``path``."""
    git = Git(path)

    def run(verb: str, *args: str, **options: object) -> str:
        try:
            out = git.execute(
                ["git", verb, *args],
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **environment},
                kill_after_timeout=timeout,
                **options,  # type: ignore[call-overload]
            )
        except GitCommandError as e:
            lines = [line.strip() for line in str(e.stderr or "").splitlines() if line.strip()]
            detail = (lines[-1] if lines else f"exit status {e.status}").removeprefix("stderr: ").strip("'")
            raise GitError(scrub(f"{path}: git {verb} failed: {detail}")) from None
        return str(out)

    yield run


class LocalWriter:
    """``ports.GitWriter`` for a person's clone: the commit goes on the checked-out branch (fast-forwarded, so
    the work tree follows), and with ``push`` to the same branch of ``remote``, never by force. A refused push
    leaves the commit in the clone and says so; ``request.branch`` is not used (check out the branch first).
    Signed as ``git commit`` would sign it there (``commit.gpgSign``, with the person's ``user.signingKey`` and
    ``gpg.format``), so an agent that verifies signatures (``repo.verify``) deploys a person's ``gitsync
    promote`` or ``rollback`` commit."""

    def __init__(self, path: Path, *, push: bool = False, remote: str = "origin", depth: int = SEARCH_DEPTH) -> None:
        self._path = path
        self._push = push
        self._remote = remote
        self._depth = depth

    def write(self, request: CommitRequest) -> WriteResult:
        with local_session(self._path) as run:
            branch = run("symbolic-ref", "--short", "HEAD").strip()
            head = run("rev-parse", "--verify", "HEAD").strip()
            found = find_identified(run, ["HEAD"], request.identity, self._depth)
            result = WriteResult(found or head, branch, written=False)
            if found is None:
                with (
                    tempfile.TemporaryDirectory(prefix="gitsync-write-") as scratch,
                    local_session(self._path, GIT_INDEX_FILE=str(Path(scratch) / "index")) as build,
                ):
                    commit = build_commit(build, head, request, Path(scratch), _signs_commits(run))
                if commit is not None:
                    run("merge", "--ff-only", "--quiet", commit)
                    result = WriteResult(commit, branch, written=True)
            if self._push:
                self._publish(run, branch)  # also what an earlier run committed and did not push
            return result

    def _publish(self, run: Run, branch: str) -> None:
        try:
            run("push", "--quiet", "--end-of-options", self._remote, f"HEAD:refs/heads/{branch}")
        except GitError as e:
            raise WriteAccessError(f"{e}; the commit stays in {self._path} (pull, then push it)") from None


def _signs_commits(run: Run) -> bool:
    """Whether ``git commit`` signs in this repository (``commit.gpgSign``; unset is false)."""
    try:
        return run("config", "--type=bool", "--get", "commit.gpgsign").strip() == "true"
    except GitError:  # unset: exit status 1
        return False
