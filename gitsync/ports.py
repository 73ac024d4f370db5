"""The small interfaces behind which every side effect lives (Kubernetes, Git, clock, metrics).

Stages take these, never concrete clients, so they run in unit tests with small fakes; the real adapters live
in ``gitsync.adapters`` and are tested against real servers (kubelab, real Git repositories, Prometheus).
Append new ports here; keep each one as small as its callers need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gitsync.model import MANAGER, AppEnv, Json, Manifest, ObjectId

if TYPE_CHECKING:  # only named in a Protocol: a one-shot command need not import the ledger
    from gitsync.ledger import LedgerEntry, Seal


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch; the only source of "now" outside the clock adapter."""

    def now(self) -> float: ...


class WatchEventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    BOOKMARK = "BOOKMARK"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: WatchEventType
    object: Json


@dataclass(frozen=True, slots=True)
class ObjectList:
    items: tuple[Json, ...]
    resource_version: str


class Cluster(Protocol):
    """The Kubernetes API as gitsync uses it: plain dicts in and out, identity by ``ObjectId``.

    Errors are raised as ``gitsync.errors.KubeError`` subclasses carrying the object id first.
    """

    def get(self, ref: ObjectId) -> Json | None:
        """The live object, or None when it does not exist."""
        ...

    def list(
        self, group: str, kind: str, namespace: str = "", label_selector: str = "", *, metadata_only: bool = False
    ) -> ObjectList:
        """All objects of a kind; with ``metadata_only`` just their ``metadata`` (a fraction of the bytes)."""
        ...

    def apply(self, body: Json, *, dry_run: bool = False, force: bool = False, manager: str = MANAGER) -> Json:
        """Server-side apply with field manager ``gitsync`` (or ``manager``); returns the resulting (or would-be)
        object."""
        ...

    def create(self, body: Json, *, dry_run: bool = False) -> Json:
        """Create only; ``StaleError`` when the object exists already (nothing of it is changed). With ``dry_run``
        the server validates and admits the body as a new object without storing it, and answers ``StaleError``
        for an existing name only once the body passed: how a replacement is checked before a recreate."""
        ...

    def replace(self, body: Json) -> Json:
        """Update (PUT) the whole object; ``StaleError`` when its ``metadata.resourceVersion`` is not current."""
        ...

    def delete(self, ref: ObjectId, *, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        ...

    def watch(
        self,
        group: str,
        kind: str,
        namespace: str = "",
        label_selector: str = "",
        resource_version: str = "",
        timeout_seconds: int = 300,
    ) -> Iterator[WatchEvent]: ...


class LiveReader(Protocol):
    """Read access to live objects. The Cluster answers with a GET; the watch-fed cache answers from memory,
    which is what makes a no-op reconcile nearly free."""

    def get(self, ref: ObjectId) -> Json | None: ...


class WorkloadReader(LiveReader, Protocol):
    """Live objects plus every Pod and ReplicaSet of a namespace: what workload health and rollouts read. The
    watch cache answers from memory; ``health.Listed`` with a GET per object and one LIST per kind and namespace."""

    def pods(self, namespace: str) -> list[Json]: ...

    def replica_sets(self, namespace: str) -> list[Json]: ...


class StateStore(Protocol):
    """Per app-env state kept in the cluster, one document per ``part`` ("inventory", "status", "history",
    "rollout"), so a restarted agent resumes where the last one stopped.

    Writes are optimistic: ``save`` takes the ``version`` returned by ``load`` ("" for a new document) and
    raises ``TransientError`` when someone else wrote in between.
    """

    def load(self, key: AppEnv, namespace: str, part: str) -> tuple[Json, str]:
        """The stored document (``{}`` when absent) and its version; ``CorruptStateError`` (terminal, naming the
        document and how to reset it) when what is stored is not a JSON object."""
        ...

    def save(self, key: AppEnv, namespace: str, part: str, data: Json, version: str) -> str:
        """Store ``data``; returns the new version."""
        ...

    def keys(self, env: str, namespace: str, part: str) -> frozenset[AppEnv]:
        """The app-envs of ``env`` that hold a ``part`` document in ``namespace``."""
        ...

    def delete(self, key: AppEnv, namespace: str, part: str) -> None:
        """Forget ``part`` of ``key`` (nothing when it is absent)."""
        ...


@dataclass(frozen=True, slots=True)
class Commit:
    """One Git commit as the history records it; ``time`` is the committer time in epoch seconds."""

    sha: str
    author: str
    message: str
    time: float


class VerifyMode(StrEnum):
    """How the Git reader checks the head's signature (agent.yaml ``repo.verify.mode``)."""

    NONE = "none"
    SSH = "ssh"
    GPG = "gpg"
    SSH_OR_GPG = "ssh+gpg"
    """Both files: a team signing with GnuPG, and the agent's own promotion and rollback commits signed with its
    SSH key (``repo.write.signingKeyFile``), which a keyring alone refuses."""


@dataclass(frozen=True, slots=True)
class GitAuth:
    """Credentials by file path only. SSH keys are checked against ``known_hosts_file`` (StrictHostKeyChecking)."""

    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None
    token_file: Path | None = None
    username: str = "x-access-token"
    """User name sent with an HTTPS token (GitHub accepts any; GitLab wants ``oauth2``)."""


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    """Commit signature policy: with a mode other than ``none`` an unsigned or badly signed head is refused."""

    mode: VerifyMode = VerifyMode.NONE
    allowed_signers_file: Path | None = None
    gpg_keyring: Path | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A commit and the directory holding its tree (read-only for renderers)."""

    commit: Commit
    path: Path

    @property
    def revision(self) -> str:
        return self.commit.sha


class SnapshotSource(Protocol):
    """The source stage: the commit to reconcile and its tree (``gitsync.source.Source`` in the agent, the local
    checkout in the CLI). ``gitsync.source.RevisionRefused`` when the head failed signature verification."""

    def resolve(self, wanted: str = "") -> Snapshot: ...

    def tree(self, sha: str) -> Path:
        """The repository's tree at ``sha`` (a pinned chart's revision): the renderer's ``trees``."""
        ...


