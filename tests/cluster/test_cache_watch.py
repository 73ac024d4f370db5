"""The watch-fed cache against a real API server: changes arrive within seconds, reads cost no request, and a
no-op plan over a warm cache makes no API call at all."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.cache import Change, WatchCache
from gitsync.memo import DryRunMemo
from gitsync.model import LABEL_MANAGED_BY, MANAGER, AppEnv, Manifest, ObjectId, SyncAction
from gitsync.plan import PlanAction, plan
from gitsync.ports import WatchEventType
from gitsync.sync import sync_app

WITHIN = 60.0
"""Seconds a change may take to reach the cache before a test gives up (it normally takes a few milliseconds; a
loaded CI machine can take seconds)."""


@pytest.fixture
def writer(kubelab: Any) -> KubeCluster:
    """Changes are made through their own client, so the cache's request counter sees only the cache's calls."""
    return KubeCluster(kubelab.kubeconfig)


@pytest.fixture
def reader(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


@pytest.fixture
def cache(reader: KubeCluster) -> Iterator[WatchCache]:
    cache = WatchCache(reader, watch_timeout=30)
    yield cache
    cache.stop()


def configmap(namespace: str, name: str, managed: bool = True, **data: str) -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: MANAGER} if managed else {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    }


def next_change(changes: queue.Queue[Change], name: str) -> Change:
    """The next change of object ``name`` (others, such as the namespace's root CA ConfigMap, are skipped)."""
    while True:
        change = changes.get(timeout=WITHIN)
        if change.id.name == name:
            return change


def test_watch_delivers_creates_updates_and_deletes_without_reads(
    cache: WatchCache, reader: KubeCluster, writer: KubeCluster, namespace: str
) -> None:
    assert cache.ensure("", "ConfigMap", namespace)
    changes: queue.Queue[Change] = queue.Queue()
    cache.subscribe(changes.put)
    ref = ObjectId("", "ConfigMap", namespace, "settings")
    before = reader.requests

    writer.apply(configmap(namespace, "settings", color="blue"))
    added = next_change(changes, "settings")
    assert (added.type, added.id) == (WatchEventType.ADDED, ref)
    assert (cache.get(ref) or {})["data"] == {"color": "blue"}

    writer.apply(configmap(namespace, "settings", color="green"))
    modified = next_change(changes, "settings")
    assert modified.type is WatchEventType.MODIFIED
    assert (cache.get(ref) or {})["data"] == {"color": "green"}

    writer.delete(ref)
    assert next_change(changes, "settings").type is WatchEventType.DELETED
    assert cache.objects("", "ConfigMap", namespace) == []

    after = reader.requests
    for verb in ("get", "list", "dry-run", "apply"):
        assert after.get(verb, 0) == before.get(verb, 0), f"the cache made a {verb} request: {before} -> {after}"


def test_unlabelled_objects_are_not_cached_but_still_read_correctly(
    cache: WatchCache, reader: KubeCluster, writer: KubeCluster, namespace: str
) -> None:
    writer.apply(configmap(namespace, "foreign", managed=False, owner="someone"))
    ref = ObjectId("", "ConfigMap", namespace, "foreign")
    assert cache.ensure("", "ConfigMap", namespace)
    assert cache.objects("", "ConfigMap", namespace) == []
    assert (cache.get(ref) or {})["data"] == {"owner": "someone"}  # one fallback GET, never a wrong "missing"
    assert reader.requests.get("get", 0) == 1


def test_pods_are_tracked_without_the_ownership_label(cache: WatchCache, writer: KubeCluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lonely", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "registry.example/c:1"}]},
    }
    assert cache.pods(namespace) == []
    changes: queue.Queue[Change] = queue.Queue()
    cache.subscribe(changes.put)
    writer.apply(pod)
    next_change(changes, "lonely")
    assert [p["metadata"]["name"] for p in cache.pods(namespace)] == ["lonely"]


def test_noop_plan_with_a_warm_cache_makes_no_request(cache: WatchCache, reader: KubeCluster, namespace: str) -> None:
    bodies = [configmap(namespace, f"cm-{i}", n=str(i)) for i in range(20)]
    manifests = [Manifest(ObjectId.of(b), b) for b in bodies]
    for body in bodies:
        reader.apply(body)
    memo = DryRunMemo()

    first = plan(manifests, reader, live=cache, memo=memo)
    assert {c.action for c in first.changes} == {PlanAction.UNCHANGED}
    warm = reader.requests

    second = plan(manifests, reader, live=cache, memo=memo)
    assert {c.action for c in second.changes} == {PlanAction.UNCHANGED}
    spent = {verb: n - warm.get(verb, 0) for verb, n in reader.requests.items() if n != warm.get(verb, 0)}
    assert spent == {} or set(spent) == {"watch"}, f"a no-op plan made requests: {spent}"


@dataclass(frozen=True)
class Rendered:
    """The parts of ``renderers.RenderedApp`` a sync reads."""

    app_env: AppEnv
    namespace: str
    manifests: tuple[Manifest, ...]
    digest: str = "sha256:test"
    revision: str | None = "abc123"
    environment: Any = field(default_factory=lambda: SimpleNamespace(prune_allow_empty=False))


def test_noop_sync_with_a_warm_cache_makes_at_most_one_request(
    cache: WatchCache, reader: KubeCluster, namespace: str
) -> None:
    bodies = [configmap(namespace, f"cm-{i}", n=str(i)) for i in range(20)]
    rendered = Rendered(AppEnv("shop", "test"), namespace, tuple(Manifest(ObjectId.of(b), b) for b in bodies))
    store = ConfigMapStateStore(reader)
    memo = DryRunMemo()
    first = sync_app(rendered, reader, store, prune=True, dry_run=False, live=cache, memo=memo)
    assert first.ok and first.counts()[SyncAction.CREATED] == 20
    # Let the cache see what the first sync wrote, then reconcile the same revision again.
    wait = time.monotonic() + WITHIN
    while len(cache.objects("", "ConfigMap", namespace)) < 21:  # 20 objects and the inventory
        assert time.monotonic() < wait, "the cache did not see the first sync's objects"
        time.sleep(0.05)
    warm = reader.requests

    again = sync_app(rendered, reader, store, prune=True, dry_run=False, live=cache, memo=memo)
    assert again.ok and again.counts()[SyncAction.UNCHANGED] == 20
    spent = {verb: n - warm.get(verb, 0) for verb, n in reader.requests.items() if n != warm.get(verb, 0)}
    spent.pop("watch", None)
    assert sum(spent.values()) <= 1, f"a no-op sync made requests: {spent}"
    print(f"no-op sync of 20 objects with a warm cache: {spent or 'no'} requests")
