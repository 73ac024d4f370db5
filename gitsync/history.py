"""Status and release history of an app-env, kept in the cluster through the ``StateStore``.

Two documents per app-env: ``status`` (what is running now and how the last attempt went) and ``history``
(the releases, newest first, up to a limit well beyond Argo CD's 10). A restarted agent reads them back; the
CLI (``gitsync status``, ``gitsync history``) reads them without the agent.

Contract: a release is one revision+digest; retries of the same one update its entry instead of adding new ones,
so a failing commit retried for hours is one line. Records hold no secret values: commit metadata, counts and
one-line error messages only. Writes are optimistic and retried once on a concurrent update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import TypeVar

from gitsync.errors import TransientError
from gitsync.model import AppEnv, HealthStatus, Json, SyncState
from gitsync.ports import StateStore

__all__ = ["HISTORY_PART", "STATUS_PART", "History", "Release", "Result", "Status"]

STATUS_PART = "status"
HISTORY_PART = "history"
_MESSAGE_LIMIT = 200


class Result(StrEnum):
    """How a release attempt ended; the wire format of history entries and the ``result`` metric label."""

    SUCCEEDED = "Succeeded"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    """A progressive rollout waits for a human (``gitsync rollout promote``) or for inconclusive analysis."""
    ROLLED_BACK = "RolledBack"
    """The rollout's analysis failed and traffic went back to the stable version."""
    SUPERSEDED = "Superseded"
    """A newer release arrived before this one finished progressing."""
    FAILED = "Failed"
    """The release failed in a way retrying cannot fix (a refused object, an immutable field): waits for a new
    revision."""
    RETRYING = "Retrying"
    """A transient failure (the cluster unreachable, HTTP 5xx or 429, a write conflict, a namespace not there yet):
    backed off and tried again. The release it attempted has not ended and did not fail, so it adds no history
    entry and no ledger line; the status and the log say it is being retried."""
    RENDER_ERROR = "RenderError"
    REFUSED = "Refused"
    REMOVED = "Removed"
    """The app left its environment's ``env.yaml``; its objects were pruned (the history is all that is kept)."""
    ORPHANED = "Orphaned"
    """The app left its environment's ``env.yaml`` with pruning off: its objects stay, no longer managed."""
    AWAITING_PROMOTION = "AwaitingPromotion"
    """An app of a pinned environment that no promotion has pinned yet: nothing of it is deployed."""
    BLOCKED = "Blocked"
    """The app's pin is not verified by the upstream environment's ledger: nothing of it is applied."""


@dataclass(frozen=True, slots=True)
class Status:
    app: str
    env: str
    last_applied_revision: str = ""
    last_applied_digest: str = ""
    release_revision: str = ""
    """The commit that brought the running digest (later commits that do not change the render continue it)."""
    last_attempted_revision: str = ""
    sync_state: str = SyncState.UNKNOWN.value
    health: str = HealthStatus.UNKNOWN.value
    health_reason: str = ""
    last_error: str = ""
    result: str = ""
    last_synced_at: float = 0.0
    updated_at: float = 0.0
    promotion: str = ""
    """What the promote stage last did, one line (a receiving environment): soaking, promoted, rolled back."""
    cluster: str = ""
    """The named cluster the environment is applied to; "": the agent's home cluster."""
    unnoted: tuple[str, ...] = ()
    """Ledger lines of ended releases the Git remote has not taken yet (it was unreachable), each exactly as it
    was made (``LedgerEntry.to_line``, unsigned): kept here, not only in the agent's memory, so an agent killed
    before the remote is back still writes them, from the next reconcile of the app-env (``record.LedgerSink``).
    A line holds hashes, tree ids, times, step names and analysis values, never a rendered value."""

    def to_json(self) -> Json:
        return {_camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, key: AppEnv, data: Json) -> Status:
        status = _from_json(cls, {"app": key.app, "env": key.env, **data})
        return replace(status, unnoted=tuple(status.unnoted))


@dataclass(frozen=True, slots=True)
class Release:
    """One entry of the history: a revision and digest, who made it, what it changed and how it ended."""

    revision: str
    digest: str
    author: str
    message: str
    started_at: float
    finished_at: float
    result: str
    created: int = 0
    configured: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    attempts: int = 1
    error: str = ""
    id: int = 0

    def to_json(self) -> Json:
        return {_camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Json) -> Release:
        return _from_json(cls, data)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_T = TypeVar("_T", "Status", "Release")