WHOLE_FILE_BYTES = 4 * 1024 * 1024
"""Largest repository file a snapshot holds whole (``GitReader.snapshot``, the command line's pinned trees in
``gitsync.adapters.trees``). A larger one is kept cut to its first ``WHOLE_FILE_BYTES + 1`` bytes: the renderer
reads no more than this of any file (``renderers.limits.MAX_INPUT_BYTES`` is this), so whatever it reads is exact
and a file past it still reads as too large, while a commit adding a 700 MB video to ``docs/`` costs a snapshot
4 MiB, not 700 MB (the agent's cache volume is 1 GiB)."""


class GitReader(Protocol):
    """Read access to the one branch the agent follows (``gitsync.adapters.git.GitRepository``).

    Errors: ``TransientError`` for network or remote trouble, ``TerminalError`` for a refused signature.
    Messages never contain credentials.
    """

    def remote_head(self) -> str:
        """The branch's commit on the remote (``git ls-remote``), without fetching anything."""
        ...

    def ledger_head(self) -> str:
        """The ledger's notes ref on the remote as the last ``remote_head`` saw it ("" when none): it moves when
        any agent records a release, which wakes the environments receiving from another agent's."""
        ...

    def fetch(self) -> Commit:
        """Shallow-fetch the branch; the commit it points at (force-pushes included)."""
        ...

    def verify(self, sha: str) -> None:
        """Raise ``TerminalError`` unless ``sha`` carries a signature from a configured key (no-op if unset)."""
        ...

    def snapshot(self, sha: str) -> Path:
        """A directory holding the tree at ``sha``, immutable for as long as the caller needs it. ``sha`` may be
        any commit on the remote, not only the fetched head (a revision pinned in ``promoted.yaml``). A file past
        ``WHOLE_FILE_BYTES`` is cut to ``WHOLE_FILE_BYTES + 1`` bytes; Git ids come from ``tree_id``, never from
        hashing these files."""
        ...

    def tree_id(self, sha: str, path: str) -> str:
        """The Git object id of ``path`` (``apps/podinfo``; ``""`` for the root) at commit ``sha``, ``""`` when
        absent: a chart's tree id identifies its release across commits that did not touch it."""
        ...

    def merge_commit(self, base: str, head: str, merge_base: str) -> str:
        """A commit, made locally and never pushed, of ``head`` merged into ``base`` from ``merge_base`` file by
        file (a pull request whose branch is behind, as merging it would deploy); "" when a file changed on both
        sides. ``snapshot`` reads it like any commit."""
        ...


class MetricsQuery(Protocol):
    """An instant query against a Prometheus-compatible API (``gitsync.adapters.prometheus``).

    Returns the sample values of the result (one per series; empty when the query matched nothing).
    Raises ``TransientError`` when the server cannot be reached or rejects the query.
    """

    def query(self, address: str, promql: str, timeout: float) -> list[float]: ...


