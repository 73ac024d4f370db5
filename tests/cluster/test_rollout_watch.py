"""Rollouts and health read from the watch cache, as the agent runs them: each new pod started once, Ready capacity
never below the replicas, health from the cache equal to health from GETs, a waiting reconcile that costs a
handful of requests however many objects the app has, and a Job its TTL removed that costs none per reconcile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gitsync.adapters.clock import SystemClock
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.cache import Change, WatchCache
from gitsync.events import EventSink
from gitsync.health import Listed, read_health
from gitsync.history import History, Result
from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, MANAGER, HealthStatus, Json, Manifest, ObjectId
from gitsync.ports import Commit, Snapshot
from gitsync.reconcile import Request, Stages, reconcile
from gitsync.record import Recorder, default_sinks
from gitsync.result import Kind, Target
from gitsync.strategy import control
from gitsync.strategy.executor import StepOutcome, advance
from gitsync.strategy.state import CommandName, Phase
from tests.cluster.test_rollout import KEY, REPLICAS, app, deployment, ready, service

STEPS = {
    "strategy": "canary",
    "canary": {"steps": [{"setWeight": 25}, {"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 75}]},
}


@pytest.fixture
def cluster(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


@pytest.fixture
def cache(cluster: KubeCluster) -> Iterator[WatchCache]:
    cache = WatchCache(cluster, watch_timeout=30)
    cluster.on_write(cache.wrote)
    yield cache
    cache.stop()


class PodLedger:
    """The new version's pods ever created, from the watch (a pod started twice would show up as two)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.created: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        if change.id.kind != "Pod":
            return
        labels = (change.object.get("metadata") or {}).get("labels") or {}
        with self._lock:
            if labels.get("version") == self.version:
                self.created.add(change.id.name)


class Capacity:
    """The fewest Ready pods, not terminating, in any of the namespace's pod lists taken every 20 ms while it runs.
    Each list is one consistent snapshot of the cluster; watch events of pods and of Deployments arrive on separate
    streams, so counting from events can see a pod go before seeing another become Ready when both happened in the
    other order."""

    def __init__(self, cluster: KubeCluster, namespace: str) -> None:
        self._cluster, self._namespace = cluster, namespace
        self.fewest: int | None = None
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Capacity:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            count = sum(1 for pod in live_pods(self._cluster, self._namespace) if ready(pod))
            self.fewest = count if self.fewest is None else min(self.fewest, count)
            self.looks += 1


def drive(
    target: Any, cluster: KubeCluster, store: ConfigMapStateStore, cache: WatchCache, until: Phase
) -> list[StepOutcome]:
    """Step as the agent does, reading through the cache; a step waiting on the cluster is re-run when the watch
    shows a change (here: at the next 50 ms look), a timed wait when its time is up."""
    outcomes: list[StepOutcome] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        out = advance(target, cluster, store, SystemClock(), reader=cache)
        outcomes.append(out)
        if out.phase is until:
            return outcomes
        time.sleep(0.05 if out.on_change else min(out.requeue_after or 0.05, 0.5))
    raise AssertionError(f"rollout stuck: {outcomes[-1]}")


def test_a_canary_starts_each_new_pod_once_and_never_drops_below_its_replicas(
    cluster: KubeCluster, cache: WatchCache, namespace: str
) -> None:
    store = ConfigMapStateStore(cluster, live=cache)
    cluster.apply(service(namespace, "web"))
    v1 = app(namespace, "v1", STEPS)
    drive(v1, cluster, store, cache, Phase.HEALTHY)  # a first deployment is Healthy at once: wait for its pods
    deadline = time.monotonic() + 30
    while sum(1 for pod in live_pods(cluster, namespace) if ready(pod)) < REPLICAS:
        assert time.monotonic() < deadline, "v1's pods never became Ready"
        time.sleep(0.1)
    cache.pods(namespace)
    ledger = PodLedger("v2")
    unsubscribe = cache.subscribe(ledger)
    try:
        with Capacity(cluster, namespace) as capacity:
            outcomes = drive(app(namespace, "v2", STEPS), cluster, store, cache, Phase.HEALTHY)
            deadline = time.monotonic() + 30
            while {pod["metadata"]["labels"]["version"] for pod in live_pods(cluster, namespace)} != {"v2"}:
                assert time.monotonic() < deadline, "old pods never went"
                time.sleep(0.1)
    finally:
        unsubscribe()
    assert outcomes[-1].message == "rollout completed"
    assert len(ledger.created) == REPLICAS, f"new-version pods created: {sorted(ledger.created)}"
    assert capacity.looks > 10 and capacity.fewest is not None and capacity.fewest >= REPLICAS, capacity.fewest
    web = cluster.get(ObjectId("apps", "Deployment", namespace, "web"))
    assert web is not None and not web["spec"].get("paused")
    assert web["spec"]["template"]["metadata"]["labels"]["version"] == "v2"
    assert cluster.get(ObjectId("apps", "Deployment", namespace, "web-canary")) is None
    # The stable Deployment owns the pods the canary started, as a Deployment of its own: one ReplicaSet.
    sets = [rs for rs in cluster.list("apps", "ReplicaSet", namespace).items if rs["spec"].get("replicas")]
    assert [rs["metadata"]["ownerReferences"][0]["name"] for rs in sets] == ["web"]
    assert {pod["metadata"]["name"] for pod in live_pods(cluster, namespace)} == ledger.created
    assert all(name.startswith("web-") and not name.startswith("web-canary") for name in ledger.created)


