"""What one reconcile did: the ``ReconcileResult`` every sink of ``gitsync.record`` reads and the agent schedules
from, with its vocabulary (stages, kinds, error classes) and the ``Target`` it ran against. Pure data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from gitsync.errors import Retry
from gitsync.health import Health
from gitsync.history import Result, Status
from gitsync.model import AppEnv, SyncAction
from gitsync.ports import Pin, RenderedApp, RolloutProgress, Snapshot
from gitsync.promotion import PromotionAction, PromotionStep, Upstream
from gitsync.sync import SyncResult

__all__ = ["Kind", "ReconcileResult", "Stage", "Target"]

_WRITTEN = frozenset({PromotionAction.PROMOTED, PromotionAction.PROPOSED, PromotionAction.ROLLED_BACK})


class Stage(StrEnum):
    """The stages of the line, in order; the keys of ``ReconcileResult.timings``."""

    SOURCE = "source"
    RENDER = "render"
    STRATEGY = "strategy"
    GUARD = "guard"
    SYNC = "sync"
    VERIFY = "verify"
    PROMOTE = "promote"


class Kind(StrEnum):
    """What a reconcile amounted to; ``record`` writes each kind its own way."""

    UP_TO_DATE = "up-to-date"
    """The revision is applied, Succeeded and watched: nothing was done and nothing is recorded."""
    GONE = "gone"
    """The app-env is not in its environment at this revision and holds nothing to prune."""
    RELEASE = "release"
    """Rendered, synced and verified (the outcome says how the release stands)."""
    DRIFT_CHECKED = "drift-checked"
    """Self-heal is off and the trigger was drift: a dry-run compared the cluster with Git, nothing changed."""
    FAILED = "failed"
    """A stage failed; ``error`` and ``error_class`` say how; the running release is left alone."""
    REMOVED = "removed"
    """The app left its environment and its whole inventory was pruned."""
    ORPHANED = "orphaned"
    """The app left its environment with pruning off: its objects stay, no longer managed."""
    AWAITING = "awaiting-promotion"
    """An app of a pinned environment with no pin yet: nothing is deployed until a promotion pins it."""
    BLOCKED = "blocked"
    """The app's pin is not verified by the upstream environment's ledger: nothing of it is applied."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a key lives and how it syncs, as its environment file says at the current snapshot."""

    namespace: str
    prune: bool
    self_heal: bool
    removed: bool = False
    """The app left its environment's ``env.yaml`` while its inventory is still in the cluster."""
    emptied: bool = False
    """A removal because ``env.yaml`` lists no apps at all (``apps: []``) without ``pruneAllowEmpty: true``: the
    empty-render guard of the whole environment, so the app is only reported (``prune`` is False), never pruned."""
    upstream: Upstream | None = None
    """A receiving environment (``promotion:`` in its env.yaml): where its releases are promoted from."""
    promoted_paths: tuple[str, ...] = ()
    """The value paths receiving environments take from this one: they identify a release in the ledger."""
    cluster: str = ""
    """The named cluster the environment is applied to (``gitsync.runtime.clusters``); "": the agent's own."""

    def removed_from(self, listed: Collection[str], *, prune_allow_empty: bool) -> Target:
        """This target for an app that left its environment, whose ``env.yaml`` now lists ``listed``: pruned as
        ``prune`` says, except that a file listing no apps at all without ``pruneAllowEmpty: true`` only reports
        them (``emptied``: the empty-render guard of a whole environment, Argo CD's and Flux's)."""
        emptied = not listed and not prune_allow_empty
        return replace(self, removed=True, prune=self.prune and not emptied, emptied=emptied)


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """Everything one reconcile did: what ``record`` writes and what the caller schedules from."""

    key: AppEnv
    kind: Kind
    reasons: tuple[str, ...]
    started_at: float
    finished_at: float
    snapshot: Snapshot | None = None
    target: Target | None = None
    previous: Status | None = None
    """The status before this reconcile (events are about changes of it)."""
    outcome: Result | None = None
    rendered: RenderedApp | None = None
    sync: SyncResult | None = None
    health: Health | None = None
    rollout: RolloutProgress | None = None
    error: str = ""
    error_class: Retry | None = None
    """Terminal (wait for a new revision) or transient (back off); None: nothing failed."""
    retry_after: float | None = None
    requeue_after: float | None = None
    """Look again after this many seconds (0: at once); None: done until a trigger."""
    timings: tuple[tuple[Stage, float], ...] = ()
    dry_run: bool = False
    kept: int = 0
    """An orphaned app: the objects it leaves in the cluster."""
    promotion: PromotionStep | None = None
    """What the promote stage did (a receiving environment)."""

    @property
    def revision(self) -> str:
        return self.snapshot.revision if self.snapshot is not None else ""

    @property
    def namespace(self) -> str:
        return self.target.namespace if self.target is not None else ""

    @property
    def digest(self) -> str:
        return self.rendered.digest if self.rendered is not None else ""

    @property
    def pin(self) -> Pin | None:
        """The pin the app was rendered at (a pinned environment); None: at the head, or nothing rendered."""
        return self.rendered.pin if self.rendered is not None else None

    @property
    def seconds(self) -> float:
        return round(sum(t for _, t in self.timings), 3)

    def counts(self) -> Mapping[SyncAction, int]:
        return self.sync.counts() if self.sync is not None else {}

    @property
    def changed(self) -> bool:
        """Objects were created, configured or deleted."""
        n = self.counts()
        return any(n.get(a, 0) for a in (SyncAction.CREATED, SyncAction.CONFIGURED, SyncAction.DELETED))

    @property
    def repaired(self) -> bool:
        """A drift trigger changed objects of a release already applied: self-heal took them back."""
        return self.kind is Kind.RELEASE and self.changed and "drift" in self.reasons and not self.new_release

    @property
    def promotion_line(self) -> str | None:
        """The status's promotion line after this reconcile (``<action>: <message>``); None: the stored one stays
        true. A step that did something says so. A step with nothing to do replaces any stored line but a commit's
        (promoted, proposed, rolled back): a soak, a candidate or a failure it no longer sees is over, also when
        the write that should have said so failed (the API unreachable right after a promotion commit)."""
        step = self.promotion
        if step is None:
            return None
        if step.action is not PromotionAction.NONE:
            return f"{step.action}: {step.message}" + (f" ({step.commit[:12]})" if step.commit else "")
        stored = self.previous.promotion if self.previous is not None else ""
        if stored.partition(":")[0] in _WRITTEN:
            return None
        line = f"{step.action}: {step.message}" if step.message else ""
        return line if line != stored else None

    @property
    def release_revision(self) -> str:
        """The commit credited with the release this reconcile ran: its own revision when it changed the app's
        render (or nothing was applied before), else the commit that brought the running digest
        (``Status.release_revision``). A later commit that renders the app identically (a README, another app's
        change, a promotion commit seen from the upstream environment) carries that release on: it is not a new
        release, in the history as in the ledger, and supersedes nothing."""
        before = self.previous
        if before is None or not before.last_applied_digest or before.last_applied_digest != self.digest:
            return self.revision
        return before.release_revision or before.last_applied_revision or self.revision

    @property
    def superseded_revision(self) -> str:
        """The commit credited with the release this reconcile replaced while it still rolled out (Progressing or
        Paused, with another digest): Superseded, that release never finished on its own; "" when none. The ledger
        notes it so and its commit status says so."""
        before = self.previous
        if before is None or not before.last_applied_digest or before.last_applied_digest == self.digest:
            return ""
        if before.result not in (Result.PROGRESSING.value, Result.PAUSED.value):
            return ""
        return before.release_revision or before.last_applied_revision

    @property
    def new_release(self) -> bool:
        """The revision or digest differs from what was applied before."""
        before = self.previous
        return before is None or (before.last_applied_revision, before.last_applied_digest) != (
            self.revision,
            self.digest,
        )
