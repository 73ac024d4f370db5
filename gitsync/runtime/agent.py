"""The reconcile loop: triggers enqueue app-envs, workers reconcile them one step at a time, state lives in the cluster.

Triggers (each only enqueues): the poll job (``ls-remote``; every key when the head moved), the drift job (every
key, every ``drift_interval``), the drift watcher (an edit of a managed object, seen through the watch cache;
with self-heal it also reverts that object at once), webhooks (every key, with the pushed revision), leadership
gained (every key), and requeues (a rollout step or health still progressing).

``reconcile`` is level-triggered and re-entrant; as a straight line:
resolve the snapshot -> ensure the namespace -> read status -> skip if already done -> render -> rollout step
(``RolloutDriver.advance_rollout``, at most one step) -> sync (objects the rollout owns excluded) -> health (read
once) -> record (status, history, Event, metrics, log). A render error or a refused signature is terminal: it
is recorded (status ``lastError``, Event, log), nothing is applied, the previous release keeps running, and the
key waits for a new revision. Transient errors back off. Killed at any line, a new agent carries on: status is
written last, so an interrupted sync is simply done again (apply is idempotent, the inventory is in the cluster).

An app that leaves its environment's ``env.yaml`` while its inventory is still in the cluster is a removal
(Flux's prune of a deleted Kustomization, Argo CD's resources finalizer): its key stays in the queue until a
reconcile has pruned its whole inventory through the ordinary sync and prune stages (reverse apply order,
``gitsync.dev/prune: "false"`` kept, failed deletes kept and retried), recorded it (Event ``AppRemoved``, a
``Removed`` history entry and status, log ``app.removed``) and dropped its inventory and rollout state. With pruning off
it is only reported (status ``Orphaned``, log ``app.orphaned``). An environment whose ``env.yaml`` does not load
removes nothing, and an agent configured with an explicit app list never removes an app.

High availability: with leader election only the leader's workers take work. Followers verify and enqueue
webhooks and keep polling, so a new leader starts with the triggers it saw, then enqueues every key anyway.
A reconcile in flight when leadership is lost finishes (state writes are optimistic, so it cannot overwrite a
newer record silently).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from gitsync import inventory as inventories
from gitsync import log as logging
from gitsync.adapters.git import scrub
from gitsync.adapters.state import LABEL_STATE
from gitsync.cache import WatchCache
from gitsync.drift import DriftWatcher
from gitsync.errors import GitsyncError, TerminalError, TransientError
from gitsync.events import EventSink, Reason
from gitsync.health import Health, aggregate, assess, assess_workload
from gitsync.history import History, Release, Result, Status, first_line
from gitsync.metrics import GIT_FETCH_SECONDS, GIT_POLLS, LEADER, observe_reconcile
from gitsync.model import (
    ANNOTATION_PRUNE,
    LABEL_APP,
    LABEL_ENV,
    LABEL_MANAGED_BY,
    MANAGER,
    AppEnv,
    HealthStatus,
    Json,
    Manifest,
    ObjectId,
    SyncAction,
    SyncState,
)
from gitsync.ports import Clock, Cluster, GitReader, LiveReader, StateStore
from gitsync.runtime.config import AgentConfig, Provider
from gitsync.runtime.leader import LeaderElector
from gitsync.runtime.queue import Outcome, ReconcileQueue, WorkItem
from gitsync.source import RevisionRefused, Snapshot, Source
from gitsync.strategy.executor import PART as ROLLOUT_PART
from gitsync.strategy.executor import made_deployments
from gitsync.sync import SyncResult, ensure_namespace, sync_app
from renderers import RenderedApp, RenderError, load_environment, render_app

__all__ = ["Agent", "AgentCluster", "NoRollouts", "RolloutDriver", "RolloutProgress", "RolloutStep"]

log = logging.get("gitsync.agent")

PROGRESSING_REQUEUE = 2.0
"""Seconds before looking again at an app-env whose workloads are still rolling out (nothing sleeps)."""
_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
_ABORTED, _PAUSED = "Aborted", "Paused"
"""Rollout phases (``gitsync.strategy.state.Phase``) the record distinguishes: rolled back, waiting for a human."""
_FAILURES = frozenset({Result.FAILED.value, Result.RENDER_ERROR.value, Result.REFUSED.value})


class AgentCluster(Cluster, Protocol):
    """The Cluster port plus a plain create (POST): a missing namespace is created, never patched, so the agent
    needs no ``patch`` on namespaces (which would let it relabel any namespace, pod-security labels included)."""

    def create(self, body: Json, *, dry_run: bool = False) -> Json: ...


class RolloutProgress(Protocol):
    """What the rollout executor did this reconcile (``gitsync.strategy.executor.StepOutcome``)."""

    @property
    def exclude(self) -> frozenset[ObjectId]:
        """Rendered objects the executor applies itself; ``sync_app`` leaves them alone."""
        ...

    @property
    def requeue_after(self) -> float | None:
        """When to look again (None: the rollout is done, or there is none)."""
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


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """The step of an app without a progressive rollout: nothing excluded, nothing to wait for."""

    exclude: frozenset[ObjectId] = frozenset()
    requeue_after: float | None = None
    serving: frozenset[ObjectId] = frozenset()
    phase: str = "Healthy"
    message: str = ""


class RolloutDriver(Protocol):
    """The seam for progressive delivery (``gitsync.strategy.executor.RolloutDriver``): called once per
    reconcile, before the sync, for every app-env; it advances a canary or blue-green rollout by at most one step
    and returns at once (waiting is a requeue)."""

    def advance_rollout(self, rendered: RenderedApp, *, now: float) -> RolloutProgress: ...

    def reset(self) -> None:
        """Forget anything cached about the cluster's rollout state (this agent just became the leader)."""
        ...