HALF_AND_WAIT = {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}


def test_a_superseded_or_aborted_canary_serves_until_the_stable_is_back(
    cluster: KubeCluster, cache: WatchCache, namespace: str
) -> None:
    """A new revision mid-canary and a human's abort take a healthy canary's pods away only once the stable's
    replacements are Ready (they went in the same step: half the Ready pods, until the stable's new ones were up)."""
    store = ConfigMapStateStore(cluster, live=cache)
    drive(app(namespace, "v1", HALF_AND_WAIT), cluster, store, cache, Phase.HEALTHY)
    deadline = time.monotonic() + 30
    while sum(1 for pod in live_pods(cluster, namespace) if ready(pod)) < REPLICAS:
        assert time.monotonic() < deadline, "v1's pods never became Ready"
        time.sleep(0.1)
    drive(app(namespace, "v2", HALF_AND_WAIT), cluster, store, cache, Phase.PAUSED)
    v3 = app(namespace, "v3", HALF_AND_WAIT)
    with Capacity(cluster, namespace) as capacity:
        drive(v3, cluster, store, cache, Phase.PAUSED)  # v2 superseded, v3 at 50%
        control.request(store, KEY, namespace, CommandName.ABORT, time.time(), "test")
        drive(v3, cluster, store, cache, Phase.ABORTED)
        deadline = time.monotonic() + 30
        while {pod["metadata"]["labels"]["version"] for pod in live_pods(cluster, namespace)} != {"v1"}:
            assert time.monotonic() < deadline, "the canary's pods never went"
            advance(v3, cluster, store, SystemClock(), reader=cache)
            time.sleep(0.05)
    assert capacity.looks > 10 and capacity.fewest is not None and capacity.fewest >= REPLICAS, capacity.fewest


def test_a_step_waiting_for_pods_ends_on_the_watch_not_a_poll(
    cluster: KubeCluster, cache: WatchCache, namespace: str
) -> None:
    """The step that scaled the canary says it waits for the cluster (``on_change``); the Deployment's watch event
    reports the pod Ready, and the very next step after it completes the weight."""
    store = ConfigMapStateStore(cluster, live=cache)
    drive(app(namespace, "v1", STEPS), cluster, store, cache, Phase.HEALTHY)
    target = app(namespace, "v2", STEPS)
    ready_seen = threading.Event()
    canary = ObjectId("apps", "Deployment", namespace, "web-canary")

    def on_change(change: Change) -> None:
        if change.id == canary and int((change.object.get("status") or {}).get("readyReplicas") or 0) >= 1:
            ready_seen.set()

    unsubscribe = cache.subscribe(on_change)
    try:
        first = advance(target, cluster, store, SystemClock(), reader=cache)
        assert first.on_change and first.requeue_after is not None
        assert any("web-canary replicas=1" in action for action in first.actions)
        # The watch tells (the agent's wakeups subscribe to the same changes); how soon depends on the machine,
        # so the ceiling is 60 s rather than the step's fallback timer, which a loaded CI machine can outlast.
        assert ready_seen.wait(60), "the watch never reported the canary Ready"
    finally:
        unsubscribe()
    second = advance(target, cluster, store, SystemClock(), reader=cache)
    assert any("scale" in action and "web replicas=3" in action for action in second.actions), second


