"""The agent: scheduling only. Triggers enqueue app-envs; workers hand each to ``gitsync.reconcile.reconcile``.

Triggers (each only enqueues): the poll job (``ls-remote``; every key when the head moved), the drift job (every
key, every ``drift_interval``), the drift watcher (an edit of a managed object, seen through the watch cache; with
self-heal the reconcile it enqueues takes the edit back), webhooks (every key, with the pushed revision),
leadership gained (every key), and requeues (a rollout step or health still progressing).

What a reconcile does, and the order of its stages, lives in ``gitsync.reconcile``; what it records, in
``gitsync.record``. The agent maps a ``ReconcileResult`` to the queue (done, requeue after N s, transient backoff,
terminal parking), keeps the drift watchers, and discovers the app-envs of the configured environments.

An app that leaves its environment's ``env.yaml`` while its inventory is still in the cluster is a removal
(Flux's prune of a deleted Kustomization, Argo CD's resources finalizer): its key stays in the queue until a
reconcile has pruned its whole inventory (``reconcile`` with a removed ``Target``). An environment whose
``env.yaml`` does not load removes nothing, one that lists no apps (``apps: []``) without ``pruneAllowEmpty: true``
only reports its apps as orphaned (Argo CD's and Flux's guard against an empty source), and an agent configured
with an explicit app list never removes an app.

Clusters (``gitsync.runtime.clusters``): each environment is applied to its named cluster (or the home cluster)
through a ``Stages`` of that cluster (its client, watch cache, rollouts and Events); records (status, history,
inventory) stay in the home cluster's ``StateStore``, so a cluster that is down fails only its own app-envs, and
their status, written at home, names it.

Sharding (``gitsync.runtime.shards``): with shard Leases every replica works, each only on the app-envs of the
shards it holds (triggers for the others are dropped: their holder sees the same poll); a shard gained enqueues
its app-envs, a shard lost stops their drift watchers.

High availability: with leader election only the leader's workers take work. Followers verify and enqueue
webhooks and keep polling, so a new leader starts with the triggers it saw, then enqueues every key anyway.
A reconcile in flight when leadership is lost finishes (state writes are optimistic, so it cannot overwrite a
newer record silently).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from gitsync import inventory as inventories
from gitsync import log as logging
from gitsync.adapters.git import scrub
from gitsync.cache import WatchCache
from gitsync.drift import DriftHub, DriftWatcher
from gitsync.errors import GitsyncError, Retry, TransientError
from gitsync.events import EventSink
from gitsync.history import History, Result
from gitsync.metrics import GIT_FETCH_SECONDS, GIT_POLLS, LEADER
from gitsync.model import AppEnv, HealthStatus, Json, Manifest
from gitsync.notify import Notifier
from gitsync.ports import Clock, Cluster, Forge, GitReader, Rollouts, Snapshot, StateStore
from gitsync.promotion import Promotions, topology
from gitsync.reconcile import NoRollouts, Request, Stages, reconcile
from gitsync.record import CommitStatusSink, LedgerSink, PullRequestSink, Recorder, default_sinks
from gitsync.result import Kind, ReconcileResult, Target
from gitsync.runtime.clusters import HOME, Clusters, Connected
from gitsync.runtime.config import AgentConfig, Provider
from gitsync.runtime.leader import LeaderElector
from gitsync.runtime.plan_comments import PlanComments
from gitsync.runtime.queue import Outcome, ReconcileQueue, WorkItem
from gitsync.runtime.shards import ShardSet
from gitsync.runtime.wakeups import Wakeups
from gitsync.source import Source
from gitsync.sync import ensure_namespace
from renderers import Environment, RenderedApp, RenderError, load_environment, render_app
from renderers.cache import MemoryRenderCache

__all__ = ["Agent", "AgentCluster"]

log = logging.get("gitsync.agent")


class AgentCluster(Cluster, Protocol):
    """The Cluster port plus a plain create (POST): a missing namespace is created, never patched, so the agent
    needs no ``patch`` on namespaces (which would let it relabel any namespace, pod-security labels included)."""

    def create(self, body: Json, *, dry_run: bool = False) -> Json: ...


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
        rollouts: Rollouts | None = None,
        cache: WatchCache | None = None,
        promotions: Promotions | None = None,
        forge: Forge | None = None,
        notifier: Notifier | None = None,
        clusters: Clusters | None = None,
        shards: ShardSet | None = None,
    ) -> None:
        """``cluster``, ``cache`` and ``rollouts`` are the home cluster's; ``clusters`` connects the named target
        clusters (None: every environment must be applied to the home cluster). ``cache``: a watch-fed cache of
        managed objects; with it, plans read live objects from memory and a ``DriftWatcher`` per app-env notices
        edits within seconds (and enqueues a reconcile that heals them). ``promotions``: the pin guard, the
        promote stage and the Git ledger (None: nothing is written to Git). ``forge``: commit statuses, the
        promotion and rollback pull requests, and the plan comment on pull-request webhooks (``on_pull_request``)
        go through it; None: none of those. ``notifier``: sends the notifications of ``notifications:`` (started
        and stopped with the agent). ``shards``: this replica's shard Leases (None: it works on every app-env,
        alone or as the leader)."""
        self.config = config
        self._cluster = cluster
        self._store = store
        self._clock = clock
        self._elector = elector
        self._notifier = notifier
        self._shards = shards
        self._rollouts = rollouts or NoRollouts()
        self._clusters = clusters or Clusters(
            Connected(HOME, cluster, cache, self._rollouts), cluster, config.leader.namespace, {}, _no_targets
        )
        self._watchers: dict[AppEnv, DriftWatcher] = {}
        self._drift_hubs: dict[WatchCache, DriftHub] = {}
        """One per target cluster's watch cache: its drift checks, whatever the number of app-envs."""
        self._renders = MemoryRenderCache()
        """The newest render of each app-env: a reconcile whose inputs did not change renders nothing."""
        self.source = Source(git, on_fetch=GIT_FETCH_SECONDS.observe)
        self.queue = ReconcileQueue(clock)
        self._wakeups: dict[str, Wakeups] = {}
        """Cluster name -> which app-envs wait for which of its workloads (fed by that cluster's watch cache)."""
        self._history = History(store, config.history_limit)
        self._promotions = promotions
        self._forge = forge
        self._forge_sinks: tuple[CommitStatusSink, PullRequestSink] | tuple[()] = ()
        self.plan_comments: PlanComments | None = None
        if forge is not None:
            target_url = config.forge.target_url if config.forge is not None else ""
            self._forge_sinks = (
                CommitStatusSink(forge, target_url=target_url),
                PullRequestSink(forge, config.repo.branch),
            )
            self.plan_comments = PlanComments(forge, self.source.tree, git.remote_head, git.merge_commit)
        self._stages: dict[str, Stages] = {}
        """Cluster name -> the stages reconciling the environments applied there (made on first use)."""
        self._env_clusters: dict[str, tuple[str, str]] = {}
        """Environment -> (cluster name, the env.yaml's kubeconfigSecret), as discovered."""
        self._downstream: dict[str, tuple[str, ...]] = {}
        """Environment -> the environments that take their releases from it (``promotion.from``)."""
        self._targets: dict[AppEnv, Target] = {}
        self._removed: dict[AppEnv, Target] = {}
        """App-envs gone from their environment whose inventory is still in the cluster (queued until pruned)."""
        self._ledger = ""
        """The ledger's notes ref as last polled."""
        self._discovered = ""
        """The revision whose environment files ``_targets`` reflects."""
        self._environments: dict[tuple[Path, str], Environment] = {}
        """(snapshot, env) -> its env.yaml as the last discovery loaded it, for every render of that snapshot."""
        self._namespaces: set[tuple[str, str]] = set()
        """(cluster, namespace) known to exist (checked once per process)."""
        self._attempted: set[AppEnv] = set()
        self._lock = threading.Lock()
        self._discovering = threading.Lock()
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._scheduler = BackgroundScheduler(timezone=UTC)

    def _stages_of(self, name: str) -> Stages:
        """The stages of the environments applied to cluster ``name``, composed on first use: that cluster's
        client, watch cache, rollouts and Events; the home cluster's records (status, history, the ledger)."""
        with self._lock:
            found = self._stages.get(name)
            secret = next((s for c, s in self._env_clusters.values() if c == name and s), "")
        if found is not None:
            return found
        target = self._clusters.get(name, secret)
        events = EventSink(target.cluster, self._clock, self._identity)
        promotions = self._promotions
        ledger = LedgerSink(promotions, self._history, self._store, forge=self._forge) if promotions else None
        stages = Stages(
            source=self.source,
            locate=lambda key, snapshot: self._locate_on(name, key, snapshot),
            cluster=target.cluster,
            store=self._store,
            clock=self._clock,
            status=self._history,
            recorder=Recorder(
                (*default_sinks(self._history, events, ledger=ledger, notifier=self._notifier), *self._forge_sinks)
            ),
            rollouts=target.rollouts or NoRollouts(),
            live=target.cache,
            workloads=target.cache,
            ensure_namespace=lambda namespace: self._ensure_namespace(target, namespace),
            before_apply=self._before_apply,
            promotions=promotions,
            render=self._render,
        )
        with self._lock:
            kept = self._stages.setdefault(name, stages)
            if kept is not stages:
                return kept
            wakeups = self._wakeups[name] = Wakeups(self.queue.wake, target.cache, self._clock.now)
        if target.cache is not None:
            target.cache.subscribe(wakeups.on_change)
            target.cache.on_reach(lambda error: self._reach_changed(name, error))
        return stages

    def _reach_changed(self, name: str, error: str) -> None:
        """Cluster ``name`` went away or came back (its watch cache says so): reconcile its app-envs now, so their
        status names the cluster that is down even when Git did not change (their reconciles read that cache),
        and heals once it answers, instead of at the next drift timer."""
        with self._lock:
            keys = sorted(k for k, t in {**self._removed, **self._targets}.items() if t.cluster == name)
        log.info("agent.cluster_reach", cluster=name, reachable=not error, app_envs=len(keys))
        for key in keys:
            self._enqueue(key, "", "cluster")
            self.queue.wake(key)  # one waiting out a requeue (a rollout's health check) runs now too
            if not error:
                self.queue.retry_now(key)  # and one backing off after failing on the cluster that is back

    @property
    def _identity(self) -> str:
        if self._elector is not None:
            return self._elector.identity
        return self._shards.identity if self._shards is not None else ""

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
        if self._notifier is not None:
            self._notifier.start()
        for n in range(self.config.workers):
            worker = threading.Thread(target=self._work, name=f"reconcile-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)
        if self._elector is not None:
            self._elector.start()
        else:
            LEADER.set(1)
        if self._shards is not None:
            self._shards.start()
            if self._clusters.home.cache is not None:
                self._shards.watch_announcements(self._clusters.home.cache, self.on_announced)
        log.info(
            "agent.started",
            repo=scrub(self.config.repo.url),
            branch=self.config.repo.branch,
            environments=[e.name for e in self.config.environments],
            leader_election=self._elector is not None,
            shards=self._shards.shards if self._shards is not None else 0,
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
            watcher.stop()
        for hub in list(self._drift_hubs.values()):
            hub.stop(timeout=1.0)
        for target in self._clusters.connected():
            if target.cache is not None:
                target.cache.stop()
        if self._notifier is not None:
            self._notifier.stop()
        if self._elector is not None:
            self._elector.stop()
        if self._shards is not None:
            self._shards.stop()
        queues = [sink.queue for sink in self._forge_sinks]
        if self.plan_comments is not None:
            queues.append(self.plan_comments.queue)
        for queue in queues:
            queue.close(timeout=max(1.0, deadline - time.monotonic()))
        log.info("agent.stopped")

    def on_leadership(self, leading: bool) -> None:
        """Elector callback: a new leader reconciles everything once (its queue may be empty or stale)."""
        LEADER.set(1 if leading else 0)
        if leading:
            for target in self._clusters.connected():
                if target.rollouts is not None:
                    target.rollouts.reset()
            self.enqueue_all(reason="leader")

    def on_shard(self, shard: int, held: bool) -> None:
        """Shard-Lease callback: a shard gained reconciles its app-envs once, at the newest head seen (the
        triggers of a commit that arrived before the shard did were dropped here); one lost stops their drift
        watchers (the new holder watches them)."""
        assert self._shards is not None
        shards = self._shards
        with self._lock:
            keys = sorted(k for k in {*self._targets, *self._removed} if shards.shard_of(k) == shard)
        if held:
            for key in keys:
                self.queue.add(key, self.source.seen, "shard")
            return
        for key in keys:
            watcher = self._watchers.pop(key, None)
            if watcher is not None:
                watcher.stop()

    # -- triggers ----------------------------------------------------------------------------------------------

    def poll(self) -> None:
        """The poll job: one ls-remote; every key is enqueued when the head moved (or none is known yet)."""
        try:
            head = self.source.check()
            self._ledger_moved(self.source.ledger())
            if head is None and (self._targets or self._discovered):  # nothing new (known, or known to be empty)
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

    def _ledger_moved(self, ledger: str) -> None:
        """Another agent recorded a release (one agent per cluster): the environments this agent receives from
        environments it does not deploy look at their upstream's ledger now, as ``_promote_next`` does for
        environments both ends of which it deploys."""
        with self._lock:
            moved, self._ledger = ledger != self._ledger, ledger
            served = {selection.name for selection in self.config.environments}
            receivers = sorted(
                key
                for key, target in self._targets.items()
                if target.upstream is not None and target.upstream.from_env not in served
            )
        if moved and ledger:
            for key in receivers:
                self._enqueue(key, "", "ledger")

    def on_push(self, provider: Provider, revision: str) -> None:
        """Webhook callback: a push naming its commit reconciles every key now (the reconcile fetches it). One
        that names none (a generic sender's empty body: "look at the branch now") runs the poll at once, whose
        ``ls-remote`` enqueues a moved head: an empty revision would only reconcile the snapshot already held."""
        if self._shards is not None:  # the Service gave it to this replica: the others hear of it by their Leases
            threading.Thread(target=self._shards.announce, args=(revision,), name="announce", daemon=True).start()
        if not revision or not self._targets:
            self._poll_now()
            return
        self.enqueue_all(revision, reason=f"webhook:{provider}")

    def on_announced(self, revision: str) -> None:
        """Another replica received a webhook (sharding): look at the branch now, as an empty generic webhook
        does, rather than trust a revision this replica has not fetched."""
        self._poll_now()

    def _poll_now(self) -> None:
        self._scheduler.modify_job("poll", next_run_time=datetime.fromtimestamp(self._clock.now(), UTC))

    def enqueue_all(self, revision: str = "", reason: str = "") -> None:
        with self._lock:
            keys = sorted({*self._targets, *self._removed})
        for key in keys:
            self._enqueue(key, revision, reason)

    def _enqueue(self, key: AppEnv, revision: str, reason: str) -> None:
        """Add ``key`` to the queue, unless another replica holds its shard (it sees the same triggers)."""
        if self._shards is None or self._shards.owns(key):
            self.queue.add(key, revision, reason)

    def _discover(self, snapshot: Snapshot) -> None:
        """The app-envs of the configured environments at ``snapshot`` (once per revision); new ones are
        enqueued, and so are removals: apps with an inventory in the environment's namespace that its
        ``env.yaml`` no longer lists (see the module doc). An environment whose file does not load keeps its
        previous app-envs and removals; one whose inventories cannot be listed now is looked at again by the
        next reconcile. One discovery at a time: the workers that want the same revision wait for the first
        (a commit touching 1,000 app-envs would otherwise list the inventories once per worker)."""
        with self._discovering:
            with self._lock:
                if self._discovered == snapshot.revision:
                    return
            self._discover_at(snapshot)

    def _discover_at(self, snapshot: Snapshot) -> None:
        found: dict[AppEnv, Target] = {}
        removed: dict[AppEnv, Target] = {}
        promotions = topology(snapshot.path)
        complete = True
        environments: dict[tuple[Path, str], Environment] = {}
        for selection in self.config.environments:
            try:
                environment = load_environment(
                    snapshot.path, selection.name, protected=self.config.protected_namespaces
                )
                environments[(snapshot.path, selection.name)] = environment
            except RenderError as e:
                log.error("environment.invalid", env=selection.name, revision=snapshot.revision, error=str(e))
                with self._lock:
                    found.update({k: t for k, t in self._targets.items() if k.env == selection.name})
                    removed.update({k: t for k, t in self._removed.items() if k.env == selection.name})
                continue
            declared = environment.cluster
            cluster = selection.cluster or (declared.name if declared is not None else HOME)
            secret = declared.kubeconfig_secret if declared is not None and declared.name == cluster else ""
            with self._lock:
                self._env_clusters[selection.name] = (cluster, secret)
            target = Target(
                environment.namespace,
                prune=self.config.prune and environment.prune,
                self_heal=self.config.self_heal and environment.self_heal,
                upstream=promotions.upstream.get(selection.name),
                promoted_paths=promotions.promoted_paths.get(selection.name, ()),
                cluster=cluster,
            )
            for app in selection.apps or environment.apps:
                found[AppEnv(app, selection.name)] = target
            if selection.apps:
                continue
            try:
                left = inventories.departed(self._store, selection.name, environment.namespace, environment.apps)
            except GitsyncError as e:
                log.warning("environment.inventories_unlisted", env=selection.name, error=str(e))
                complete = False
                with self._lock:
                    removed.update({k: t for k, t in self._removed.items() if k.env == selection.name})
                continue
            leaving = target.removed_from(environment.apps, prune_allow_empty=environment.prune_allow_empty)
            if left and leaving.emptied:
                # The empty-render guard of a whole environment: ``apps: []`` is reported, never pruned.
                log.warning("environment.empty", env=selection.name, revision=snapshot.revision, kept=len(left))
            removed.update(dict.fromkeys(left, leaving))
        with self._lock:
            new = set(found) - set(self._targets)
            gone = (set(removed) - set(self._removed)) | (set(self._targets) - set(found) - set(removed))
            self._targets = found
            self._removed = removed
            self._environments = environments
            self._downstream = dict(promotions.downstream)
            self._discovered = snapshot.revision if complete else ""
        for key in sorted(gone):
            log.warning("app_env.removed", app=key.app, env=key.env, revision=snapshot.revision)
        for key in sorted(new | set(removed)):
            self._enqueue(key, snapshot.revision, "removed" if key in removed else "discovered")

    def _locate(self, key: AppEnv, snapshot: Snapshot | None) -> Target | None:
        """``Stages.locate``: discover the app-envs at ``snapshot`` (once per revision), then where ``key`` lives."""
        if snapshot is not None:
            self._discover(snapshot)
        with self._lock:
            return self._targets.get(key) or self._removed.get(key)

    def _locate_on(self, cluster: str, key: AppEnv, snapshot: Snapshot | None) -> Target | None:
        """``_locate`` for the stages of ``cluster``: an environment that moved to another cluster at
        ``snapshot`` is not applied here; the retry goes to the stages of its new cluster."""
        target = self._locate(key, snapshot)
        if target is not None and target.cluster != cluster:
            raise TransientError(f"{key}: environment {key.env} is applied to cluster {target.cluster or 'home'} now")
        return target

    def _render(self, path: Path, key: AppEnv, revision: str, trees: Callable[[str], Path]) -> RenderedApp:
        """``Stages.render``: the namespaces the operator protects (agent.yaml) are refused; an app-env whose
        inputs did not change since its last render comes from the render cache."""
        return render_app(
            path,
            key.env,
            key.app,
            revision=revision or None,
            trees=trees,
            protected=self.config.protected_namespaces,
            cache=self._renders,
            environment=self._environments.get((path, key.env)),
        )

    def _ensure_namespace(self, target: Connected, namespace: str) -> None:
        """Create the environment's namespace once if it is missing: in its cluster (its objects live there) and
        in the home cluster (its status and history do)."""
        if not self.config.create_namespaces:
            return
        for name, cluster in {(target.name, target.cluster), (HOME, self._cluster)}:
            if (name, namespace) not in self._namespaces:
                ensure_namespace(cluster, namespace)
                self._namespaces.add((name, namespace))

    def _look_for_namespace(self, key: AppEnv) -> None:
        """After a failure worth retrying: the next reconcile of ``key`` checks its namespace again, as it may
        have been deleted (or be Terminating, which refuses every create until it is gone), so that once it is
        gone ``_ensure_namespace`` creates it anew instead of every retry failing on a namespace not found."""
        with self._lock:
            target = self._targets.get(key) or self._removed.get(key)
        if target is not None:
            for name in {target.cluster, HOME}:
                self._namespaces.discard((name, target.namespace))

    # -- readiness ---------------------------------------------------------------------------------------------

    def namespaces(self) -> frozenset[str]:
        """Where the app-envs of the configured environments live (their state included), as last discovered."""
        with self._lock:
            return frozenset(target.namespace for target in (*self._targets.values(), *self._removed.values()))

    def ready(self) -> tuple[bool, str]:
        if self._elector is not None and not self._elector.is_leader:
            holder = self._elector.holder or "nobody yet"
            return True, f"follower; leader is {holder}"
        with self._lock:
            keys = set(self._targets)
            waiting = keys - self._attempted
        if self._shards is not None:
            waiting = {key for key in waiting if self._shards.owns(key)}
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
            if self._shards is None:
                outcome, revision, delay = self._guarded(item)
            else:
                with self._shards.claim(item.key) as owned:
                    # Not held (any more): left to the shard's holder, which saw the same trigger.
                    outcome, revision, delay = self._guarded(item) if owned else (Outcome.DONE, item.revision, None)
            self.queue.done(item, outcome, revision=revision, retry_after=delay)

    def _cluster_of(self, key: AppEnv) -> str:
        with self._lock:
            target = self._targets.get(key) or self._removed.get(key)
        return target.cluster if target is not None else HOME

    def _guarded(self, item: WorkItem) -> tuple[Outcome, str, float | None]:
        try:
            with structlog.contextvars.bound_contextvars(app=item.key.app, env=item.key.env):
                cluster = self._cluster_of(item.key)
                try:
                    stages = self._stages_of(cluster)
                except GitsyncError as e:
                    self._unconnected(item, e)
                    return Outcome.TRANSIENT, item.revision, None
                log.debug("reconcile.started", app=item.key.app, env=item.key.env, cluster=cluster or "home")
                result = reconcile(
                    stages,
                    Request(
                        item.key,
                        item.revision,
                        item.reasons,
                        item.attempt,
                        watched=stages.live is None or item.key in self._watchers,
                    ),
                )
                self._after(result, stages)
                self._promote_next(result)
                if result.error_class is Retry.TRANSIENT:
                    self._look_for_namespace(item.key)
                return self._schedule(result, item)
        except GitsyncError as e:
            # Recording failed (API down, namespace gone or being deleted): retry the whole reconcile.
            log.warning("reconcile.failed", app=item.key.app, env=item.key.env, error=str(e), attempt=item.attempt)
            self._look_for_namespace(item.key)
            return Outcome.TRANSIENT, item.revision, getattr(e, "retry_after", None)
        except Exception as e:  # a bug in one reconcile must not kill the worker thread
            log.exception("reconcile.crashed", app=item.key.app, env=item.key.env, error=str(e))
            return Outcome.TRANSIENT, item.revision, None
        finally:
            with self._lock:
                self._attempted.add(item.key)

    def _unconnected(self, item: WorkItem, error: GitsyncError) -> None:
        """A cluster whose credentials cannot be read: the app-env's status (at home) says so; retried with
        backoff, as the Secret may appear later."""
        with self._lock:
            target = self._targets.get(item.key) or self._removed.get(item.key)
        now = self._clock.now()
        log.warning("cluster.unconnected", app=item.key.app, env=item.key.env, error=str(error))
        if target is not None:
            self._ensure_namespace(self._clusters.home, target.namespace)
        self._stages_of(HOME).recorder.record(
            ReconcileResult(
                item.key,
                Kind.FAILED,
                item.reasons,
                now,
                now,
                snapshot=self.source.current,
                target=target,
                outcome=Result.RETRYING,
                error=str(error),
                error_class=Retry.TRANSIENT,
            )
        )

    def _schedule(self, result: ReconcileResult, item: WorkItem) -> tuple[Outcome, str, float | None]:
        """What the queue does next with the key: the result's error class, or its requeue (ended early by the
        watch, or backed off, ``runtime.wakeups``)."""
        revision = result.revision or item.revision
        with self._lock:
            wakeups = self._wakeups.get(result.target.cluster if result.target is not None else HOME)
        wait = wakeups.requeue(result) if wakeups is not None else result.requeue_after
        if result.error_class is Retry.TERMINAL:
            return Outcome.TERMINAL, revision, None
        if result.error_class is Retry.TRANSIENT:
            return Outcome.TRANSIENT, revision, result.retry_after
        if result.requeue_after is not None:
            return Outcome.REQUEUE, revision, wait
        return Outcome.DONE, revision, None

    def _after(self, result: ReconcileResult, stages: Stages) -> None:
        """Keep the drift watchers in step: a removed app's watcher stops, a released app's starts once (its
        bodies are updated before each apply, ``_before_apply``)."""
        key = result.key
        if result.target is not None and result.target.removed:
            watcher = self._watchers.pop(key, None)
            if watcher is not None:
                watcher.stop()
            if result.kind is Kind.REMOVED:
                with self._lock:
                    self._removed.pop(key, None)
            return
        if stages.live is None or result.kind is not Kind.RELEASE or result.rendered is None or result.dry_run:
            return
        if key not in self._watchers:
            excluded = result.rollout.exclude if result.rollout is not None else frozenset()
            self._watch(key, [m for m in result.rendered.manifests if m.id not in excluded], stages)

    def _promote_next(self, result: ReconcileResult) -> None:
        """Promotion is scheduling too: a release that newly Succeeded wakes the environments that receive it
        (their promote stage soaks it and writes the pin), and a promotion or rollback commit written to the
        tracked branch is deployed at once, without waiting for a webhook or the poll."""
        before = result.previous
        healthy = result.health is not None and result.health.status is HealthStatus.HEALTHY
        succeeded = result.kind is Kind.RELEASE and result.outcome is Result.SUCCEEDED and healthy
        settled_before = before is not None and (before.result, before.health) == (
            Result.SUCCEEDED.value,
            HealthStatus.HEALTHY.value,
        )
        # A new commit with the same render wakes them too: its chart may be new content for them (a block only
        # prod renders), noted by the ledger sink just now, after they looked at this commit themselves.
        changed = before is None or (result.digest, result.revision) != (
            before.last_applied_digest,
            before.last_applied_revision,
        )
        if succeeded and (changed or not settled_before):
            with self._lock:
                receivers = [AppEnv(result.key.app, env) for env in self._downstream.get(result.key.env, ())]
                receivers = [key for key in receivers if key in self._targets]
            for key in receivers:
                self._enqueue(key, "", "promotion")
        step = result.promotion
        if step is not None and step.written and step.branch == self.config.repo.branch:
            self.enqueue_all(step.commit, reason="promotion")

    def _before_apply(self, key: AppEnv, manifests: Sequence[Manifest]) -> None:
        watcher = self._watchers.get(key)
        if watcher is not None:
            watcher.update(manifests)

    def _watch(self, key: AppEnv, manifests: list[Manifest], stages: Stages) -> None:
        """Start noticing drift of ``key``'s objects (after its first successful sync in this process)."""
        assert isinstance(stages.live, WatchCache)
        with self._lock:
            hub = self._drift_hubs.get(stages.live)
            if hub is None:
                hub = self._drift_hubs[stages.live] = DriftHub(stages.live)
        watcher = DriftWatcher(
            key,
            manifests,
            stages.cluster,
            hub,
            self._clock,
            on_drift=lambda drift: self._enqueue(drift.key, "", "drift"),
        )
        watcher.start()
        self._watchers[key] = watcher


def _no_targets(name: str, _kubeconfig: Path) -> Connected:
    """The ``connect`` of an agent composed without target clusters (tests, ``Agent`` used alone)."""
    raise TransientError(f"cluster {name}: this agent was composed without target clusters")
