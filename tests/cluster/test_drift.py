"""Drift on a real control plane: a `kubectl` edit of a field gitsync declares is reported within seconds (log,
metric, Kubernetes Event) and, with self-heal, reverted by the reconcile the report triggers (the one write path);
replicas an HPA owns are not drift."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gitsync import drift as drift_module
from gitsync.adapters.clock import SystemClock
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.cache import WatchCache
from gitsync.drift import Drift, DriftHub, DriftWatcher
from gitsync.history import History
from gitsync.model import LABEL_MANAGED_BY, MANAGER, AppEnv, Manifest, ObjectId
from gitsync.ports import Commit, Snapshot
from gitsync.reconcile import Request, Stages, reconcile
from gitsync.record import Recorder as NoRecord
from gitsync.result import Target

KUBECTL = Path(sys.executable).parent / "kubectl"
WITHIN = 60.0
"""Seconds a drift may take to be reported before a test gives up (it normally takes well under one; a loaded CI
machine can take several): a ceiling, far below the drift timer, never a wait in a passing run."""


class Recorder:
    """Stands in for the module's structlog logger: keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.events.append((level, event, fields))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.events if name == event]


@pytest.fixture
def cluster(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


@pytest.fixture
def cache(cluster: KubeCluster) -> Iterator[WatchCache]:
    cache = WatchCache(cluster, watch_timeout=30)
    yield cache
    cache.stop()


@pytest.fixture
def hub(cache: WatchCache) -> Iterator[DriftHub]:
    hub = DriftHub(cache)
    yield hub
    hub.stop()


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(drift_module, "log", recorder)
    return recorder


def kubectl(kubelab: Any, *args: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubelab.kubeconfig)}
    subprocess.run([str(KUBECTL), *args], check=True, capture_output=True, env=env, timeout=30)


def deployment(namespace: str, replicas: int | None = 2, name: str = "web") -> Manifest:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/web:1"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGER}},
        "spec": spec,
    }
    return Manifest(ObjectId.of(body), body)


def drift_gauge(key: AppEnv) -> float | None:
    return REGISTRY.get_sample_value("gitsync_drift_objects", {"app": key.app, "env": key.env})


def wait_for(what: str, check: Any, timeout: float = WITHIN) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def drift_events(cluster: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    return [e for e in cluster.list("", "Event", namespace).items if e.get("reason") == "DriftDetected"]


def start(
    key: AppEnv, manifests: list[Manifest], cluster: KubeCluster, hub: DriftHub, *, self_heal: bool
) -> tuple[DriftWatcher, queue.Queue[Drift]]:
    """A watcher whose drifts are queued for the test; with ``self_heal`` each is also handed to the reconcile
    line as the agent does (a ``drift`` trigger), which takes the edit back."""
    drifts: queue.Queue[Drift] = queue.Queue()
    heal = healer(key, manifests, cluster, hub.cache) if self_heal else None

    def on_drift(drift: Drift) -> None:
        drifts.put(drift)
        if heal is not None:
            heal()

    watcher = DriftWatcher(key, manifests, cluster, hub, SystemClock(), on_drift=on_drift)
    watcher.start()
    return watcher, drifts


def healer(key: AppEnv, manifests: list[Manifest], cluster: KubeCluster, cache: WatchCache) -> Any:
    """What the agent's worker does with a drift trigger: one reconcile of the key, self-heal on."""
    namespace = manifests[0].id.namespace
    rendered = SimpleNamespace(
        app_env=key,
        namespace=namespace,
        manifests=tuple(manifests),
        digest="sha256:test",
        values={},
        revision="r1",
        environment=SimpleNamespace(prune_allow_empty=False),
    )
    store = ConfigMapStateStore(cluster)
    history = History(store)
    stages = Stages(
        source=SimpleNamespace(resolve=lambda wanted="": Snapshot(Commit("r1", "a", "m", 0.0), Path()), tree=Path),
        locate=lambda _key, _snapshot: Target(namespace, prune=False, self_heal=True),
        cluster=cluster,
        store=store,
        clock=SystemClock(),
        status=history,
        recorder=NoRecord(()),
        live=cache,
        render=lambda *_: rendered,
    )
    return lambda: reconcile(stages, Request(key, reasons=("drift",)))


def test_a_kubectl_edit_is_reported_within_seconds(
    kubelab: Any, cluster: KubeCluster, hub: DriftHub, namespace: str, logged: Recorder
) -> None:
    key = AppEnv("web", f"report-{namespace[-6:]}")
    manifest = deployment(namespace)
    cluster.apply(manifest.body)
    watcher, drifts = start(key, [manifest], cluster, hub, self_heal=False)
    try:
        edited = time.monotonic()
        kubectl(kubelab, "-n", namespace, "scale", "deployment/web", "--replicas=5")
        drift = drifts.get(timeout=WITHIN)
        took = time.monotonic() - edited

        assert drift.id == manifest.id and not drift.missing
        assert drift.fields == (".spec.replicas",)
        assert drift.managers and drift.managers[0].startswith("kubectl")
        assert logged.named("drift.detected")[0] == {
            "app": "web",
            "env": key.env,
            "object": f"Deployment.apps/{namespace}/web",
            "fields": [".spec.replicas"],
            "managers": list(drift.managers),
            "missing": False,
        }
        assert drift_gauge(key) == 1.0
        assert REGISTRY.get_sample_value("gitsync_drift_detected_total", {"app": "web", "env": key.env}) == 1.0
        event = wait_for("a DriftDetected event", lambda: drift_events(cluster, namespace))[0]
        assert event["type"] == "Warning"
        assert event["involvedObject"]["name"] == "web" and event["involvedObject"]["kind"] == "Deployment"
        assert ".spec.replicas" in event["message"] and str(key) in event["message"]
        # Without self-heal the edit stays.
        time.sleep(1)
        assert (cluster.get(manifest.id) or {})["spec"]["replicas"] == 5
        print(f"drift reported {took:.2f}s after the edit")
    finally:
        watcher.stop()


def test_self_heal_through_the_reconcile_reverts_an_edit_and_a_deletion(
    kubelab: Any, cluster: KubeCluster, hub: DriftHub, namespace: str, logged: Recorder
) -> None:
    key = AppEnv("web", f"heal-{namespace[-6:]}")
    manifest = deployment(namespace)
    cluster.apply(manifest.body)
    watcher, drifts = start(key, [manifest], cluster, hub, self_heal=True)
    try:
        edited = time.monotonic()
        kubectl(kubelab, "-n", namespace, "patch", "deployment/web", "--type=merge", "-p", '{"spec":{"replicas":7}}')
        assert drifts.get(timeout=WITHIN).fields == (".spec.replicas",)
        wait_for("replicas back to 2", lambda: (cluster.get(manifest.id) or {})["spec"]["replicas"] == 2)
        took = time.monotonic() - edited
        wait_for("the drift gauge back to 0", lambda: drift_gauge(key) == 0.0)
        print(f"edit reverted {took:.2f}s after it was made")

        kubectl(kubelab, "-n", namespace, "delete", "deployment/web", "--wait=false")
        assert drifts.get(timeout=WITHIN).missing
        wait_for("the Deployment recreated", lambda: cluster.get(manifest.id))
    finally:
        watcher.stop()


def test_replicas_owned_by_an_hpa_are_not_drift(
    cluster: KubeCluster, hub: DriftHub, namespace: str, logged: Recorder
) -> None:
    key = AppEnv("web", f"hpa-{namespace[-6:]}")
    manifest = deployment(namespace, replicas=None)  # the HPA owns replicas, so the manifest leaves them out
    cluster.apply(manifest.body)
    watcher, drifts = start(key, [manifest], cluster, hub, self_heal=True)
    try:
        cluster.apply(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 3,
                    "maxReplicas": 5,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                        }
                    ],
                },
            }
        )
        # The HPA controller raises replicas to minReplicas through the scale subresource (sync period 15s).
        wait_for("the HPA to scale to 3", lambda: (cluster.get(manifest.id) or {})["spec"]["replicas"] == 3, timeout=60)
        wait_for(
            "the watcher to check the scaled object",
            lambda: any(f["object"] == str(manifest.id) for f in logged.named("drift.checked")),
        )
        assert [f["drifted"] for f in logged.named("drift.checked")] == [False] * len(logged.named("drift.checked"))
        assert drifts.empty()
        assert (cluster.get(manifest.id) or {})["spec"]["replicas"] == 3
    finally:
        watcher.stop()


