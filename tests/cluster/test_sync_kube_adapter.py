"""The Kubernetes adapter against a real kube-apiserver: dict in, dict out, errors a user can act on."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from relay import Relay
from widgets import widget_crd

from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.errors import (
    FieldConflictError,
    InvalidObjectError,
    NotFoundError,
    StaleError,
    TerminalError,
    TransientError,
    UnreachableError,
    WatchExpired,
)
from gitsync.model import AppEnv, ObjectId
from gitsync.ports import WatchEventType

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


def configmap(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data}


def deployment(namespace: str, name: str, app: str = "web", replicas: int | None = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": app}},
        "template": {
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "registry.example/web:1"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_apply_get_list_delete(cluster: KubeCluster, namespace: str) -> None:
    body = configmap(namespace, "settings", color="blue")
    ref = ObjectId.of(body)

    dry = cluster.apply(body, dry_run=True)
    assert dry["data"] == {"color": "blue"}
    assert cluster.get(ref) is None, "a dry-run must not create the object"

    live = cluster.apply(body)
    assert cluster.get(ref) == live
    managers = [m["manager"] for m in live["metadata"]["managedFields"]]
    assert managers == ["gitsync"]

    listed = cluster.list("", "ConfigMap", namespace)
    assert ref in {ObjectId.of(item) for item in listed.items}, "list items carry apiVersion and kind"
    assert listed.resource_version

    assert cluster.delete(ref) is True
    assert cluster.delete(ref) is False
    assert cluster.requests["dry-run"] == 1
    assert cluster.requests["apply"] == 1


def test_watch_reports_changes_after_list_and_tracks_bookmarks(cluster: KubeCluster, namespace: str) -> None:
    cluster.apply(configmap(namespace, "a", v="1"))
    listed = cluster.list("", "ConfigMap", namespace)
    seen: list[tuple[WatchEventType, str]] = []

    def consume() -> None:
        # From the list's resourceVersion: the changes come however late this thread starts watching. A 60 s watch
        # (not 3 s) that a loaded machine cannot outlast before the two changes are made; left at the deletion.
        for event in cluster.watch(
            "", "ConfigMap", namespace, resource_version=listed.resource_version, timeout_seconds=60
        ):
            # Only "a": the controller-manager may publish the namespace's kube-root-ca.crt at any moment.
            if event.type is not WatchEventType.BOOKMARK and event.object["metadata"]["name"] == "a":
                seen.append((event.type, event.object["metadata"]["name"]))
                if event.type is WatchEventType.DELETED:
                    return

    thread = threading.Thread(target=consume)
    thread.start()
    cluster.apply(configmap(namespace, "a", v="2"))
    cluster.delete(ObjectId("", "ConfigMap", namespace, "a"))
    thread.join(timeout=60)
    assert seen == [(WatchEventType.MODIFIED, "a"), (WatchEventType.DELETED, "a")]


def test_watch_from_an_expired_version_raises_watch_expired(cluster: KubeCluster, namespace: str) -> None:
    for i in range(3):
        cluster.apply(configmap(namespace, f"c{i}"))
    with pytest.raises(WatchExpired):
        next(iter(cluster.watch("", "ConfigMap", namespace, resource_version="1", timeout_seconds=2)))


def test_conflict_names_fields_and_manager_and_force_takes_over(cluster: KubeCluster, namespace: str) -> None:
    cluster.apply(deployment(namespace, "web"))
    other = {**deployment(namespace, "web"), "spec": {"replicas": 3}}
    cluster._request(  # another field manager (a person with kubectl) takes spec.replicas
        "apply",
        "PATCH",
        cluster.resource("apps", "Deployment").path(namespace, "web"),
        subject="test",
        query={"fieldManager": "kubectl-edit", "force": "true"},
        body=other,
        content_type="application/apply-patch+yaml",
    )
    with pytest.raises(FieldConflictError) as err:
        cluster.apply(deployment(namespace, "web"))
    assert err.value.fields == (".spec.replicas",)
    assert err.value.managers == ("kubectl-edit",)
    assert str(err.value).startswith(f"Deployment.apps/{namespace}/web: conflict")
    assert isinstance(err.value, TerminalError)

    taken = cluster.apply(deployment(namespace, "web"), force=True)
    assert taken["spec"]["replicas"] == 1


def test_a_stale_resource_version_is_stale_not_a_field_conflict(cluster: KubeCluster, namespace: str) -> None:
    """A 409 on an apply without a field-manager conflict is the server refusing a precondition: no fields, no
    owner and no force-conflicts advice, which could not help."""
    applied = cluster.apply(configmap(namespace, "c", a="1"))
    cluster.apply(configmap(namespace, "c", a="2"))
    stale = configmap(namespace, "c", a="3")
    stale["metadata"]["resourceVersion"] = applied["metadata"]["resourceVersion"]
    with pytest.raises(StaleError) as err:
        cluster.apply(stale)
    assert not isinstance(err.value, FieldConflictError)
    assert str(err.value).startswith(f"ConfigMap/{namespace}/c: Conflict: ")
    assert "the object has been modified" in str(err.value)
    assert "force-conflicts" not in str(err.value) and "\n" not in str(err.value)


def test_immutable_field_is_a_terminal_error_naming_the_field(cluster: KubeCluster, namespace: str) -> None:
    cluster.apply(deployment(namespace, "web"))
    with pytest.raises(InvalidObjectError) as err:
        cluster.apply(deployment(namespace, "web", app="other"), dry_run=True)
    assert err.value.immutable
    assert "spec.selector" in err.value.fields
    assert str(err.value).startswith(f"Deployment.apps/{namespace}/web: field is immutable: spec.selector")


def test_unknown_kind_and_missing_namespace(cluster: KubeCluster, namespace: str) -> None:
    with pytest.raises(NotFoundError, match=r"^Widget.example.com: kind is not served"):
        cluster.apply({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}})
    with pytest.raises(NotFoundError, match=r"^ConfigMap/no-such-ns/a: not found"):
        cluster.apply(configmap("no-such-ns", "a"), dry_run=True)


def test_discovery_refreshes_after_a_crd_is_created(cluster: KubeCluster, namespace: str) -> None:
    group = f"{namespace}.example.com"
    crd = widget_crd(group)
    cluster.resource("", "ConfigMap")  # discovery loaded before the CRD exists
    cluster.apply(crd)
    try:
        widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": namespace}}
        deadline = time.monotonic() + 60
        while True:
            try:
                cluster.apply(widget)
                break
            except NotFoundError:
                assert time.monotonic() < deadline, "the new kind never showed up in discovery"
                time.sleep(0.5)
        assert cluster.get(ObjectId.of(widget)) is not None
    finally:
        cluster.delete(ObjectId.of(crd))


def test_state_store_round_trip_and_optimistic_concurrency(cluster: KubeCluster, namespace: str) -> None:
    store = ConfigMapStateStore(cluster)
    key = AppEnv("shop", "staging")
    assert store.load(key, namespace, "inventory") == ({}, "")

    v1 = store.save(key, namespace, "inventory", {"objects": ["ConfigMap/x/y"]}, "")
    data, version = store.load(key, namespace, "inventory")
    assert (data, version) == ({"objects": ["ConfigMap/x/y"]}, v1)

    v2 = store.save(key, namespace, "inventory", {"objects": []}, v1)
    with pytest.raises(StaleError) as err:
        store.save(key, namespace, "inventory", {"objects": ["lost update"]}, v1)
    assert isinstance(err.value, TransientError)
    with pytest.raises(StaleError):
        store.save(key, namespace, "inventory", {}, "")  # a second creator loses too
    assert store.load(key, namespace, "inventory") == ({"objects": []}, v2)

    live = cluster.get(ObjectId("", "ConfigMap", namespace, "gitsync.shop.staging.inventory"))
    assert live is not None
    assert live["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "gitsync",
        "gitsync.dev/app": "shop",
        "gitsync.dev/env": "staging",
        "gitsync.dev/state": "inventory",
    }


def test_a_get_on_a_connection_the_restarted_api_server_closed_is_sent_again(
    kubelab: Any, namespace: str, tmp_path: Path
) -> None:
    """After an API server restart, the first GET on a kept-alive connection meets it closed without an answer:
    sent again on a new connection, it is answered (before: "unreachable", which the agent logged as the cluster
    gone 14 s after it was back)."""
    config = yaml.safe_load(kubelab.kubeconfig.read_text())
    relay = Relay(config["clusters"][0]["cluster"]["server"])
    relay.start()
    try:
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
        relayed = tmp_path / "relayed.kubeconfig"
        relayed.write_text(yaml.safe_dump(config))
        cluster = KubeCluster(relayed)
        ref = ObjectId("", "Namespace", "", namespace)
        assert cluster.get(ref) is not None  # a connection kept alive in the pool
        relay.restart()
        assert cluster.get(ref) is not None
        relay.stop()  # gone: that is unreachable, at once
        with pytest.raises(UnreachableError, match="Connection refused"):
            cluster.get(ref)
        relay.start()
        assert cluster.get(ref) is not None
    finally:
        relay.stop()