def test_health_from_the_watch_cache_equals_health_from_gets(
    cluster: KubeCluster, cache: WatchCache, namespace: str
) -> None:
    good = deployment(namespace, "v1")
    bad = deployment(namespace, "v1", fault="crashloop")
    bad["metadata"]["name"] = "crashing"
    bad["spec"]["selector"]["matchLabels"] = {"app": "crashing"}
    bad["spec"]["template"]["metadata"]["labels"]["app"] = "crashing"
    refs = [ObjectId.of(good), ObjectId.of(bad), ObjectId("", "Service", namespace, "missing")]
    cache.pods(namespace)
    cache.replica_sets(namespace)
    seen: list[tuple[HealthStatus, HealthStatus]] = []
    cluster.apply(good)
    cluster.apply(bad)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        settled = _quiet(cache, cluster, namespace)
        cached = read_health(refs, namespace, cache)
        direct = read_health(refs, namespace, Listed(cluster))
        if settled:
            assert cached == direct
            seen.append((cached.status, direct.status))
            if "CrashLoopBackOff" in cached.reason or cached.status is HealthStatus.DEGRADED:
                break
        time.sleep(0.1)
    assert seen and seen[-1] == (HealthStatus.DEGRADED, HealthStatus.DEGRADED)
    # One workload alone, healthy once Ready, read both ways.
    only = [ObjectId.of(good)]
    while read_health(only, namespace, Listed(cluster)).status is not HealthStatus.HEALTHY:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _quiet(cache, cluster, namespace, wait=5)
    assert read_health(only, namespace, cache) == read_health(only, namespace, Listed(cluster))


def _quiet(cache: WatchCache, cluster: KubeCluster, namespace: str, wait: float = 0.0) -> bool:
    """Whether the cache holds what the API server has now (same resourceVersions of Deployments, Pods and
    ReplicaSets); with ``wait``, until it does."""
    deadline = time.monotonic() + wait
    while True:
        same = True
        for group, kind, held in (
            ("apps", "Deployment", None),
            ("", "Pod", cache.pods(namespace)),
            ("apps", "ReplicaSet", cache.replica_sets(namespace)),
        ):
            live = {
                o["metadata"]["name"]: o["metadata"]["resourceVersion"]
                for o in cluster.list(group, kind, namespace).items
            }
            if held is None:
                held = [cache.get(ObjectId(group, kind, namespace, name)) or {} for name in live]
            mine = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in held if o}
            same = same and mine == live
        if same or time.monotonic() >= deadline:
            return same
        time.sleep(0.05)


def live_pods(cluster: KubeCluster, namespace: str) -> list[Json]:
    items = cluster.list("", "Pod", namespace).items
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_a_waiting_reconcile_of_many_workloads_costs_a_handful_of_requests(
    cluster: KubeCluster, cache: WatchCache, namespace: str
) -> None:
    """30 Deployments whose pods never become Ready (and 30 ConfigMaps): the release stays Progressing, and the
    reconciles that wait on it read everything from the cache; their requests do not grow with the objects."""
    key = KEY
    manifests: list[Manifest] = []
    for n in range(30):
        body = deployment(namespace, "v1", replicas=1, fault="never-ready")
        body["metadata"]["name"] = f"web-{n}"
        body["spec"]["selector"]["matchLabels"] = {"app": f"web-{n}"}
        body["spec"]["template"]["metadata"]["labels"]["app"] = f"web-{n}"
        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"config-{n}", "namespace": namespace, "labels": dict(body["metadata"]["labels"])},
            "data": {"n": str(n)},
        }
        manifests += [Manifest(ObjectId.of(body), body, "test"), Manifest(ObjectId.of(config), config, "test")]
    stages = agent_stages(cluster, cache, namespace, manifests)
    first = reconcile(stages, Request(key, "r1", ("poll",)))
    assert first.outcome is Result.PROGRESSING, first.error
    waiting = []
    for _ in range(3):
        time.sleep(0.5)
        before = sum(cluster.requests.values())
        result = reconcile(stages, Request(key, "r1", ("requeue",)))
        waiting.append(sum(cluster.requests.values()) - before)
        assert result.outcome is Result.PROGRESSING and result.health is not None
        assert result.health.status is HealthStatus.PROGRESSING
    before = sum(cluster.requests.values())
    drift = reconcile(stages, Request(key, "r1", ("drift",)))  # the drift timer's reconcile: a full one
    drift_requests = sum(cluster.requests.values()) - before
    assert drift.kind is Kind.RELEASE and drift.sync is not None and not drift.sync.plan.has_changes
    print(f"\nrequests per waiting reconcile of 60 objects: {waiting}; per drift-timer reconcile: {drift_requests}")
    assert max(waiting) <= 10, waiting
    assert drift_requests <= 10