class HttpProbe(Protocol):
    """One HTTP GET for an analysis check (``gitsync.adapters.http_check``): the status and the body.

    Any status is an answer (a 500 is evidence, not an error); ``TransientError`` only when no answer came.
    """

    def get(self, url: str, timeout: float) -> tuple[int, bytes]: ...


class WebhookPoster(Protocol):
    """One HTTP POST of a notification (``gitsync.adapters.webhook_post``): the status and the ``Retry-After``
    header ("" when absent). Redirects are not followed (a 3xx is an answer). ``TransientError`` only when no
    answer came (refused, timeout, DNS), with a message that never holds the URL (a Slack URL is a credential).
    """

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int, str]: ...


class EnvironmentSettings(Protocol):
    @property
    def prune_allow_empty(self) -> bool: ...


class Pin(Protocol):
    """What the stages read of a pinned environment's pin for one app (``renderers.promotion.Pin``)."""

    @property
    def revision(self) -> str: ...
    @property
    def from_env(self) -> str: ...
    @property
    def values(self) -> Mapping[str, Any]: ...
    @property
    def override(self) -> str: ...


class RenderedApp(Protocol):
    """What the stages read of a render (``renderers.RenderedApp``), so tests can hand them small stand-ins."""

    @property
    def app_env(self) -> AppEnv: ...
    @property
    def namespace(self) -> str: ...
    @property
    def manifests(self) -> tuple[Manifest, ...]: ...
    @property
    def digest(self) -> str: ...
    @property
    def values(self) -> Mapping[str, Any]: ...
    @property
    def revision(self) -> str | None: ...
    @property
    def environment(self) -> EnvironmentSettings: ...
    @property
    def pin(self) -> Pin | None:
        """The pin this render was made at (a pinned environment); None: rendered at the head."""
        ...


class RolloutProgress(Protocol):
    """What the rollout stage did in one reconcile (``gitsync.strategy.executor.StepOutcome``)."""

    @property
    def exclude(self) -> frozenset[ObjectId]:
        """Rendered objects the rollout applies itself; the sync leaves them alone."""
        ...

    @property
    def requeue_after(self) -> float | None:
        """When to look again (None: the rollout is done, or there is none; 0: at once)."""
        ...

    @property
    def serving(self) -> frozenset[ObjectId]:
        """The Deployments that run the app now; health reads these in place of excluded rendered ones."""
        ...

    @property
    def phase(self) -> str:
        """The rollout phase after this step (``Aborted``: rolled back; ``Paused``: waiting for a human)."""
        ...

    @property
    def message(self) -> str: ...

    @property
    def on_change(self) -> bool:
        """The wait ends on a change of the ``serving`` Deployments or their pods, which a watch sees at once;
        ``requeue_after`` is only the look when nothing watches."""
        ...


class Rollouts(Protocol):
    """The strategy stage (``gitsync.strategy.executor``): called once per reconcile, before the sync, for every
    app-env; it advances a canary or blue-green rollout by at most one step and returns at once (waiting is a
    requeue)."""

    def advance_rollout(self, rendered: RenderedApp, *, now: float) -> RolloutProgress: ...

    def reset(self) -> None:
        """Forget anything cached about the cluster's rollout state (this agent just became the leader)."""
        ...


class Ledger(Protocol):
    """The release ledger in Git (``gitsync.adapters.notes``): one JSON line per finished release in the note of
    the deployed commit under ``refs/notes/gitsync``, shared with every other writer through the remote.

    ``sign`` makes an entry's line when the entry is made (signed there and then when the ledger signs), so a
    line kept for later (``Status.unnoted``) is kept signed. ``append`` is idempotent (a line already in the
    note is not added again) and never drops another writer's lines; an entry that carries its ``line`` (one
    kept while the remote was away) is written as that text; a signing ledger writes it only when it carries
    the ledger's own signature (``ForeignLineError`` otherwise), never signing it then. ``read`` first takes in
    what the remote holds. Errors: ``TransientError`` for network trouble or a race lost too often,
    ``TerminalError`` when the remote refuses the push.
    """

    def sign(self, entry: LedgerEntry) -> LedgerEntry: ...

    def append(self, sha: str, entry: LedgerEntry) -> None: ...

    def read(self, shas: Iterable[str] | None = None) -> Mapping[str, tuple[LedgerEntry, ...]]:
        """The entries noted on each of ``shas`` (all noted commits when None); commits without a note are absent."""
        ...


class LedgerVerifier(Protocol):
    """Whether a ledger line read back was signed by an allowed key (``gitsync.adapters.ledger_signature``):
    the agent with ``repo.verify.allowedSignersFile`` trusts only verified lines for promotion and the guard."""

    def seal(self, entry: LedgerEntry) -> Seal: ...


