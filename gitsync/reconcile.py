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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from gitsync import inventory as inventories
from gitsync import removal
from gitsync.apply import Progress
from gitsync.errors import GitsyncError, Retry, TerminalError, TransientError
from gitsync.health import Health, Listed, read_health
from gitsync.history import Result, Status
from gitsync.model import AppEnv, HealthStatus, Manifest, ObjectId, SyncAction
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
    WorkloadReader,
)
from gitsync.promotion import BLOCKED_RECHECK, Promotions
from gitsync.redact import scrub, secret_values_of
from gitsync.result import Kind, ReconcileResult, Stage, Target
from gitsync.source import RevisionRefused
from gitsync.strategy.state import Phase
from gitsync.sync import SyncResult, sync_app
from renderers.errors import AwaitingPromotion

__all__ = [
    "PROGRESSING_REQUEUE",
    "NoRollouts",
    "Request",
    "RolloutStep",
    "Stages",
    "reconcile",
]

LIVE_TRIGGERS = frozenset({"drift", "cluster"})
"""Reasons that say the cluster changed rather than Git: a drift watcher or timer saw an edit, or the app-env's
cluster became unreachable or answered again (``cache.WatchCache.on_reach``)."""
PROGRESSING_REQUEUE = 2.0
"""Seconds before looking again at an app-env whose workloads are still rolling out (nothing sleeps)."""


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
    on_change: bool = False


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
    workloads: WorkloadReader | None = None
    """Where verify reads workloads, their Pods and ReplicaSets (the watch cache); None: ``health.Listed`` (a GET
    per workload, one LIST of each per namespace)."""
    ensure_namespace: Callable[[str], None] = lambda _namespace: None
    before_apply: Callable[[AppEnv, Sequence[Manifest]], None] = lambda _key, _manifests: None
    """Told the bodies about to be applied (the agent's drift watcher), so gitsync's own writes are not drift."""
    render: Render = _render
    preview: Callable[[RenderedApp], frozenset[ObjectId]] | None = None
    """A dry run's exclusions (``gitsync.strategy.executor.owned``): what a rollout would apply itself."""
    promotions: Promotions | None = None
    """The pin guard and the promote stage (the agent); None: pins are applied as they are, nothing is promoted."""


def reconcile(stages: Stages, request: Request) -> ReconcileResult:
    """Reconcile ``request.key`` by at most one step and record it; never raises a ``GitsyncError``."""
    line = _Line(stages, request)
    result = line.run()
    # An up-to-date revision is recorded only for what the promote stage says that the status does not yet say,
    # or for ledger lines the status keeps because the Git remote was away (``Status.unnoted``): the first
    # reconcile of an app-env after a restart catches them up, in the replica that owns it.
    unnoted = result.previous is not None and bool(result.previous.unnoted)
    if request.apply and (result.kind is not Kind.UP_TO_DATE or result.promotion_line is not None or unnoted):
        stages.recorder.record(result)
    if request.apply and result.kind in (Kind.REMOVED, Kind.UP_TO_DATE) and result.target and result.target.removed:
        _forget(stages, result)
    return result


