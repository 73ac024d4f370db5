"""One reconcile of one app-env, as a straight line of stages. The order of stages is written here and nowhere else.

```
source -> render -> strategy (one rollout step) -> sync (plan -> apply -> prune) -> verify -> record
```
The strategy stage runs before the sync because it applies the workloads it drives itself (the canary, the
colours, the Services it points) and the sync must leave exactly those alone (``RolloutProgress.exclude``).
Nothing waits: a rollout step or a workload still rolling out is a requeue (``ReconcileResult.requeue_after``).

Both callers go through ``reconcile``: the agent's workers (``runtime.agent``) and ``gitsync sync`` (``cli.sync``).
They differ only in what they hand in: the ``Stages`` (where the snapshot comes from, whether a reconcile that is up
to date is skipped, which sinks record it). Every stage returns frozen data; the one value that leaves, a
``ReconcileResult``, is what ``record.Recorder`` writes to status, history, Events, metrics and logs.

Errors are classified once, here: a refused signature, a render error and a sync error the server refused for its
content are ``terminal`` (nothing more is tried until a new revision); an unreachable API, a concurrent state write
or objects that failed to apply are ``transient`` (backed off). A render or validation error applies nothing and
the previous release keeps running.

An app that left its environment (``Target.removed``) is reconciled by the same line with an empty render: its
whole inventory goes through the one prune stage with all its guards, or, with pruning off, it is only reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from gitsync import inventory as inventories
from gitsync.apply import Progress
from gitsync.errors import GitsyncError, Retry, TerminalError, TransientError
from gitsync.health import Health, aggregate, assess, assess_workload
from gitsync.history import Result, Status
from gitsync.model import AppEnv, HealthStatus, Json, Manifest, ObjectId, SyncAction
from gitsync.ports import (
    Clock,
    Cluster,
    Commit,
    LiveReader,
    RenderedApp,
    RolloutProgress,
    Rollouts,
    Snapshot,
    SnapshotSource,
    StateStore,
)
from gitsync.source import RevisionRefused
from gitsync.strategy.executor import PART as ROLLOUT_PART
from gitsync.strategy.executor import made_deployments
from gitsync.sync import SyncResult, sync_app

__all__ = [
    "PROGRESSING_REQUEUE",
    "ErrorClass",
    "Kind",
    "NoRollouts",
    "ReconcileResult",
    "Request",
    "RolloutStep",
    "Stage",
    "Stages",
    "Target",
    "reconcile",
]

PROGRESSING_REQUEUE = 2.0
"""Seconds before looking again at an app-env whose workloads are still rolling out (nothing sleeps)."""
_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
_ABORTED, _PAUSED = "Aborted", "Paused"
"""Rollout phases (``gitsync.strategy.state.Phase``) the outcome distinguishes: rolled back, waiting for a human."""


class Stage(StrEnum):
    """The stages of the line, in order; the keys of ``ReconcileResult.timings``."""

    SOURCE = "source"
    RENDER = "render"
    STRATEGY = "strategy"
    SYNC = "sync"
    VERIFY = "verify"


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


class ErrorClass(StrEnum):
    NONE = ""
    TERMINAL = "terminal"
    """Retrying cannot help: the key waits for a new revision."""
    TRANSIENT = "transient"
    """Retried with backoff (or after the error's Retry-After)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a key lives and how it syncs, as its environment file says at the current snapshot."""

    namespace: str
    prune: bool
    self_heal: bool
    removed: bool = False
    """The app left its environment's ``env.yaml`` while its inventory is still in the cluster."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a caller asks of one reconcile."""

    key: AppEnv
    revision: str = ""
    """The newest wanted revision ("" = whatever the source holds, or its head)."""
    reasons: tuple[str, ...] = ()
    """Why (``poll``, ``webhook:github``, ``drift``, ``leader``...): ``drift`` makes it a drift check."""
    attempt: int = 0
    skip_current: bool = True
    """Skip a reconcile whose revision is applied, Succeeded and watched (the agent); the CLI always syncs."""
    watched: bool = True
    """Drift of the app-env is being watched (the agent's watch cache), so an applied revision needs no look."""
    apply: bool = True
    """False: plan only (``gitsync sync --dry-run``); no rollout step, nothing recorded."""
    force: bool = False
    """Take over fields other managers own (``gitsync sync --force``)."""
    prune: bool | None = None
    """Override the environment's prune setting (``gitsync sync --prune/--no-prune``)."""
    new_namespace: bool = False
    """A dry run for an environment whose namespace a real sync would create first: plan its objects as creates."""
    progress: Progress | None = None


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
    error_class: ErrorClass = ErrorClass.NONE
    retry_after: float | None = None
    requeue_after: float | None = None
    """Look again after this many seconds (0: at once); None: done until a trigger."""
    timings: tuple[tuple[Stage, float], ...] = ()
    dry_run: bool = False
    kept: int = 0
    """An orphaned app: the objects it leaves in the cluster."""

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
    def new_release(self) -> bool:
        """The revision or digest differs from what was applied before."""
        before = self.previous
        return before is None or (before.last_applied_revision, before.last_applied_digest) != (
            self.revision,
            self.digest,
        )


class Recorder(Protocol):
    def record(self, result: ReconcileResult) -> None: ...


class StatusReader(Protocol):
    def status(self, key: AppEnv, namespace: str) -> Status: ...


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """The step of an app without a progressive rollout: nothing excluded, nothing to wait for."""

    exclude: frozenset[ObjectId] = frozenset()
    requeue_after: float | None = None
    serving: frozenset[ObjectId] = frozenset()
    phase: str = "Healthy"
    message: str = ""


class NoRollouts:
    """Every app rolls out with its workloads' own strategy (a Deployment's rolling update)."""

    def advance_rollout(self, rendered: RenderedApp, *, now: float) -> RolloutProgress:
        return RolloutStep()

    def reset(self) -> None:
        return None


Render = Callable[[Path, AppEnv, str, Callable[[str], Path]], RenderedApp]
"""The render stage: (snapshot directory, app-env, revision, trees of pinned revisions) -> the rendered app, or a
``RenderError`` (``AwaitingPromotion`` for an app of a pinned environment that has no pin yet)."""


def _render(path: Path, key: AppEnv, revision: str, trees: Callable[[str], Path]) -> RenderedApp:
    from renderers import render_app

    return render_app(path, key.env, key.app, revision=revision or None, trees=trees)


@dataclass(frozen=True, slots=True)
class Stages:
    """The parts a reconcile is made of, composed once by the caller (``runtime``, ``cli``)."""

    source: SnapshotSource
    locate: Callable[[AppEnv, Snapshot | None], Target | None]
    """The target of a key at a snapshot (the agent discovers the environment's app-envs here); None: as known
    now, without looking at a new snapshot (a refused revision is recorded against what runs)."""
    cluster: Cluster
    store: StateStore
    clock: Clock
    status: StatusReader
    recorder: Recorder
    rollouts: Rollouts = field(default_factory=NoRollouts)
    live: LiveReader | None = None
    """Where the plan and verify read live objects from (the watch cache); None: the cluster."""
    ensure_namespace: Callable[[str], None] = lambda _namespace: None
    before_apply: Callable[[AppEnv, Sequence[Manifest]], None] = lambda _key, _manifests: None
    """Told the bodies about to be applied (the agent's drift watcher), so gitsync's own writes are not drift."""
    render: Render = _render
    preview: Callable[[RenderedApp], frozenset[ObjectId]] | None = None
    """A dry run's exclusions (``gitsync.strategy.executor.owned``): what a rollout would apply itself."""


def reconcile(stages: Stages, request: Request) -> ReconcileResult:
    """Reconcile ``request.key`` by at most one step and record it; never raises a ``GitsyncError``."""
    line = _Line(stages, request)
    result = line.run()
    if request.apply and result.kind is not Kind.UP_TO_DATE:
        stages.recorder.record(result)
        if result.kind is Kind.REMOVED:
            _forget(stages.store, result.key, result.namespace)
    return result


class _Line:
    """One walk down the stages; holds the timings and what earlier stages produced."""

    def __init__(self, stages: Stages, request: Request) -> None:
        self.s = stages
        self.r = request
        self.started = stages.clock.now()
        self.timings: list[tuple[Stage, float]] = []
        self.snapshot: Snapshot | None = None
        self.target: Target | None = None
        self.previous: Status | None = None
        self.rendered: RenderedApp | None = None

    def _timed(self, stage: Stage, t0: float) -> None:
        self.timings.append((stage, time.monotonic() - t0))

    def result(self, kind: Kind, **fields: Any) -> ReconcileResult:
        return ReconcileResult(
            key=self.r.key,
            kind=kind,
            reasons=self.r.reasons,
            started_at=self.started,
            finished_at=self.s.clock.now(),
            snapshot=self.snapshot,
            target=self.target,
            previous=self.previous,
            rendered=self.rendered,
            timings=tuple(self.timings),
            dry_run=not self.r.apply,
            **fields,
        )

    def failed(self, outcome: Result, error: GitsyncError, **fields: Any) -> ReconcileResult:
        transient = isinstance(error, TransientError)
        return self.result(
            Kind.FAILED,
            outcome=outcome,
            error=str(error),
            error_class=ErrorClass.TRANSIENT if transient else ErrorClass.TERMINAL,
            retry_after=getattr(error, "retry_after", None),
            **fields,
        )

    def run(self) -> ReconcileResult:
        key = self.r.key
        t0 = time.monotonic()
        try:
            self.snapshot = self.s.source.resolve(self.r.revision)
            self.target = self.s.locate(key, self.snapshot)
        except RevisionRefused as e:
            self.snapshot = None
            self._timed(Stage.SOURCE, t0)
            return self._refused(e)
        except GitsyncError as e:
            self._timed(Stage.SOURCE, t0)
            return self.result(
                Kind.FAILED,
                error=str(e),
                error_class=ErrorClass.TRANSIENT,
                retry_after=getattr(e, "retry_after", None),
            )
        self._timed(Stage.SOURCE, t0)
        target = self.target
        if target is None:
            return self.result(Kind.GONE)
        try:
            if target.removed:
                return self._remove(target)
            if self.r.apply:
                self.s.ensure_namespace(target.namespace)
            self.previous = self.s.status.status(key, target.namespace)
        except GitsyncError as e:  # state unreadable (API down, namespace gone): nothing can be recorded
            return self.result(
                Kind.FAILED, error=str(e), error_class=ErrorClass.TRANSIENT, retry_after=getattr(e, "retry_after", None)
            )
        if self._current(self.previous):
            return self.result(Kind.UP_TO_DATE)
        return self._release(target, self.previous)

    def _refused(self, error: RevisionRefused) -> ReconcileResult:
        """The wanted head failed signature verification: recorded against the key if its target is known."""
        self.snapshot = Snapshot(Commit(error.revision, "", "", 0.0), Path())
        self.target = self.s.locate(self.r.key, None)
        if self.target is not None:
            self.previous = self.s.status.status(self.r.key, self.target.namespace)
        return self.failed(Result.REFUSED, error)

    def _current(self, status: Status) -> bool:
        drift = "drift" in self.r.reasons
        return (
            self.r.skip_current
            and not drift
            and status.last_applied_revision == self.snapshot_revision
            and status.result == Result.SUCCEEDED
            and status.last_attempted_revision == self.snapshot_revision
            and self.r.watched
        )

    @property
    def snapshot_revision(self) -> str:
        return self.snapshot.revision if self.snapshot is not None else ""

    def _release(self, target: Target, previous: Status) -> ReconcileResult:
        assert self.snapshot is not None
        key, revision = self.r.key, self.snapshot.revision
        t0 = time.monotonic()
        try:
            self.rendered = self.s.render(self.snapshot.path, key, revision, self.s.source.tree)
        except GitsyncError as e:
            self._timed(Stage.RENDER, t0)
            return self.failed(Result.RENDER_ERROR, e if isinstance(e, TerminalError) else TerminalError(str(e)))
        self._timed(Stage.RENDER, t0)
        rendered = self.rendered
        drift = "drift" in self.r.reasons
        # Self-heal off: a drift trigger on an applied revision only compares (a dry-run), changing nothing.
        heal = target.self_heal or not drift or previous.last_applied_revision != revision
        try:
            t0 = time.monotonic()
            step = self._strategy(rendered)
            self._timed(Stage.STRATEGY, t0)
            t0 = time.monotonic()
            prune = target.prune if self.r.prune is None else self.r.prune
            if heal and self.r.apply:
                self.s.before_apply(key, [m for m in rendered.manifests if m.id not in step.exclude])
            synced = sync_app(
                rendered,
                self.s.cluster,
                self.s.store,
                prune=prune,
                dry_run=not (heal and self.r.apply),
                # A drift repair takes declared fields back from whoever changed them (the self-heal opt-in); any
                # other sync forces only the objects a person's kubectl changed (ownership.takes_over).
                force=self.r.force or (drift and target.self_heal),
                exclude=step.exclude,
                live=self.s.live,
                progress=self.r.progress,
                new_namespace=self.r.new_namespace,
            )
            self._timed(Stage.SYNC, t0)
        except GitsyncError as e:
            return self.failed(Result.FAILED, e)
        if not self.r.apply:
            return self.result(Kind.RELEASE, sync=synced, rollout=step)
        if not heal:
            return self.result(Kind.DRIFT_CHECKED, sync=synced, rollout=step)
        if not synced.ok:
            errors = [c.error for c in synced.plan.errors if c.error] + [c.error or "" for c in synced.failures]
            message = "; ".join(e for e in errors[:3] if e) or synced.summary()
            # Content errors (a refused body, an immutable field, a controller's conflict) wait for a new revision.
            error_class = ErrorClass((synced.retry or Retry.TERMINAL).value)
            return self.result(Kind.FAILED, outcome=Result.FAILED, sync=synced, error=message, error_class=error_class)
        t0 = time.monotonic()
        health = self._verify(rendered, step)
        self._timed(Stage.VERIFY, t0)
        return self._verified(synced, health, step)

    def _strategy(self, rendered: RenderedApp) -> RolloutProgress:
        if self.r.apply:
            return self.s.rollouts.advance_rollout(rendered, now=self.started)
        owned = self.s.preview(rendered) if self.s.preview is not None else frozenset()
        return RolloutStep(exclude=owned)

    def _verify(self, rendered: RenderedApp, step: RolloutProgress) -> Health:
        """Health read once: every rendered object, except that objects a rollout applies itself are judged by
        the Deployments serving the app right now (stable and canary, or the live colour)."""
        cluster, cache = self.s.cluster, self.s.live
        pods: list[Json] | None = None
        healths: list[tuple[ObjectId, Health]] = []
        ids = [m.id for m in rendered.manifests if not (step.serving and m.id in step.exclude)]
        for ref in [*ids, *sorted(step.serving - set(ids))]:
            # Workloads are read fresh (their status moves right after an apply); anything else may come from the
            # cache, which answers an object it does not hold yet with a GET.
            reader: LiveReader = cluster if cache is None or ref.kind in _WORKLOADS else cache
            live = reader.get(ref)
            if ref.kind in _WORKLOADS and live is not None:
                if pods is None:
                    pods = list(cluster.list("", "Pod", rendered.namespace).items)
                healths.append((ref, assess_workload(live, pods)))
            else:
                healths.append((ref, assess(live)))
        return aggregate(healths)

    def _verified(self, synced: SyncResult, health: Health, step: RolloutProgress) -> ReconcileResult:
        phase = str(step.phase)
        progressing = health.status is HealthStatus.PROGRESSING or step.requeue_after is not None
        if phase == _ABORTED:
            outcome, error = Result.ROLLED_BACK, step.message
        elif phase == _PAUSED:
            outcome, error = Result.PAUSED, step.message
        else:
            outcome, error = (Result.PROGRESSING if progressing else Result.SUCCEEDED), ""
        settled = outcome in (Result.SUCCEEDED, Result.ROLLED_BACK) or (
            outcome is Result.PAUSED and not step.requeue_after
        )
        requeue = None if settled else (PROGRESSING_REQUEUE if step.requeue_after is None else step.requeue_after)
        return self.result(
            Kind.RELEASE,
            outcome=outcome,
            sync=synced,
            health=health,
            rollout=step,
            error=error,
            requeue_after=requeue,
        )

    def _remove(self, target: Target) -> ReconcileResult:
        """Prune an app that left its environment, or with pruning off report it. Killed at any line, the next
        reconcile carries on: the inventory, which makes this a removal, is dropped last (after the record)."""
        key = self.r.key
        before = inventories.load(self.s.store, key, target.namespace)
        self.previous = self.s.status.status(key, target.namespace)
        if not target.prune:
            return self.result(Kind.ORPHANED, outcome=Result.ORPHANED, kept=len(before.objects))
        made = _rollout_workloads(self.s.cluster, key, before.objects)
        if made - before.objects:
            # Canary and colour Deployments are the executor's, not the render's: inventory them so they go too.
            inventories.save(self.s.store, key, target.namespace, before.adding(made), before)
        emptied = _Emptied(key, target.namespace, self.snapshot_revision)
        t0 = time.monotonic()
        try:
            synced = sync_app(emptied, self.s.cluster, self.s.store, prune=True, dry_run=False)
        except GitsyncError as e:
            return self.result(Kind.FAILED, error=str(e), error_class=ErrorClass.TRANSIENT)
        self._timed(Stage.SYNC, t0)
        if not synced.ok:
            errors = [e.error for e in synced.failures if e.error]
            return self.result(Kind.FAILED, sync=synced, error="; ".join(errors[:3]), error_class=ErrorClass.TRANSIENT)
        return self.result(Kind.REMOVED, outcome=Result.REMOVED, sync=synced)


def _rollout_workloads(cluster: Cluster, key: AppEnv, inventory: frozenset[ObjectId]) -> frozenset[ObjectId]:
    """Deployments the rollout executor made for ``key`` (canary, blue, green: labelled as the app's and
    carrying its template hash) in the namespaces of the inventory's Deployments."""
    namespaces = sorted({ref.namespace for ref in inventory if ref.kind == "Deployment"})
    return frozenset(ObjectId.of(live) for ns in namespaces for live in made_deployments(cluster, key, ns))


@dataclass(frozen=True, slots=True)
class _Settings:
    """``ports.EnvironmentSettings`` of a removal: emptying the app is the point, so an empty render prunes."""

    prune_allow_empty: bool = True


@dataclass(frozen=True, slots=True)
class _Emptied:
    """What an app that left its environment renders to: nothing (a ``ports.RenderedApp``). ``sync_app`` of it
    prunes the app's whole inventory through the one prune stage, with all of its guards and bookkeeping."""

    app_env: AppEnv
    namespace: str
    revision: str | None
    manifests: tuple[Manifest, ...] = ()
    digest: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    environment: _Settings = _Settings()


def _forget(store: StateStore, key: AppEnv, namespace: str) -> None:
    """Drop a removed app's rollout state and inventory (last); its status (now ``Removed``) and history stay, so
    ``gitsync history`` still lists the app and auditors can read what ran."""
    for part in (ROLLOUT_PART, inventories.PART):
        store.delete(key, namespace, part)
