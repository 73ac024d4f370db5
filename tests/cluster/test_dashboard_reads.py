"""The agent-served dashboard reads an app-env's page from the agent's watch cache: a page open during a rollout
(re-rendered every 0.25 s) costs the API server nothing, where the local ``gitsync dashboard`` asks it each time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from gitsync import inventory as inventories
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.cache import WatchCache
from gitsync.dashboard.read import Board
from gitsync.history import History, Status
from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, MANAGER, AppEnv, ObjectId
from gitsync.strategy.executor import PART as ROLLOUT_PART
from gitsync.strategy.layout import ANNOTATION_TEMPLATE_HASH
from gitsync.strategy.state import RolloutState

KEY = AppEnv("web", "staging")


def deployment(namespace: str, name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_APP: KEY.app, LABEL_ENV: KEY.env, LABEL_MANAGED_BY: MANAGER},
            "annotations": {ANNOTATION_TEMPLATE_HASH: "abc"},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
        },
    }


@pytest.fixture
def rolling(kubelab: Any, namespace: str) -> str:
    """An app-env in the middle of a canary: its status, rollout state, inventory and two Deployments."""
    writer = KubeCluster(kubelab.kubeconfig)
    store = ConfigMapStateStore(writer)
    History(store).set_status(KEY, namespace, lambda _: Status(KEY.app, KEY.env, result="Progressing"))
    state = RolloutState.from_json({"phase": "Progressing", "step": 1, "weight": 25, "revision": "a" * 40})
    store.save(KEY, namespace, ROLLOUT_PART, {"state": state.to_json()}, "")
    stable, canary = deployment(namespace, "web"), deployment(namespace, "web-canary")
    for body in (stable, canary):
        writer.apply(body)
    inventories.save(
        store, KEY, namespace, inventories.Inventory(frozenset({ObjectId.of(stable)})), inventories.Inventory()
    )
    return namespace


@pytest.fixture
def cached(kubelab: Any) -> Iterator[tuple[KubeCluster, WatchCache]]:
    cluster = KubeCluster(kubelab.kubeconfig)
    cache = WatchCache(cluster, watch_timeout=30)
    yield cluster, cache
    cache.stop()


def test_an_open_app_env_page_reads_the_agents_watch_cache_not_the_api_server(
    rolling: str, cached: tuple[KubeCluster, WatchCache], kubelab: Any
) -> None:
    cluster, cache = cached
    board = Board(cluster, cache=cache)
    first = board.live(KEY, rolling, "repo")
    assert first.phase == "Progressing" and (first.stable_replicas, first.canary_replicas) == (0, 0)
    assert [o.ref for o in board.objects(KEY, rolling)] == [f"Deployment.apps/{rolling}/web"]
    warm = cluster.requests
    for _ in range(8):  # two seconds of an open page
        board.live(KEY, rolling, "repo")
        board.status(KEY, rolling)
        board.objects(KEY, rolling)
        time.sleep(0.25)
    assert cluster.requests == warm, "the page was served from the watch cache"

    local = KubeCluster(kubelab.kubeconfig)  # `gitsync dashboard`: the person's own kubeconfig, no cache
    Board(local).live(KEY, rolling, "repo")
    assert sum(local.requests.values()) > 0


def test_the_open_grid_reads_the_agents_watch_cache_and_sees_a_new_status(
    rolling: str, cached: tuple[KubeCluster, WatchCache], kubelab: Any
) -> None:
    cluster, cache = cached
    board = Board(cluster, cache=cache, scope=lambda: [rolling])
    assert board.grid().cells[KEY].result == "Progressing"
    warm = cluster.requests
    for _ in range(4):  # the grid page polls every two seconds
        board.grid()
    assert cluster.requests == warm, "the grid was served from the watch cache"

    writer = KubeCluster(kubelab.kubeconfig)
    History(ConfigMapStateStore(writer)).set_status(
        KEY, rolling, lambda s: Status(KEY.app, KEY.env, result="Succeeded")
    )

    deadline = time.monotonic() + 60
    while board.grid().cells[KEY].result != "Succeeded":
        assert time.monotonic() < deadline, "the grid never showed the new status"
        time.sleep(0.1)
