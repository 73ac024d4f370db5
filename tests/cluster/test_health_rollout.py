"""Health on a real control plane (kwok runs the pods): a rollout goes Progressing then Healthy, and a release
whose pods crash-loop is Degraded within seconds, long before its progress deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gitsync.adapters.kube import KubeCluster
from gitsync.cache import WatchCache
from gitsync.health import Health, assess, assess_workload
from gitsync.model import LABEL_MANAGED_BY, MANAGER, HealthStatus, ObjectId


@pytest.fixture
def cluster(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


@pytest.fixture
def cache(cluster: KubeCluster) -> Iterator[WatchCache]:
    cache = WatchCache(cluster, watch_timeout=30)
    yield cache
    cache.stop()


def deployment(namespace: str, *, replicas: int = 2, fault: str = "", image: str = "web:1") -> dict[str, Any]:
    pod_labels = {"app": "web", **({"gitsync.dev/fault": fault} if fault else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGER}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": f"registry.example/{image}"}]},
            },
        },
    }


def watch_health(assess_now: Callable[[], Health], until: HealthStatus, timeout: float) -> tuple[list[Health], float]:
    """Health readings (deduplicated) until ``until`` is seen, and the seconds it took."""
    started = time.monotonic()
    seen: list[Health] = []
    while time.monotonic() - started < timeout:
        health = assess_now()
        if not seen or seen[-1] != health:
            seen.append(health)
        if health.status is until:
            return seen, time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"no {until} within {timeout}s; saw {seen}")


def test_a_rollout_goes_progressing_then_healthy(cluster: KubeCluster, namespace: str) -> None:
    ref = ObjectId("apps", "Deployment", namespace, "web")
    written = cluster.apply(deployment(namespace))  # as written: the controller has not seen it yet

    assert assess(written) == Health(
        HealthStatus.PROGRESSING, "waiting for the controller to observe the new generation"
    )
    seen, took = watch_health(lambda: assess(cluster.get(ref)), HealthStatus.HEALTHY, timeout=60)
    assert seen[-1] == Health(HealthStatus.HEALTHY)
    assert all(h.status in (HealthStatus.PROGRESSING, HealthStatus.HEALTHY) for h in seen), seen
    print(f"Deployment Healthy {took:.2f}s after the apply; readings: {[h.reason or h.status for h in seen]}")


def test_a_crash_looping_release_is_degraded_long_before_its_deadline(
    cluster: KubeCluster, cache: WatchCache, namespace: str
) -> None:
    ref = ObjectId("apps", "Deployment", namespace, "web")

    def now() -> Health:
        replica_sets = cache.objects("apps", "ReplicaSet", namespace, all_objects=True)
        return assess_workload(cache.get(ref), cache.pods(namespace), replica_sets)

    cluster.apply(deployment(namespace))
    watch_health(now, HealthStatus.HEALTHY, timeout=60)

    cluster.apply(deployment(namespace, fault="crashloop", image="web:2"))
    # Within the 60 s ceiling, ten times shorter than the Deployment's 600 s deadline.
    seen, took = watch_health(now, HealthStatus.DEGRADED, timeout=60)
    degraded = seen[-1]
    assert "CrashLoopBackOff" in degraded.reason
    assert "container app" in degraded.reason
    assert "restarts 3" in degraded.reason
    assert degraded.reason.startswith(f"Pod/{namespace}/web-")
    # The Deployment alone would only say Progressing until its 600 s deadline.
    assert assess(cache.get(ref)).status is HealthStatus.PROGRESSING
    print(f"crash-looping release Degraded after {took:.2f}s (deadline 600s)")


def test_a_fix_replacing_a_crash_looping_release_is_not_degraded(
    cluster: KubeCluster, cache: WatchCache, namespace: str
) -> None:
    ref = ObjectId("apps", "Deployment", namespace, "web")

    def now() -> Health:
        replica_sets = cache.objects("apps", "ReplicaSet", namespace, all_objects=True)
        return assess_workload(cache.get(ref), cache.pods(namespace), replica_sets)

    cluster.apply(deployment(namespace, fault="crashloop"))
    watch_health(now, HealthStatus.DEGRADED, timeout=30)
    generation = cluster.apply(deployment(namespace, image="web:2"))["metadata"]["generation"]
    deadline = time.monotonic() + 60
    while (cache.get(ref) or {})["metadata"]["generation"] != generation:  # readings from here on are of the fix
        assert time.monotonic() < deadline, "the cache did not see the fix within 60s"
        time.sleep(0.01)
    seen, _ = watch_health(now, HealthStatus.HEALTHY, timeout=60)
    assert all(h.status is not HealthStatus.DEGRADED for h in seen), seen
