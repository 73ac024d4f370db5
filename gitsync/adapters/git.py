"""The Git adapter: ``GitRepository`` implements ``ports.GitReader`` for one URL and branch.

GitPython is used only through its command layer (``repo.git.<verb>(...)``) inside ``with Repo(path) as repo:``,
so no ``git cat-file --batch`` process outlives a call: GitPython's object database keeps those alive for as long
as a Repo lives, which leaks processes in a daemon. Every call is time-bounded.

Security contract:
- refs and URLs from configuration come after ``--end-of-options`` (or as refspecs we build), never as options;
- credentials travel only in the child's environment: an SSH key via ``GIT_SSH_COMMAND`` with
  ``StrictHostKeyChecking=yes`` against the configured known_hosts (a missing key or known_hosts file is named
  before ssh runs), or an HTTPS token as an ``http.extraHeader`` set through
  ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``; never argv, logs or errors;
- every error message is scrubbed of ``user:password@`` in URLs and of the token itself.

Layout of the cache directory: ``repo.git`` (bare, shallow, one branch) and ``snapshots/<sha>`` (the tree at a
commit, extracted from ``git archive`` as git writes it, files past ``ports.WHOLE_FILE_BYTES`` cut to one byte more:
``gitsync.adapters.trees``; the fetched head's and the most recently used few are kept). A commit other
than the fetched head (a revision pinned in ``promoted.yaml``) is fetched by its id, depth 1, when first needed.
Every fetch leaves the previous head's objects unreachable (and one more line in ``shallow``), so every ``GC_EVERY``
fetches the objects are counted (one cheap ``count-objects``) and, when they outgrow twice what the last collection
left plus ``GC_SLACK``, collected with ``gc --prune=now``: the cache stays near the size of one commit however many
pushes and rewrites it follows.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from git import Git, Repo
from git.exc import GitCommandError

from gitsync import log as logging
from gitsync.adapters.trees import ArchiveFailed, extract_archive, git_archive, remove_stale_staging
from gitsync.errors import TerminalError, TransientError
from gitsync.ledger import NOTES_REF
from gitsync.ports import WHOLE_FILE_BYTES, Commit, GitAuth, VerifyConfig, VerifyMode

__all__ = ["GitError", "GitRepository", "SignatureError", "scrub"]

_CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
SNAPSHOTS_KEPT = 5
_TREE_LISTINGS = 64
"""Folder listings ``tree_id`` keeps (a few commits of a repository's chart folders)."""
SNAPSHOT_MIN_AGE = 60.0
"""Seconds a snapshot survives even when it is not among the newest: a render may still be reading it."""
GC_EVERY = 10
"""Fetches between two object counts of the cache (a fetch happens only when the branch head moved)."""
GC_SLACK = 1000
"""Objects the cache may hold beyond twice what the last collection left before it is collected again."""

log = logging.get("gitsync.git")


class GitError(TransientError):
    """Git failed (network, remote, missing branch); retried with backoff. The message holds no credentials."""


class SignatureError(TerminalError):
    """The head commit is unsigned or signed by an unknown key; nothing from it is deployed."""


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without URL credentials or any of ``secrets`` (applied to every message that leaves here)."""
    text = _CREDENTIALS_IN_URL.sub(r"\g<scheme>***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


_VERIFIED_BY = {
    VerifyMode.SSH: "allowed signers",
    VerifyMode.GPG: "GPG keyring",
    VerifyMode.SSH_OR_GPG: "allowed signers or GPG keyring",
}


_PLAN_IDENTITY = {
    f"GIT_{who}_{what}": value
    for who in ("AUTHOR", "COMMITTER")
    for what, value in (("NAME", "gitsync"), ("EMAIL", "gitsync@noreply.invalid"), ("DATE", "1970-01-01T00:00:00Z"))
}
"""Author and committer of ``merge_commit``'s commits, fixed: the same merge is the same commit id every time."""


class GitRepository:
    """One branch of one remote, mirrored shallowly under ``cache_dir``. Thread-safe: calls are serialised."""

    def __init__(
        self,
        url: str,
        branch: str,
        cache_dir: Path,
        *,
        auth: GitAuth | None = None,
        verify: VerifyConfig | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.branch = branch
        self._auth = auth or GitAuth()
        self._verify = verify or VerifyConfig()
        self._timeout = timeout
        self._bare = cache_dir / "repo.git"
        self._snapshots = cache_dir / "snapshots"
        self._lock = threading.Lock()
        self._listings_lock = threading.Lock()
        self._tree_listings: dict[tuple[str, str], dict[str, str]] = {}
        """(commit, folder) -> path -> object id, oldest first (``tree_id``)."""
        self.display_url = scrub(url)
        self._fetches = 0
        self._gc_baseline = 0
        self._head = ""
        """The last fetched head: its snapshot is never pruned (the source renders from it however old it is)."""
        self._ledger_head = ""
        """Objects in ``repo.git`` after the last collection (0: none yet in this process)."""

    # -- environment and errors ------------------------------------------------------------------------------

    def _token(self) -> str:
        if self._auth.token_file is None:
            return ""
        try:
            return self._auth.token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise GitError(
                f"{self.display_url}: cannot read token file {self._auth.token_file}: {e.strerror}"
            ) from None

    def _env(self) -> dict[str, str]:
        """The child environment: no prompts, C locale, and the credentials (never argv)."""
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        # A blob past WHOLE_FILE_BYTES is streamed (fetch, archive, gc), not inflated in memory: by default, up to
        # 512 MiB, a 200 MB file cost git 196 MiB of heap when fetched, past the agent's 256 MiB limit for 300 MB.
        config: list[tuple[str, str]] = [
            ("protocol.ext.allow", "never"),
            ("core.bigFileThreshold", str(WHOLE_FILE_BYTES)),
        ]
        if self._auth.ssh_key_file is not None:
            self._check_readable(self._auth.ssh_key_file, "SSH key file (repo.auth.sshKeyFile)")
            if self._auth.known_hosts_file is None:
                raise GitError(f"{self.display_url}: an SSH key needs a known_hosts file (repo.auth.knownHostsFile)")
            self._check_readable(self._auth.known_hosts_file, "known_hosts file (repo.auth.knownHostsFile)")
            ssh = [
                "ssh",
                "-i",
                str(self._auth.ssh_key_file),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={self._auth.known_hosts_file}",
            ]
            env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        token = self._token()
        if token:
            basic = base64.b64encode(f"{self._auth.username}:{token}".encode()).decode()
            config.append(("http.extraHeader", f"Authorization: Basic {basic}"))
        if self._verify.mode in (VerifyMode.SSH, VerifyMode.SSH_OR_GPG):
            config.append(("gpg.ssh.allowedSignersFile", str(self._verify.allowed_signers_file)))
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for index, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        return env

    def _check_readable(self, path: Path, what: str) -> None:
        """Fail before ssh runs, naming the file: ssh itself would only warn and then report "Permission denied"
        or "Host key verification failed", which hides that the file is missing."""
        try:
            with path.open("rb"):
                pass
        except OSError as e:
            raise GitError(f"{self.display_url}: cannot read {what} {path}: {e.strerror}") from None

    def _ssh_hint(self, detail: str) -> str:
        """What to check when ssh refused: the files it was given (paths only; their contents never)."""
        if self._auth.ssh_key_file is None:
            return ""
        if "host key verification failed" in detail.lower():
            return f" (the server's host key is checked against {self._auth.known_hosts_file})"
        if "permission denied (publickey" in detail.lower():
            return f" (the server does not accept the key {self._auth.ssh_key_file} for this user)"
        return ""

    def _secrets(self) -> tuple[str, ...]:
        token = self._token()
        if not token:
            return ()
        return (token, base64.b64encode(f"{self._auth.username}:{token}".encode()).decode())

    def _fail(self, verb: str, error: GitCommandError | OSError, cls: type[GitError] = GitError) -> GitError:
        detail = _reason(error) if isinstance(error, GitCommandError) else error.strerror or str(error)
        detail += self._ssh_hint(detail)
        return cls(scrub(f"{self.display_url}: git {verb} failed: {detail}", self._secrets()))

    def _run(self, git: Git, verb: str, *args: str, **kwargs: object) -> str:
        try:
            out = git.execute(
                ["git", verb, *args],
                env={**os.environ, **self._env()},
                kill_after_timeout=self._timeout,
                **kwargs,  # type: ignore[call-overload]
            )
        except (GitCommandError, OSError) as e:
            raise self._fail(verb, e) from None
        return str(out)

    @contextmanager
    def cache(self, **environment: str) -> Iterator[Callable[..., str]]:
        """The bare cache, locked against this repository's other calls, and a runner for it:
        ``run(verb, *args, **execute_options)`` with the credentials, time bound and scrubbed errors of every
        call here (``GitError`` on failure). ``environment`` adds variables for the whole session (a temporary
        index, the committer). For the adapters that write: notes and commits (see ``gitsync.adapters.notes``
        and ``gitsync.adapters.gitwrite``)."""
        with self._lock:
            if not (self._bare / "HEAD").exists():
                self._bare.parent.mkdir(parents=True, exist_ok=True)
                Repo.init(self._bare, bare=True).close()
            with Repo(self._bare) as repo, repo.git.custom_environment(**environment):
                yield partial(self._run, repo.git)

    # -- ports.GitReader --------------------------------------------------------------------------------------

    def remote_head(self) -> str:
        """The branch's head; the same ``ls-remote`` reads the ledger's notes ref (``ledger_head``), so a poll
        costs one request whatever the number of app-envs and whether other agents write to the ledger."""
        branch = f"refs/heads/{self.branch}"
        out = self._run(Git(), "ls-remote", "--end-of-options", self.url, branch, NOTES_REF)
        refs = {ref: sha for sha, _, ref in (line.partition("\t") for line in out.splitlines()) if _SHA.match(sha)}
        self._ledger_head = refs.get(NOTES_REF, "")
        if branch in refs:
            return refs[branch]
        raise GitError(f"{self.display_url}: branch {self.branch} not found on the remote")

    def ledger_head(self) -> str:
        return self._ledger_head

    def fetch(self) -> Commit:
        with self._lock:
            tracking = f"refs/remotes/origin/{self.branch}"
            with self._open() as repo:
                self._run(
                    repo.git,
                    "fetch",
                    "--depth=1",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--end-of-options",
                    self.url,
                    f"+refs/heads/{self.branch}:{tracking}",
                )
                sha = self._run(repo.git, "rev-parse", "--verify", "--end-of-options", f"{tracking}^{{commit}}").strip()
                self._fetches += 1
                self._head = sha
                if self._fetches % GC_EVERY == 0:
                    self._maintain(repo)
                return self._commit(repo, sha)

    def _count_objects(self, repo: Repo) -> int:
        """Objects stored in ``repo.git``, loose and packed."""
        counts = dict(line.partition(": ")[::2] for line in self._run(repo.git, "count-objects", "-v").splitlines())
        return int(counts.get("count", 0)) + int(counts.get("in-pack", 0))

    def _maintain(self, repo: Repo) -> None:
        """Collect the objects earlier heads left behind once they outgrow the bound (see the module doc). A
        failure is logged and left for the next round: the fetch it follows has succeeded."""
        try:
            before = self._count_objects(repo)
            if before <= 2 * self._gc_baseline + GC_SLACK:
                return
            started = time.monotonic()
            self._run(repo.git, "reflog", "expire", "--expire=now", "--expire-unreachable=now", "--all")
            self._run(repo.git, "gc", "--prune=now", "--quiet")
            self._gc_baseline = self._count_objects(repo)
        except GitError as e:
            log.warning("git.gc_failed", error=str(e))
            return
        log.info(
            "git.gc",
            objects_before=before,
            objects_after=self._gc_baseline,
            seconds=round(time.monotonic() - started, 3),
        )

    def _commit(self, repo: Repo, sha: str) -> Commit:
        out = self._run(repo.git, "show", "-s", "--format=%H%x00%an <%ae>%x00%ct%x00%B", "--end-of-options", sha)
        full, author, when, message = [*out.split("\x00", 3), "", "", ""][:4]
        return Commit(sha=full.strip(), author=author, message=message.strip(), time=float(when or 0))

    def verify(self, sha: str) -> None:
        if self._verify.mode is VerifyMode.NONE:
            return
        with self._lock, Repo(self._bare) as repo, self._gnupg_home() as gnupg:
            try:
                repo.git.execute(
                    ["git", "verify-commit", "--end-of-options", sha],
                    env={**os.environ, **self._env(), **gnupg},
                    kill_after_timeout=self._timeout,
                )
            except GitCommandError as e:
                # verify-commit prints nothing for a commit that carries no signature at all
                reason = _reason(e) if str(e.stderr or "").strip() else "the commit is not signed"
                raise SignatureError(
                    f"commit {sha[:12]}: signature not verified against the configured "
                    f"{_VERIFIED_BY[self._verify.mode]}: "
                    f"{scrub(reason, self._secrets())}"
                ) from None

    @contextmanager
    def _gnupg_home(self) -> Iterator[dict[str, str]]:
        """``GNUPGHOME`` for one GPG verification: a private copy of the configured keyring's files. gpg writes its
        trust database and lock files into its home even to verify, and the keyring as deployed is a read-only
        Secret volume (its files are links into ``..data``, which the copy follows and the hidden entries it
        skips). Nothing for the other modes."""
        if self._verify.mode not in (VerifyMode.GPG, VerifyMode.SSH_OR_GPG) or self._verify.gpg_keyring is None:
            yield {}
            return
        keyring = self._verify.gpg_keyring
        with tempfile.TemporaryDirectory(prefix="gitsync-gnupg-") as home:
            try:
                for entry in keyring.iterdir():
                    if entry.is_file() and not entry.name.startswith("."):
                        shutil.copyfile(entry, Path(home) / entry.name)
            except OSError as e:
                raise SignatureError(
                    f"cannot read the GPG keyring (repo.verify.gpgKeyring) {keyring}: {e.strerror}"
                ) from None
            yield {"GNUPGHOME": home}

    def _present(self, repo: Repo, sha: str) -> bool:
        try:
            self._run(repo.git, "cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}")
        except GitError:
            return False
        return True

    def _ensure(self, repo: Repo, sha: str) -> None:
        """Make commit ``sha`` readable: the fetched head is; any other (a pinned revision) is fetched by its id,
        depth 1, without a ref (the next collection may drop it; it is fetched again when needed)."""
        if self._present(repo, sha):
            return
        try:
            self._run(
                repo.git, "fetch", "--depth=1", "--no-tags", "--no-write-fetch-head", "--end-of-options", self.url, sha
            )
        except GitError as e:
            raise GitError(f"{e} (commit {sha[:12]}: is it on the remote?)") from None

    def _open(self) -> Repo:
        if not (self._bare / "HEAD").exists():
            self._bare.parent.mkdir(parents=True, exist_ok=True)
            Repo.init(self._bare, bare=True).close()
        return Repo(self._bare)

    def snapshot(self, sha: str) -> Path:
        if not _SHA.match(sha):
            raise GitError(f"{self.display_url}: not a commit id: {sha[:80]!r}")
        target = self._snapshots / sha
        with self._lock:
            if target.is_dir():
                os.utime(target)  # in use: pruning keeps the most recently used
                return target
            self._snapshots.mkdir(parents=True, exist_ok=True)
            with self._open() as repo:
                self._ensure(repo, sha)
            archive = partial(
                git_archive, sha, cwd=self._bare, env={**os.environ, **self._env()}, timeout=self._timeout
            )
            try:
                extract_archive(archive, target, f"{self.display_url}: commit {sha[:12]}")
            except ArchiveFailed as e:
                raise self._fail("archive", GitCommandError(["git", "archive"], e.status, e.stderr)) from None
            self._prune_snapshots(keep=sha)
            return target

    def merge_commit(self, base: str, head: str, merge_base: str) -> str:
        """A commit, in the cache only (never pushed), whose tree is ``head`` merged into ``base`` from their
        ``merge_base`` file by file: what merging a pull request whose branch is behind its base would deploy,
        where the branch alone would seem to undo every change the base got since. "" when a file changed on both
        sides (git might merge its lines, or they conflict: not a plain pick of one side either way)."""
        for sha in (base, head, merge_base):
            if not _SHA.match(sha):
                raise GitError(f"{self.display_url}: not a commit id: {sha[:80]!r}")
        with self._lock, self._open() as repo, tempfile.TemporaryDirectory(prefix="gitsync-merge-") as scratch:
            for sha in (merge_base, base, head):
                self._ensure(repo, sha)
            with repo.git.custom_environment(GIT_INDEX_FILE=str(Path(scratch) / "index"), **_PLAN_IDENTITY):
                self._run(repo.git, "read-tree", "-m", "-i", "--aggressive", merge_base, base, head)
                try:
                    tree = self._run(repo.git, "write-tree").strip()
                except GitError:
                    return ""  # unmerged paths: a file both sides changed
                message = f"gitsync plan: {head[:12]} merged into {base[:12]}"
                return self._run(repo.git, "commit-tree", "-p", base, "-p", head, "-m", message, tree).strip()

    def tree_id(self, sha: str, path: str) -> str:
        """The object id of ``path`` at commit ``sha`` ("" when absent). Ids never change for a commit, so the
        entries of the path's folder are listed once (one ``ls-tree`` for all the apps of ``apps/``) and kept
        for the last ``_TREE_LISTINGS`` folders asked about: a commit touching 1,000 apps costs one git process,
        not 1,000 serialised ones."""
        if not _SHA.match(sha):
            raise GitError(f"{self.display_url}: not a commit id: {sha[:80]!r}")
        path = path.strip("/")
        if not path:
            with self._lock, self._open() as repo:
                self._ensure(repo, sha)
                return self._run(repo.git, "rev-parse", "--verify", "--end-of-options", f"{sha}^{{tree}}").strip()
        folder = path.rpartition("/")[0]
        listing = self._tree_listings.get((sha, folder))
        if listing is None:
            with self._lock, self._open() as repo:
                self._ensure(repo, sha)
                where = ["--", f"{folder}/"] if folder else []
                out = self._run(repo.git, "ls-tree", "-z", "--full-tree", "--end-of-options", sha, *where)
            listing = {}
            for entry in out.split("\0"):
                mode_type_id, _, name = entry.partition("\t")
                if name:
                    listing[name] = mode_type_id.split()[2]
            with self._listings_lock:
                self._tree_listings[(sha, folder)] = listing
                while len(self._tree_listings) > _TREE_LISTINGS:
                    self._tree_listings.pop(next(iter(self._tree_listings)))
        return listing.get(path, "")

    def _prune_snapshots(self, keep: str) -> None:
        now = time.time()
        kept = {keep, self._head}
        entries = sorted(
            (p for p in self._snapshots.iterdir() if p.is_dir() and p.name not in kept and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in entries[SNAPSHOTS_KEPT - 1 :]:
            if now - old.stat().st_mtime > SNAPSHOT_MIN_AGE:
                shutil.rmtree(old, ignore_errors=True)
        remove_stale_staging(self._snapshots, self._timeout)


_USEFUL = ("fatal:", "error:", "remote:", "ssh:", "gpg:", "hint:")
_SSH_REASON = re.compile(
    r"host key verification failed|host key is known for|host key for .* has changed|permission denied \(",
    re.IGNORECASE,
)
"""ssh's own words for a refused host key or client key, which carry no prefix of ``_USEFUL``."""
MAX_REASON_LINES = 5
MAX_REASON_CHARS = 600


def _reason(error: GitCommandError) -> str:
    """Why git failed, on one line: its ``fatal:``/``error:``/``remote:`` lines (the server's own words are often
    the reason: "remote: Repository not found") and ssh's refusals ("Host key verification failed."), or its last
    line when it printed none of those; bounded, so a chatty remote cannot flood a log. Callers scrub credentials
    from it."""
    lines = [line.strip() for line in str(error.stderr or "").splitlines() if line.strip()]
    lines = [line.removeprefix("stderr: ").strip().strip("'").strip() for line in lines]
    lines = [line for line in lines if line]
    useful = [line for line in lines if line.lower().startswith(_USEFUL) or _SSH_REASON.search(line)] or lines[-1:]
    reason = " | ".join(dict.fromkeys(useful[-MAX_REASON_LINES:]))
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return reason or f"exit status {error.status}"