class NoRollouts:
    """Every app rolls out with its workloads' own strategy (a Deployment's rolling update)."""

    def advance_rollout(self, rendered: RenderedApp, *, now: float) -> RolloutProgress:
        return RolloutStep()

    def reset(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a key lives and how it syncs, as its environment file says at the current snapshot."""

    namespace: str
    prune: bool
    self_heal: bool


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


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        cluster: AgentCluster,
        store: StateStore,
        git: GitReader,
        clock: Clock,
        *,
        elector: LeaderElector | None = None,
        rollouts: RolloutDriver | None = None,
        cache: WatchCache | None = None,
    ) -> None:
        """``cache``: a watch-fed cache of managed objects; with it, plans read live objects from memory and a
        ``DriftWatcher`` per app-env notices (and with self-heal reverts) edits within seconds."""
        self.config = config
        self._cluster = cluster
        self._store = store
        self._clock = clock
        self._elector = elector
        self._rollouts = rollouts or NoRollouts()
        self._cache = cache
        self._watchers: dict[AppEnv, DriftWatcher] = {}
        self.source = Source(git, on_fetch=GIT_FETCH_SECONDS.observe)
        self.queue = ReconcileQueue(clock)
        self.history = History(store, config.history_limit)
        self.events = EventSink(cluster, clock, elector.identity if elector else "")
        self._targets: dict[AppEnv, _Target] = {}
        self._removed: dict[AppEnv, _Target] = {}
        """App-envs gone from their environment whose inventory is still in the cluster (queued until pruned)."""
        self._discovered = ""
        self._namespaces: set[str] = set()
        """Namespaces known to exist (checked once per process)."""
        """The revision whose environment files ``_targets`` reflects."""
        self._attempted: set[AppEnv] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self.reconciles = 0
        """Reconciles that reached the sync stage (tests and the benchmark count them)."""

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        now = datetime.fromtimestamp(self._clock.now(), UTC)
        self._scheduler.add_job(
            self.poll,
            "interval",
            seconds=self.config.poll_interval,
            id="poll",
            max_instances=1,
            coalesce=True,
            next_run_time=now,
        )
        self._scheduler.add_job(
            self.enqueue_all,
            "interval",
            seconds=self.config.drift_interval,
            id="drift",
            max_instances=1,
            coalesce=True,
            kwargs={"reason": "drift"},
        )
        self._scheduler.start()
        for n in range(self.config.workers):
            worker = threading.Thread(target=self._work, name=f"reconcile-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)
        if self._elector is not None:
            self._elector.start()
        else:
            LEADER.set(1)
        log.info(
            "agent.started",
            repo=scrub(self.config.repo.url),
            branch=self.config.repo.branch,
            environments=[e.name for e in self.config.environments],
            leader_election=self._elector is not None,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, let reconciles in flight finish (bounded), release the Lease."""
        self._stopping.set()
        self._scheduler.shutdown(wait=False)
        self.queue.close()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for watcher in list(self._watchers.values()):
            watcher.stop(timeout=1.0)
        if self._cache is not None:
            self._cache.stop()
        if self._elector is not None:
            self._elector.stop()
        log.info("agent.stopped")

    def on_leadership(self, leading: bool) -> None:
        """Elector callback: a new leader reconciles everything once (its queue may be empty or stale)."""
        LEADER.set(1 if leading else 0)
        if leading:
            self._rollouts.reset()
            self.enqueue_all(reason="leader")

    # -- triggers ----------------------------------------------------------------------------------------------

    def poll(self) -> None:
        """The poll job: one ls-remote; every key is enqueued when the head moved (or none is known yet)."""
        try:
            head = self.source.check()
            if head is None and self._targets:
                GIT_POLLS.labels("unchanged").inc()
                return
            GIT_POLLS.labels("moved").inc()
            if not self._targets:
                self._discover(self.source.resolve(head or ""))
            log.info("git.head_moved", revision=head, keys=len(self._targets))
            self.enqueue_all(head or "", reason="poll")
        except GitsyncError as e:
            GIT_POLLS.labels("error").inc()
            log.warning("git.poll_failed", error=str(e))

    def on_push(self, provider: Provider, revision: str) -> None:
        """Webhook callback: reconcile every key now (the reconcile fetches; nothing waits for the poll)."""
        if not self._targets:
            self._scheduler.modify_job("poll", next_run_time=datetime.fromtimestamp(self._clock.now(), UTC))
            return
        self.enqueue_all(revision, reason=f"webhook:{provider}")

    def enqueue_all(self, revision: str = "", reason: str = "") -> None:
        with self._lock:
            keys = sorted({*self._targets, *self._removed})
        for key in keys:
            self.queue.add(key, revision, reason)

    def _discover(self, snapshot: Snapshot) -> None:
        """The app-envs of the configured environments at ``snapshot`` (once per revision); new ones are
        enqueued, and so are removals: apps with an inventory in the environment's namespace that its
        ``env.yaml`` no longer lists (see the module doc). An environment whose file does not load keeps its
        previous app-envs and removals; one whose inventories cannot be listed now is looked at again by the
        next reconcile."""
        with self._lock:
            if self._discovered == snapshot.revision:
                return
        found: dict[AppEnv, _Target] = {}
        removed: dict[AppEnv, _Target] = {}
        complete = True
        for selection in self.config.environments:
            try:
                environment = load_environment(snapshot.path, selection.name)
            except RenderError as e:
                log.error("environment.invalid", env=selection.name, revision=snapshot.revision, error=str(e))
                with self._lock:
                    found.update({k: t for k, t in self._targets.items() if k.env == selection.name})
                    removed.update({k: t for k, t in self._removed.items() if k.env == selection.name})
                continue
            target = _Target(
                environment.namespace,
                prune=self.config.prune and environment.prune,
                self_heal=self.config.self_heal and environment.self_heal,
            )
            for app in selection.apps or environment.apps:
                found[AppEnv(app, selection.name)] = target
            if selection.apps:
                continue
            try:
                inventoried = self._inventoried(selection.name, environment.namespace)
            except GitsyncError as e:
                log.warning("environment.inventories_unlisted", env=selection.name, error=str(e))
                complete = False
                with self._lock:
                    removed.update({k: t for k, t in self._removed.items() if k.env == selection.name})
                continue
            removed.update({key: target for key in inventoried - set(found)})
        with self._lock:
            new = set(found) - set(self._targets)
            gone = (set(removed) - set(self._removed)) | (set(self._targets) - set(found) - set(removed))
            self._targets = found
            self._removed = removed
            self._discovered = snapshot.revision if complete else ""
        for key in sorted(gone):
            log.warning("app_env.removed", app=key.app, env=key.env, revision=snapshot.revision)
        for key in sorted(new | set(removed)):
            self.queue.add(key, snapshot.revision, "removed" if key in removed else "discovered")

    def _inventoried(self, env: str, namespace: str) -> set[AppEnv]:
        """The app-envs of ``env`` that have an inventory in ``namespace`` (what gitsync applied and may prune)."""
        selector = f"{LABEL_STATE}={inventories.PART},{LABEL_ENV}={env},{LABEL_MANAGED_BY}={MANAGER}"
        listed = self._cluster.list("", "ConfigMap", namespace, selector).items
        apps = {str(((cm.get("metadata") or {}).get("labels") or {}).get(LABEL_APP, "")) for cm in listed}
        return {AppEnv(app, env) for app in apps if app}

    # -- readiness ---------------------------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if self._elector is not None and not self._elector.is_leader:
            holder = self._elector.holder or "nobody yet"
            return True, f"follower; leader is {holder}"
        with self._lock:
            keys = set(self._targets)
            waiting = keys - self._attempted
        if not keys:
            return False, "no app-env discovered yet (first fetch pending)"
        if waiting:
            return False, f"first reconcile pending for {', '.join(sorted(map(str, waiting)))}"
        return True, f"{len(keys)} app-envs reconciled at least once"

    # -- workers -----------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            if self._elector is not None and not self._elector.wait_leading(1.0):
                continue
            item = self.queue.get(timeout=1.0)
            if item is None:
                continue
            outcome, revision, delay = self._guarded(item)
            self.queue.done(item, outcome, revision=revision, retry_after=delay)

    def _guarded(self, item: WorkItem) -> tuple[Outcome, str, float | None]:
        try:
            return self.reconcile(item)
        except GitsyncError as e:
            # Reading or writing state failed (API down, namespace gone): nothing can be recorded, so retry.
            log.warning("reconcile.failed", app=item.key.app, env=item.key.env, error=str(e), attempt=item.attempt)
            return Outcome.TRANSIENT, item.revision, getattr(e, "retry_after", None)
        except Exception as e:  # a bug in one reconcile must not kill the worker thread
            log.exception("reconcile.crashed", app=item.key.app, env=item.key.env, error=str(e))
            return Outcome.TRANSIENT, item.revision, None
        finally:
            with self._lock:
                self._attempted.add(item.key)

    # -- one reconcile -----------------------------------------------------------------------------------------

    def reconcile(self, item: WorkItem) -> tuple[Outcome, str, float | None]:
        """One step for one key; returns the queue outcome, the revision attempted and the delay it asks for."""
        key = item.key
        started, t0 = self._clock.now(), time.monotonic()
        with structlog.contextvars.bound_contextvars(app=key.app, env=key.env):
            try:
                snapshot = self.source.resolve(item.revision)
            except RevisionRefused as e:
                self._refused(key, e, started, t0)
                return Outcome.TERMINAL, e.revision, None
            except TransientError as e:
                log.warning("git.fetch_failed", error=str(e), attempt=item.attempt)
                return Outcome.TRANSIENT, item.revision, e.retry_after
            self._discover(snapshot)
            with structlog.contextvars.bound_contextvars(revision=snapshot.revision):
                return self._reconcile_at(item, snapshot, started, t0)

    def _reconcile_at(
        self, item: WorkItem, snapshot: Snapshot, started: float, t0: float
    ) -> tuple[Outcome, str, float | None]:
        key, revision = item.key, snapshot.revision
        with self._lock:
            target = self._targets.get(key)
            removal = self._removed.get(key)
        if target is None and removal is not None:
            return self._remove(key, removal, snapshot, started)
        if target is None:
            log.info("reconcile.gone", reason="app-env no longer in the environment at this revision")
            return Outcome.DONE, revision, None
        self._ensure_namespace(target.namespace)
        status = self.history.status(key, target.namespace)
        drift = any(r == "drift" for r in item.reasons)
        if (
            not drift
            and status.last_applied_revision == revision
            and status.result == Result.SUCCEEDED
            and status.last_attempted_revision == revision
            and (self._cache is None or key in self._watchers)
        ):
            log.debug("reconcile.up_to_date")
            return Outcome.DONE, revision, None

        try:
            rendered = render_app(snapshot.path, key.env, key.app, revision=revision)
        except (RenderError, TerminalError) as e:
            self._render_failed(key, target, snapshot, e, started, t0)
            return Outcome.TERMINAL, revision, None

        heal = target.self_heal or not drift or status.last_applied_revision != revision

        self.reconciles += 1
        try:
            step = self._rollouts.advance_rollout(rendered, now=started)
            watcher = self._watchers.get(key)
            if heal and watcher is not None:
                watcher.update(m for m in rendered.manifests if m.id not in step.exclude)
            result = sync_app(
                rendered,
                self._cluster,
                self._store,
                prune=target.prune,
                dry_run=not heal,
                exclude=step.exclude,
                live=self._cache,
            )
        except TransientError as e:
            self._sync_failed(key, target, snapshot, rendered.digest, str(e), started, t0)
            return Outcome.TRANSIENT, revision, e.retry_after
        except GitsyncError as e:
            self._sync_failed(key, target, snapshot, rendered.digest, str(e), started, t0)
            return Outcome.TERMINAL, revision, None
        if not heal:
            return self._report_drift(key, target, result, status, started, t0)
        if not result.ok:
            errors = [c.error for c in result.plan.errors if c.error] + [c.error or "" for c in result.failures]
            message = "; ".join(e for e in errors[:3] if e) or result.summary()
            self._sync_failed(key, target, snapshot, rendered.digest, message, started, t0, result=result)
            return Outcome.TRANSIENT, revision, None
        if self._cache is not None and key not in self._watchers:
            self._watch(key, target, [m for m in rendered.manifests if m.id not in step.exclude])
        return self._verify(item, target, snapshot, rendered, status, result, started, t0, step)

    def _remove(
        self, key: AppEnv, target: _Target, snapshot: Snapshot, started: float
    ) -> tuple[Outcome, str, float | None]:
        """Prune an app that left its environment, or with pruning off report it (see the module doc). Killed at
        any line, the next reconcile carries on: the inventory ConfigMap, which makes this a removal, goes last."""
        revision, namespace = snapshot.revision, target.namespace
        watcher = self._watchers.pop(key, None)
        if watcher is not None:  # self-heal must not put back what is being deleted
            watcher.stop(timeout=1.0)
        before = inventories.load(self._store, key, namespace)
        if not target.prune:
            return self._orphaned(key, target, before, revision)
        made = self._rollout_workloads(key, before.objects)
        if made - before.objects:
            # Canary and colour Deployments are the executor's, not the render's: inventory them so they go too.
            inventories.save(self._store, key, namespace, before.adding(made), before)
        result = sync_app(_Emptied(key, namespace, revision), self._cluster, self._store, prune=True, dry_run=False)
        if not result.ok:
            errors = [e.error for e in result.failures if e.error]
            log.warning("app.remove_failed", failed=len(errors), errors=errors[:3])
            return Outcome.TRANSIENT, revision, None
        finished = self._clock.now()
        deleted, kept = result.counts()[SyncAction.DELETED], len(result.plan.orphaned)
        self._record(key, target, snapshot, "", Result.REMOVED, started, finished, sync=result)
        message = f"removed from environment {key.env} at {revision[:12]}: {deleted} objects deleted"
        if kept:
            message += f", {kept} kept ({ANNOTATION_PRUNE}: false)"
        self.events.emit(key, namespace, Reason.APP_REMOVED, message)

        def update(status: Status) -> Status:
            return replace(
                status,
                last_attempted_revision=revision,
                result=Result.REMOVED.value,
                sync_state=SyncState.UNKNOWN.value,
                health=HealthStatus.UNKNOWN.value,
                health_reason="",
                last_error="",
                updated_at=finished,
            )

        self.history.set_status(key, namespace, update)
        self._drop_state(key, namespace)
        with self._lock:
            self._removed.pop(key, None)
        log.info("app.removed", deleted=deleted, kept=kept)
        return Outcome.DONE, revision, None

    def _orphaned(
        self, key: AppEnv, target: _Target, inventory: inventories.Inventory, revision: str
    ) -> tuple[Outcome, str, float | None]:
        """Pruning is off: the removed app's objects stay where they are; status and log say so (once)."""
        message = (
            f"{key.app} is no longer listed in environments/{key.env}/env.yaml and pruning is off: "
            f"its {len(inventory.objects)} objects stay in the cluster, no longer managed"
        )
        status = self.history.status(key, target.namespace)
        if (status.result, status.last_error) != (Result.ORPHANED.value, message):
            now = self._clock.now()

            def update(s: Status) -> Status:
                state = SyncState.OUT_OF_SYNC.value
                return replace(s, result=Result.ORPHANED.value, last_error=message, sync_state=state, updated_at=now)

            self.history.set_status(key, target.namespace, update)
        log.warning("app.orphaned", objects=len(inventory.objects), reason="pruning is off")
        return Outcome.DONE, revision, None

    def _rollout_workloads(self, key: AppEnv, inventory: frozenset[ObjectId]) -> frozenset[ObjectId]:
        """Deployments the rollout executor made for ``key`` (canary, blue, green: labelled as the app's and
        carrying its template hash) in the namespaces of the inventory's Deployments."""
        namespaces = sorted({ref.namespace for ref in inventory if ref.kind == "Deployment"})
        return frozenset(ObjectId.of(live) for ns in namespaces for live in made_deployments(self._cluster, key, ns))

    def _drop_state(self, key: AppEnv, namespace: str) -> None:
        """Delete a removed app's rollout state and inventory (last); its status (now ``Removed``) and history
        stay, so ``gitsync history`` still lists the app and auditors can read what ran."""
        parts = (ROLLOUT_PART, inventories.PART)
        selector = f"{LABEL_APP}={key.app},{LABEL_ENV}={key.env},{LABEL_MANAGED_BY}={MANAGER},{LABEL_STATE}"
        listed = self._cluster.list("", "ConfigMap", namespace, selector).items
        by_part = {str(cm["metadata"]["labels"][LABEL_STATE]): ObjectId.of(cm) for cm in listed}
        for part in parts:
            if part in by_part:
                self._cluster.delete(by_part[part])

    def _ensure_namespace(self, namespace: str) -> None:
        """Create the environment's namespace once if it is missing (status and objects live there)."""
        if self.config.create_namespaces and namespace not in self._namespaces:
            ensure_namespace(self._cluster, namespace)
            self._namespaces.add(namespace)

    def _watch(self, key: AppEnv, target: _Target, manifests: list[Manifest]) -> None:
        """Start noticing drift of ``key``'s objects (after its first successful sync in this process)."""
        assert self._cache is not None
        watcher = DriftWatcher(
            key,
            manifests,
            self._cluster,
            self._cache,
            self._clock,
            self_heal=target.self_heal,
            on_drift=lambda drift: self.queue.add(drift.key, "", "drift"),
        )
        watcher.start()
        self._watchers[key] = watcher

    # -- verify and record ------------------------------------------------------------------------------------

    def _health(self, rendered: RenderedApp, step: RolloutProgress) -> Health:
        """Health read once: every rendered object, except that objects a rollout applies itself are judged by
        the Deployments serving the app right now (stable and canary, or the live colour)."""
        pods: list[Json] | None = None
        healths: list[tuple[ObjectId, Health]] = []
        ids = [m.id for m in rendered.manifests if not (step.serving and m.id in step.exclude)]
        for ref in [*ids, *sorted(step.serving - set(ids))]:
            # Workloads are read fresh (their status moves right after an apply); anything else may come from the
            # cache, which answers an object it does not hold yet with a GET.
            reader: LiveReader = self._cluster if self._cache is None or ref.kind in _WORKLOADS else self._cache
            live = reader.get(ref)
            if ref.kind in _WORKLOADS and live is not None:
                if pods is None:
                    pods = list(self._cluster.list("", "Pod", rendered.namespace).items)
                healths.append((ref, assess_workload(live, pods)))
            else:
                healths.append((ref, assess(live)))
        return aggregate(healths)

    def _verify(
        self,
        item: WorkItem,
        target: _Target,
        snapshot: Snapshot,
        rendered: RenderedApp,
        before: Status,
        result: SyncResult,
        started: float,
        t0: float,
        step: RolloutProgress,
    ) -> tuple[Outcome, str, float | None]:
        key, revision = item.key, snapshot.revision
        health = self._health(rendered, step)
        phase = str(step.phase)
        requeue_after = step.requeue_after
        progressing = health.status is HealthStatus.PROGRESSING or requeue_after is not None
        degraded = health.status in (HealthStatus.DEGRADED, HealthStatus.MISSING)
        if phase == _ABORTED:
            outcome, error = Result.ROLLED_BACK, step.message
        elif phase == _PAUSED:
            outcome, error = Result.PAUSED, step.message
        else:
            outcome, error = (Result.PROGRESSING if progressing else Result.SUCCEEDED), ""
        finished = self._clock.now()

        def update(status: Status) -> Status:
            return replace(
                status,
                last_applied_revision=revision,
                last_applied_digest=rendered.digest,
                last_attempted_revision=revision,
                # After a rollback the workload runs the stable version, not this revision's: say so.
                sync_state=(SyncState.OUT_OF_SYNC if outcome is Result.ROLLED_BACK else SyncState.SYNCED).value,
                health=health.status.value,
                health_reason=health.reason,
                last_error=error,
                result=outcome.value,
                last_synced_at=finished,
                updated_at=finished,
            )

        self.history.set_status(key, target.namespace, update)
        changed = any(result.counts()[a] for a in (SyncAction.CREATED, SyncAction.CONFIGURED, SyncAction.DELETED))
        new_release = (before.last_applied_revision, before.last_applied_digest) != (revision, rendered.digest)
        if changed or new_release:
            self._record(key, target, snapshot, rendered.digest, outcome, started, finished, sync=result, error=error)
        elif before.result != outcome.value:
            self.history.settle(key, target.namespace, revision, rendered.digest, outcome.value, finished)
        recovered = before.result in _FAILURES
        if (new_release or recovered) and outcome is not Result.ROLLED_BACK:
            message = f"synced {revision[:12]}: {result.summary()}"
            self.events.emit(key, target.namespace, Reason.SYNC_SUCCEEDED, message)
        if changed and "drift" in item.reasons and not new_release:
            self.events.emit(key, target.namespace, Reason.DRIFT_DETECTED, f"repaired: {result.summary()}")
        if degraded and before.health != health.status.value:
            self.events.emit(key, target.namespace, Reason.DEGRADED, health.reason or health.status.value)
        if health.status is HealthStatus.HEALTHY and before.health in (HealthStatus.DEGRADED, HealthStatus.MISSING):
            self.events.emit(key, target.namespace, Reason.RECOVERED, f"healthy again at {revision[:12]}")
        if recovered:
            self.events.emit(key, target.namespace, Reason.RECOVERED, f"{revision[:12]} deployed after a failure")
        settled = outcome in (Result.SUCCEEDED, Result.ROLLED_BACK) or (outcome is Result.PAUSED and not requeue_after)
        observe_reconcile(
            key, time.monotonic() - t0, outcome.value.lower(), finished, success=outcome is Result.SUCCEEDED
        )
        log.info(
            "reconcile.done",
            result=outcome.value,
            health=health.status.value,
            health_reason=health.reason,
            rollout=phase,
            seconds=round(time.monotonic() - t0, 3),
        )
        if settled:
            return Outcome.DONE, revision, None
        return Outcome.REQUEUE, revision, requeue_after or PROGRESSING_REQUEUE

    def _record(
        self,
        key: AppEnv,
        target: _Target,
        snapshot: Snapshot,
        digest: str,
        result: Result,
        started: float,
        finished: float,
        *,
        sync: SyncResult | None = None,
        error: str = "",
    ) -> None:
        counts = sync.counts() if sync is not None else {}
        self.history.record(
            key,
            target.namespace,
            Release(
                revision=snapshot.revision,
                digest=digest,
                author=snapshot.commit.author,
                message=first_line(snapshot.commit.message),
                started_at=started,
                finished_at=finished,
                result=result.value,
                created=counts.get(SyncAction.CREATED, 0),
                configured=counts.get(SyncAction.CONFIGURED, 0),
                deleted=counts.get(SyncAction.DELETED, 0),
                unchanged=counts.get(SyncAction.UNCHANGED, 0),
                failed=counts.get(SyncAction.FAILED, 0),
                error=error,
            ),
        )

    def _failure(
        self,
        key: AppEnv,
        namespace: str,
        revision: str,
        result: Result,
        reason: Reason,
        message: str,
        t0: float,
    ) -> float:
        """Record a failed attempt in status, Event, metrics and log; the running release is left alone."""
        finished = self._clock.now()

        def update(status: Status) -> Status:
            return replace(
                status,
                last_attempted_revision=revision,
                last_error=message,
                result=result.value,
                sync_state=SyncState.OUT_OF_SYNC.value,
                updated_at=finished,
            )

        self.history.set_status(key, namespace, update)
        self.events.emit(key, namespace, reason, f"{revision[:12]}: {message}")
        observe_reconcile(key, time.monotonic() - t0, result.value.lower(), finished, success=False)
        log.warning("reconcile.failed", result=result.value, error=message, revision=revision)
        return finished

    def _render_failed(
        self,
        key: AppEnv,
        target: _Target,
        snapshot: Snapshot,
        error: GitsyncError,
        started: float,
        t0: float,
    ) -> None:
        finished = self._failure(
            key, target.namespace, snapshot.revision, Result.RENDER_ERROR, Reason.RENDER_FAILED, str(error), t0
        )
        self._record(key, target, snapshot, "", Result.RENDER_ERROR, started, finished, error=str(error))

    def _sync_failed(
        self,
        key: AppEnv,
        target: _Target,
        snapshot: Snapshot,
        digest: str,
        message: str,
        started: float,
        t0: float,
        *,
        result: SyncResult | None = None,
    ) -> None:
        finished = self._failure(
            key, target.namespace, snapshot.revision, Result.FAILED, Reason.SYNC_FAILED, message, t0
        )
        self._record(key, target, snapshot, digest, Result.FAILED, started, finished, sync=result, error=message)

    def _refused(self, key: AppEnv, error: RevisionRefused, started: float, t0: float) -> None:
        with self._lock:
            target = self._targets.get(key)
        if target is None:
            log.error("git.revision_refused", revision=error.revision, error=str(error))
            return
        self._failure(key, target.namespace, error.revision, Result.REFUSED, Reason.SIGNATURE_REFUSED, str(error), t0)

    def _report_drift(
        self, key: AppEnv, target: _Target, result: SyncResult, status: Status, started: float, t0: float
    ) -> tuple[Outcome, str, float | None]:
        """Self-heal off: a dry-run found the cluster differs from Git; report it, change nothing."""
        drifted = result.plan.has_changes
        state = SyncState.OUT_OF_SYNC if drifted else SyncState.SYNCED
        now = self._clock.now()
        self.history.set_status(key, target.namespace, lambda s: replace(s, sync_state=state.value, updated_at=now))
        if drifted and status.sync_state != state.value:
            self.events.emit(key, target.namespace, Reason.DRIFT_DETECTED, result.plan.summary())
        log.info("reconcile.drift_checked", drifted=drifted, seconds=round(time.monotonic() - t0, 3))
        return Outcome.DONE, result.revision, None