def agent_stages(cluster: KubeCluster, cache: WatchCache, namespace: str, manifests: list[Manifest]) -> Stages:
    """The stages as the agent composes them (every read through the watch cache) for app ``KEY`` rendering
    ``manifests`` at revision r1."""
    rendered = SimpleNamespace(
        app_env=KEY,
        namespace=namespace,
        manifests=tuple(manifests),
        digest="sha256:many",
        values={},
        revision="r1",
        environment=SimpleNamespace(prune_allow_empty=False),
    )
    store = ConfigMapStateStore(cluster, live=cache)
    history = History(store)
    return Stages(
        source=SimpleNamespace(resolve=lambda wanted="": Snapshot(Commit("r1", "a", "m", 0.0), Path()), tree=Path),
        locate=lambda _key, _snapshot: Target(namespace, prune=True, self_heal=True),
        cluster=cluster,
        store=store,
        clock=SystemClock(),
        status=history,
        recorder=Recorder(default_sinks(history, EventSink(cluster, SystemClock()))),
        live=cache,
        workloads=cache,
        render=lambda *_: rendered,
    )


def test_drift_timer_reconciles_ask_nothing_about_a_job_its_ttl_removed(
    cluster: KubeCluster, cache: WatchCache, namespace: str, kubelab: Any
) -> None:
    """ingress-nginx's admission Jobs (ttlSecondsAfterFinished) are gone once they ran: the drift timer's reconciles
    and their health reads must not ask the API server about them each time; a Job created again is seen."""
    labels = {"app": "web", LABEL_MANAGED_BY: MANAGER, LABEL_APP: KEY.app, LABEL_ENV: KEY.env}  # as rendered
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "admission-create", "namespace": namespace, "labels": labels},
        "spec": {
            "ttlSecondsAfterFinished": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "setup:1"}]}},
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web", "namespace": namespace, "labels": labels},
    }
    manifests = [Manifest(ObjectId.of(body), body, "test") for body in (job, config)]
    ref = manifests[0].id
    stages = agent_stages(cluster, cache, namespace, manifests)
    first = reconcile(stages, Request(KEY, "r1", ("poll",)))
    assert first.kind is Kind.RELEASE and not first.error, first.error
    writer = KubeCluster(kubelab.kubeconfig)  # another client: the TTL controller, another gitsync
    writer.delete(ref, propagation="Foreground")  # as the TTL controller does once the Job finished
    deadline = time.monotonic() + 30
    while cache.objects("batch", "Job", namespace) or writer.get(ref) is not None:
        assert time.monotonic() < deadline, "the Job is still there"
        time.sleep(0.1)

    per_drift, gets = [], []
    for _ in range(4):
        before = cluster.requests
        drift = reconcile(stages, Request(KEY, "r1", ("drift",)))  # the drift timer's reconcile: a full one
        after = cluster.requests
        assert drift.sync is not None and not drift.sync.plan.has_changes, drift
        assert drift.health is not None and drift.health.status is HealthStatus.HEALTHY, drift.health
        per_drift.append(sum(after.values()) - sum(before.values()))
        gets.append(after.get("get", 0) - before.get("get", 0))
    print(f"\nrequests per drift-timer reconcile with a TTL'd Job gone: {per_drift} (GETs {gets})")
    assert sum(gets[1:]) == 0, gets  # at most the first asks once whether it is gone or only unlabelled
    assert max(per_drift[1:]) == 0, per_drift

    writer.apply(job)  # created again by another gitsync process (`gitsync sync` from a laptop): the watch tells
    deadline = time.monotonic() + 30
    while cache.get(ref) is None:
        assert time.monotonic() < deadline, "the cache still says the re-created Job is absent"
        time.sleep(0.05)