def test_removing_a_declared_field_is_drift_too(
    kubelab: Any, cluster: KubeCluster, hub: DriftHub, namespace: str, logged: Recorder
) -> None:
    """An edit that only removes a field leaves no other manager behind; the dry-run still puts it back."""
    key = AppEnv("web", f"removal-{namespace[-6:]}")
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGER}},
        "data": {"color": "blue", "size": "L"},
    }
    manifest = Manifest(ObjectId.of(body), body)
    cluster.apply(body)
    watcher, drifts = start(key, [manifest], cluster, hub, self_heal=True)
    try:
        remove = '[{"op": "remove", "path": "/data/size"}]'
        kubectl(kubelab, "-n", namespace, "patch", "configmap/settings", "--type=json", "-p", remove)
        drift = drifts.get(timeout=WITHIN)
        assert drift.fields == (".data.size",) and drift.managers == ()
        wait_for("size restored", lambda: (cluster.get(manifest.id) or {})["data"] == {"color": "blue", "size": "L"})
    finally:
        watcher.stop()


def test_many_app_envs_share_one_drift_thread_and_an_edit_drifts_only_its_own(
    kubelab: Any, cluster: KubeCluster, hub: DriftHub, namespace: str, logged: Recorder
) -> None:
    """A platform's agent serves hundreds of app-envs: their drift checks run on the cluster's hub (one thread
    and a small checking pool), not on a thread each, and a change reaches only the app-env declaring it."""
    before = {t.name for t in threading.enumerate()}
    started = []
    for n in range(20):
        key = AppEnv(f"web{n}", f"many-{namespace[-6:]}")
        manifest = deployment(namespace, name=f"web{n}")
        cluster.apply(manifest.body)
        started.append(start(key, [manifest], cluster, hub, self_heal=False))
    try:
        kubectl(kubelab, "-n", namespace, "scale", "deployment/web7", "--replicas=4")
        drift = started[7][1].get(timeout=WITHIN)
        assert drift.key.app == "web7" and drift.fields == (".spec.replicas",)
        time.sleep(1)  # any misrouted check would have been made by now
        assert [n for n, (_, drifts) in enumerate(started) if not drifts.empty()] == []
        assert [w.key.app for w, _ in started if w.drifted] == ["web7"]
        new = {t.name for t in threading.enumerate()} - before
        assert {name for name in new if name.startswith("drift")} <= {"drift-checks"} | {
            f"drift-check_{i}" for i in range(DriftHub.CHECKERS)
        }
    finally:
        for watcher, _ in started:
            watcher.stop()