def _forget(stages: Stages, result: ReconcileResult) -> None:
    """Drop a recorded removal's state, keeping its inventory while the status keeps its ledger lines. A status
    that cannot be read counts as keeping them: the removal is found and done again, which writes nothing twice."""
    try:
        kept = bool(stages.status.status(result.key, result.namespace).unnoted)
    except GitsyncError:
        kept = True
    removal.forget(stages.store, result.key, result.namespace, lines_kept=kept)


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
        error = fields.get("error")
        if error and self.rendered is not None:
            # A second guard behind the Kubernetes adapter's: no rendered secret value leaves in an error.
            fields["error"] = scrub(error, secret_values_of(m.body for m in self.rendered.manifests))
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
        """``outcome`` of a terminal ``error``; a transient one is its own outcome, ``Retrying``."""
        transient = isinstance(error, TransientError)
        return self.result(
            Kind.FAILED,
            outcome=Result.RETRYING if transient else outcome,
            error=str(error),
            error_class=Retry.TRANSIENT if transient else Retry.TERMINAL,
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
                error_class=Retry.TRANSIENT,
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
                Kind.FAILED, error=str(e), error_class=Retry.TRANSIENT, retry_after=getattr(e, "retry_after", None)
            )
        if self._current(self.previous):
            return self._promote_only(target, self.previous)
        return self._release(target, self.previous)

    def _promote_only(self, target: Target, previous: Status) -> ReconcileResult:
        """An applied, Succeeded revision needs no sync; a receiving environment still looks for a promotion."""
        if target.upstream is None or self.s.promotions is None or self.snapshot is None:
            return self.result(Kind.UP_TO_DATE)
        t0 = time.monotonic()
        try:
            self.rendered = self.s.render(self.snapshot.path, self.r.key, self.snapshot.revision, self.s.source.tree)
        except AwaitingPromotion:
            self.rendered = None
        except GitsyncError:
            return self.result(Kind.UP_TO_DATE)
        self._timed(Stage.RENDER, t0)
        return self._promote(self.result(Kind.UP_TO_DATE), target, previous)

    def _refused(self, error: RevisionRefused) -> ReconcileResult:
        """The wanted head failed signature verification: recorded against the key if its target is known."""
        self.snapshot = Snapshot(Commit(error.revision, "", "", 0.0), Path())
        self.target = self.s.locate(self.r.key, None)
        if self.target is not None:
            self.previous = self.s.status.status(self.r.key, self.target.namespace)
        return self.failed(Result.REFUSED, error)

    def _current(self, status: Status) -> bool:
        drift = self._live_moved
        return (
            self.r.skip_current
            and not drift
            and status.last_applied_revision == self.snapshot_revision
            and status.result == Result.SUCCEEDED
            and status.last_attempted_revision == self.snapshot_revision
            and self.r.watched
        )

    @property
    def _live_moved(self) -> bool:
        """Triggered because the cluster, not Git, changed: an up-to-date revision is looked at again (and, with
        self-heal off, only compared)."""
        return not LIVE_TRIGGERS.isdisjoint(self.r.reasons)

    @property
    def snapshot_revision(self) -> str:
        return self.snapshot.revision if self.snapshot is not None else ""

    def _release(self, target: Target, previous: Status) -> ReconcileResult:
        assert self.snapshot is not None
        key, revision = self.r.key, self.snapshot.revision
        t0 = time.monotonic()
        try:
            self.rendered = self.s.render(self.snapshot.path, key, revision, self.s.source.tree)
        except AwaitingPromotion as e:
            self._timed(Stage.RENDER, t0)
            awaiting = self.result(Kind.AWAITING, outcome=Result.AWAITING_PROMOTION, error=str(e))
            return self._promote(awaiting, target, previous)
        except GitsyncError as e:
            self._timed(Stage.RENDER, t0)
            return self.failed(Result.RENDER_ERROR, e if isinstance(e, TerminalError) else TerminalError(str(e)))
        self._timed(Stage.RENDER, t0)
        rendered = self.rendered
        blocked = self._guard(rendered)
        if blocked:
            result = self.result(Kind.BLOCKED, outcome=Result.BLOCKED, error=blocked, requeue_after=BLOCKED_RECHECK)
            return self._promote(result, target, previous)
        drift = self._live_moved
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
            message = "; ".join(synced.errors[:3]) or synced.summary()
            # Content errors (a refused body, an immutable field, a controller's conflict) wait for a new revision.
            error_class = synced.retry or Retry.TERMINAL
            outcome = Result.RETRYING if error_class is Retry.TRANSIENT else Result.FAILED
            return self.result(Kind.FAILED, outcome=outcome, sync=synced, error=message, error_class=error_class)
        t0 = time.monotonic()
        try:
            health = self._verify(rendered, step, synced)
        except GitsyncError as e:  # the cluster went away after the sync (a target cluster down): say so, retry
            return self.failed(Result.FAILED, e, sync=synced)
        self._timed(Stage.VERIFY, t0)
        return self._promote(self._verified(synced, health, step), target, previous)

    def _guard(self, rendered: RenderedApp) -> str:
        """Why the rendered pin may not be applied ("" when it may): the upstream ledger must verify it."""
        if self.s.promotions is None or not self.r.apply:
            return ""
        t0 = time.monotonic()
        try:
            return self.s.promotions.guard(rendered)
        finally:
            self._timed(Stage.GUARD, t0)

    def _promote(self, result: ReconcileResult, target: Target, previous: Status) -> ReconcileResult:
        """The promote stage of a receiving environment: at most one promotion or rollback commit."""
        promotions = self.s.promotions
        if promotions is None or target.upstream is None or not self.r.apply:
            return result
        t0 = time.monotonic()
        snapshot = self.snapshot.path if self.snapshot is not None else Path()
        now = self.s.clock.now()
        step = promotions.step(self.r.key, target.upstream, snapshot, self.rendered, result.outcome, previous, now)
        self._timed(Stage.PROMOTE, t0)
        waits = [w for w in (result.requeue_after, step.requeue_after) if w is not None]
        return replace(
            result,
            promotion=step,
            requeue_after=min(waits) if waits else None,
            timings=tuple(self.timings),
            finished_at=self.s.clock.now(),
        )

    def _strategy(self, rendered: RenderedApp) -> RolloutProgress:
        if self.r.apply:
            return self.s.rollouts.advance_rollout(rendered, now=self.started)
        owned = self.s.preview(rendered) if self.s.preview is not None else frozenset()
        return RolloutStep(exclude=owned)

    def _verify(self, rendered: RenderedApp, step: RolloutProgress, synced: SyncResult) -> Health:
        """Health read once, after the apply: every rendered object, except that objects a rollout applies itself
        are judged by the Deployments serving the app right now (stable and canary, or the live colour). What the
        sync wrote is read as the apply left it (the write-through watch cache, or a GET), never from the list the
        plan read before the apply (``gitsync sync``'s), which would show an object it re-created as missing."""
        ids = [m.id for m in rendered.manifests if not (step.serving and m.id in step.exclude)]
        workloads = self.s.workloads if self.s.workloads is not None else Listed(self.s.cluster)
        written = {e.id for e in synced.changes if e.action in (SyncAction.CREATED, SyncAction.CONFIGURED)}
        refs = [*ids, *sorted(step.serving - set(ids))]
        finished = synced.plan.finished_jobs
        return read_health(refs, rendered.namespace, workloads, self.s.live, written=written, finished=finished)

    def _verified(self, synced: SyncResult, health: Health, step: RolloutProgress) -> ReconcileResult:
        phase = str(step.phase)
        progressing = health.status is HealthStatus.PROGRESSING or step.requeue_after is not None
        if phase == Phase.ABORTED:
            outcome, error = Result.ROLLED_BACK, step.message
        elif phase == Phase.PAUSED:
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
        if self.previous.result == Result.REMOVED.value and not before.objects:
            # Removed and recorded; the emptied inventory stayed for a ledger line the status keeps (or the agent
            # was killed before dropping it): only the kept lines are written (see ``reconcile``), then it goes.
            return self.result(Kind.UP_TO_DATE)
        if not target.prune:
            return self.result(Kind.ORPHANED, outcome=Result.ORPHANED, kept=len(before.objects))
        t0 = time.monotonic()
        try:
            if self.r.apply:
                synced = removal.prune_all(
                    self.s.cluster, self.s.store, key, target.namespace, self.snapshot_revision, before
                )
            else:  # a dry run deletes nothing: what the removal would delete
                synced = removal.preview(self.s.cluster, self.s.store, key, target.namespace, self.snapshot_revision)
        except GitsyncError as e:
            return self.result(Kind.FAILED, error=str(e), error_class=Retry.TRANSIENT)
        self._timed(Stage.SYNC, t0)
        if not synced.ok:
            return self.result(
                Kind.FAILED, sync=synced, error="; ".join(synced.errors[:3]), error_class=Retry.TRANSIENT
            )
        return self.result(Kind.REMOVED, outcome=Result.REMOVED, sync=synced)