@dataclass(frozen=True, slots=True)
class FileEdit:
    """Set ``path`` to ``edit(current text)``; the current text is None when the file does not exist. The edit
    must be a pure function of that text: after a lost push race it is applied again to the new head's file."""

    path: str
    edit: Callable[[str | None], str]


@dataclass(frozen=True, slots=True)
class PathRestore:
    """Set ``path`` (a file or a directory) to its content at ``commit``; removed when it did not exist there."""

    path: str
    commit: str


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """One commit for ``GitWriter.write``: the edits, the full message (subject, body, trailers), and the trailers
    that identify it (an existing commit carrying all of them is the same write, already done).

    ``branch`` empty: commit on the tracked branch (never force-pushed). Otherwise a review branch such as
    ``gitsync/promote/prod/podinfo``: the commit is built on the tracked head and the branch set to it by force.
    """

    edits: tuple[FileEdit | PathRestore, ...]
    message: str
    identity: tuple[tuple[str, str], ...]
    branch: str = ""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The commit that carries the request; ``written`` is False when it existed already (nothing was pushed)."""

    commit: str
    branch: str
    written: bool


class GitWriter(Protocol):
    """Commits to the followed repository (``gitsync.adapters.gitwrite``), exactly once per identity.

    Errors: ``TransientError`` for network trouble or too many lost races; ``TerminalError``
    (``gitsync.adapters.gitwrite.WriteAccessError``) when the remote refuses the push for any other reason.
    """

    def write(self, request: CommitRequest) -> WriteResult: ...


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """A commit as the audit shows it: ``author``/``committer`` as ``Name <email>``, ``trailers`` as (lower-cased
    key, value) pairs from the message's trailer block (Git compares trailer keys case-insensitively)."""

    sha: str
    parents: tuple[str, ...]
    author: str
    committer: str
    committed_at: float
    message: str
    trailers: tuple[tuple[str, str], ...]


class ForgeKind(StrEnum):
    """The forge APIs ``gitsync.adapters.forge`` speaks (Forgejo speaks Gitea's)."""

    GITHUB = "github"
    GITEA = "gitea"
    GITLAB = "gitlab"


class CommitState(StrEnum):
    """A commit status's state, as GitHub and Gitea name them (GitLab's names are mapped by the adapter)."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CommitStatus:
    """One status on a commit, e.g. context ``gitsync/staging/podinfo``, state ``pending``, description
    ``canary step 2/4: setWeight 50``. A forge keeps the newest status per (commit, context)."""

    sha: str
    context: str
    state: CommitState
    description: str
    target_url: str = ""


@dataclass(frozen=True, slots=True)
class PullRequest:
    """An open pull (merge) request: its number on the forge, its web page, and its branches."""

    number: int
    url: str
    head: str
    base: str


class Forge(Protocol):
    """The forge's REST API as gitsync uses it (``gitsync.adapters.forge``: GitHub, Gitea/Forgejo, GitLab).

    Every call is idempotent, so a retry or a repeated reconcile changes nothing twice. Errors: ``TransientError``
    (unreachable, 5xx, rate limited after the bounded retries), ``TerminalError`` (refused: bad token, no access,
    no such repository), each naming the forge, the call and the status, never the token.
    """

    def set_status(self, status: CommitStatus) -> None: ...

    def upsert_comment(self, number: int, marker: str, body: str) -> str:
        """The one comment of pull request ``number`` that starts with ``marker`` (a hidden HTML comment) gets
        ``body`` (created when there is none; duplicates left by a race are deleted); returns its URL."""
        ...

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        """Opens the pull request of ``head`` into ``base``, or updates the title and body of the open one."""
        ...

    def close_pull_request(self, head: str, base: str, comment: str) -> PullRequest | None:
        """Closes the open pull request of ``head`` into ``base`` unmerged, after commenting ``comment`` (why);
        None when none is open."""
        ...

    def approvers(self, number: int) -> tuple[str, ...]:
        """The logins whose review approves pull request ``number`` now (each reviewer's latest verdict, not
        dismissed, nor stale where the forge marks it so), sorted. Asked once, without retries: the ledger writer
        calls it while a reconcile records, and a forge that is down must not hold that up."""
        ...

    def pull_request_of(self, sha: str) -> int | None:
        """The number of the merged pull request commit ``sha`` came through (a merge, squash or rebase merge made
        on the forge), None when the forge knows none. Asked once, without retries, as ``approvers``."""
        ...