def _from_json(cls: type[_T], data: Json) -> _T:
    by_camel = {_camel(f.name): f.name for f in fields(cls)}
    values = {by_camel[k]: v for k, v in data.items() if k in by_camel}
    return cls(**values)


def first_line(message: str) -> str:
    """The subject of a commit message, cut to a size fit for a history line."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 1] + "…"


class History:
    """Reads and writes status and history documents for app-envs."""

    def __init__(self, store: StateStore, limit: int = 1000) -> None:
        self._store = store
        self._limit = limit

    def status(self, key: AppEnv, namespace: str) -> Status:
        data, _ = self._store.load(key, namespace, STATUS_PART)
        return Status.from_json(key, data)

    def set_status(self, key: AppEnv, namespace: str, change: Callable[[Status], Status]) -> Status:
        """Apply ``change`` to the stored status (read-modify-write, retried once if someone wrote between). A
        change of nothing but its timestamps is not written, nor, while health stays Progressing, one of the wording
        of its reason (the counts of pods rolling out): a reconcile that waits on a rollout or on workloads rolling
        out costs no write, and ``lastSyncedAt`` is when its outcome last changed."""
        updated: list[Status] = []

        def edit(data: Json) -> Json | None:
            before = Status.from_json(key, data)
            status = change(before)
            updated.append(status)
            same = replace(status, last_synced_at=before.last_synced_at, updated_at=before.updated_at)
            if same.health == before.health == HealthStatus.PROGRESSING.value:
                same = replace(same, health_reason=before.health_reason)
            if data and same == before:
                return None
            return status.to_json()

        self._update(key, namespace, STATUS_PART, edit)
        return updated[-1]

    def releases(self, key: AppEnv, namespace: str) -> tuple[Release, ...]:
        data, _ = self._store.load(key, namespace, HISTORY_PART)
        return tuple(Release.from_json(entry) for entry in data.get("releases", []))

    def record(self, key: AppEnv, namespace: str, release: Release) -> Release:
        """Add ``release`` (newest first), or fold it into the newest entry when it is the same revision and
        digest (a retry or a drift repair): counts of changes add up, the outcome is the latest."""
        stored: list[Release] = []

        def edit(data: Json) -> Json:
            entries = [Release.from_json(e) for e in data.get("releases", [])]
            newest = entries[0] if entries else None
            if newest is not None and (newest.revision, newest.digest) == (release.revision, release.digest):
                entry = replace(
                    release,
                    id=newest.id,
                    started_at=newest.started_at,
                    attempts=newest.attempts + 1,
                    created=newest.created + release.created,
                    configured=newest.configured + release.configured,
                    deleted=newest.deleted + release.deleted,
                )
                entries[0] = entry
            else:
                if newest is not None and newest.result in (Result.PROGRESSING, Result.PAUSED):
                    entries[0] = replace(newest, result=Result.SUPERSEDED.value)
                entry = replace(release, id=(newest.id + 1) if newest else 1)
                entries.insert(0, entry)
            stored.append(entry)
            return {"releases": [e.to_json() for e in entries[: self._limit]]}

        self._update(key, namespace, HISTORY_PART, edit)
        return stored[-1]

    def settle(
        self, key: AppEnv, namespace: str, revision: str, digest: str, result: str, finished: float, error: str = ""
    ) -> None:
        """Set the outcome (and its error, "" once it succeeded) of the release ``revision``/``digest``, its newest
        entry, once its health settled (a Progressing release turned Succeeded), also when a later commit that
        renders the app identically (a README) carried it on: keeping its author, message, counts and attempts.
        Entries after it are failures of other commits (a render error), which deployed nothing in its place."""

        def edit(data: Json) -> Json | None:
            entries = list(data.get("releases", []))
            for i, entry in enumerate(entries):
                if (entry.get("revision"), entry.get("digest")) == (revision, digest):
                    entries[i] = {**entry, "result": result, "finishedAt": finished, "error": error}
                    return {"releases": entries}
            return None

        self._update(key, namespace, HISTORY_PART, edit)

    def _update(self, key: AppEnv, namespace: str, part: str, edit: Callable[[Json], Json | None]) -> None:
        """Read, ``edit`` (None: nothing to write), write with the version read; retried on a concurrent write."""
        for attempt in range(3):
            data, version = self._store.load(key, namespace, part)
            edited = edit(data)
            if edited is None:
                return
            try:
                self._store.save(key, namespace, part, edited, version)
                return
            except TransientError:
                if attempt == 2:
                    raise
