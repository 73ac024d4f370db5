"""The sync engine (plan, apply, inventory, prune) against a real control plane."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from widgets import widget_crd

from gitsync import inventory as inventories
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.memo import DryRunMemo
from gitsync.model import (
    ANNOTATION_FORCE,
    ANNOTATION_IGNORE,
    ANNOTATION_PRUNE,
    ANNOTATION_RECREATE,
    LABEL_APP,
    LABEL_ENV,
    LABEL_MANAGED_BY,
    AppEnv,
    Json,
    Manifest,
    ObjectId,
    SyncAction,
)
from gitsync.plan import ListSnapshot, PlanAction
from gitsync.sync import SyncResult, sync_app

KEY = AppEnv("shop", "test")


@dataclass(frozen=True)
class Env:
    prune_allow_empty: bool = False


@dataclass(frozen=True)
class Rendered:
    """Stands in for renderers.RenderedApp: what sync_app reads."""

    namespace: str
    manifests: tuple[Manifest, ...]
    app_env: AppEnv = KEY
    digest: str = "d1"
    revision: str = "r1"
    environment: Env = field(default_factory=Env)


def owned(body: Json) -> Manifest:
    body = copy.deepcopy(body)
    labels = body.setdefault("metadata", {}).setdefault("labels", {})
    labels.update({LABEL_MANAGED_BY: "gitsync", LABEL_APP: KEY.app, LABEL_ENV: KEY.env})
    return Manifest(ObjectId.of(body), body)


def configmap(ns: str, name: str, annotations: dict[str, str] | None = None, **data: str) -> Manifest:
    meta: Json = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return owned({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


def deployment(
    ns: str,
    name: str = "web",
    *,
    image: str = "web:1",
    app: str = "web",
    replicas: int | None = 1,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    spec: Json = {
        "selector": {"matchLabels": {"app": app}},
        "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": image}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    meta: Json = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return owned({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec})


@pytest.fixture
def cluster(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


@pytest.fixture
def store(cluster: KubeCluster) -> ConfigMapStateStore:
    return ConfigMapStateStore(cluster)


def sync(cluster: KubeCluster, store: ConfigMapStateStore, ns: str, *manifests: Manifest, **options: Any) -> SyncResult:
    options.setdefault("prune", True)
    options.setdefault("dry_run", False)
    env = options.pop("environment", Env())
    return sync_app(Rendered(ns, tuple(manifests), environment=env), cluster, store, **options)


def actions(result: SyncResult) -> dict[str, str]:
    return {str(e.id): str(e.action) for e in result.changes}


def writes(cluster: KubeCluster) -> int:
    counts = cluster.requests
    return sum(counts.get(verb, 0) for verb in ("apply", "create", "update", "delete"))


def test_create_update_and_noop_without_writes(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    first = sync(cluster, store, namespace, configmap(namespace, "settings", color="blue"), deployment(namespace))
    assert first.ok, first.failures
    assert actions(first) == {
        f"ConfigMap/{namespace}/settings": "created",
        f"Deployment.apps/{namespace}/web": "created",
    }
    assert first.inventory.objects == {ObjectId("", "ConfigMap", namespace, "settings"), deployment(namespace).id}
    assert first.inventory.revision == "r1"

    second = sync(cluster, store, namespace, configmap(namespace, "settings", color="green"), deployment(namespace))
    assert actions(second)[f"ConfigMap/{namespace}/settings"] == "configured"
    assert actions(second)[f"Deployment.apps/{namespace}/web"] == "unchanged"
    assert "-  color: blue" in second.plan.changes[0].diff and "+  color: green" in second.plan.changes[0].diff
    live = cluster.get(ObjectId("", "ConfigMap", namespace, "settings"))
    assert live is not None and live["data"] == {"color": "green"}

    settings = ObjectId("", "ConfigMap", namespace, "settings")
    version = cluster.get(settings)["metadata"]["resourceVersion"]  # type: ignore[index]
    generation = cluster.get(deployment(namespace).id)["metadata"]["generation"]  # type: ignore[index]
    before = writes(cluster)
    third = sync(cluster, store, namespace, configmap(namespace, "settings", color="green"), deployment(namespace))
    assert set(actions(third).values()) == {"unchanged"}
    assert writes(cluster) == before, "a no-op sync must not write anything (no apply, no inventory update)"
    assert cluster.get(settings)["metadata"]["resourceVersion"] == version  # type: ignore[index]
    assert cluster.get(deployment(namespace).id)["metadata"]["generation"] == generation  # type: ignore[index]


def test_memo_skips_dry_runs_when_nothing_moved(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    memo = DryRunMemo()
    objects = [configmap(namespace, f"c{i}", v=str(i)) for i in range(5)]
    sync(cluster, store, namespace, *objects, memo=memo)
    sync(cluster, store, namespace, *objects, memo=memo)  # learns "unchanged" for each
    dry_runs = cluster.requests.get("dry-run", 0)
    result = sync(cluster, store, namespace, *objects, memo=memo)
    assert set(actions(result).values()) == {"unchanged"}
    assert cluster.requests.get("dry-run", 0) == dry_runs

    # someone edits one object: its resourceVersion moves, so it is dry-run again and the drift is found.
    # The editor now owns the field, so putting it back is a take-over: healing an edit needs force.
    take_field(cluster, objects[0], "kubectl-edit", {"data": {"v": "edited"}})
    healed = sync(cluster, store, namespace, *objects, memo=memo, force=True)
    assert actions(healed)[str(objects[0].id)] == "configured"
    assert cluster.requests.get("dry-run", 0) == dry_runs + 1
    assert cluster.get(objects[0].id)["data"] == {"v": "0"}  # type: ignore[index]


def test_memo_persists_with_the_inventory_so_a_new_process_skips_dry_runs(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str, kubelab: Any
) -> None:
    objects = [configmap(namespace, f"c{i}", v=str(i)) for i in range(5)] + [deployment(namespace)]
    sync(cluster, store, namespace, *objects)

    fresh = KubeCluster(kubelab.kubeconfig)  # as a new `gitsync diff` would: no memory of its own
    result = sync(fresh, ConfigMapStateStore(fresh), namespace, *objects, dry_run=True)
    assert result.plan.summary() == "0 to create, 0 to change, 0 to delete, 6 unchanged"
    assert fresh.requests.get("dry-run", 0) == 0
    assert fresh.requests.get("get", 0) == 1, "only the inventory is read by name; live objects come from lists"

    changed = [configmap(namespace, "c0", v="new"), *objects[1:]]
    again = sync(fresh, ConfigMapStateStore(fresh), namespace, *changed, dry_run=True)
    assert again.plan.summary() == "0 to create, 1 to change, 0 to delete, 5 unchanged"
    assert fresh.requests.get("dry-run", 0) == 1


def test_persisted_memo_never_hides_an_edit_of_the_live_spec(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str, kubelab: Any
) -> None:
    objects = [configmap(namespace, "c0", v="0"), deployment(namespace)]
    sync(cluster, store, namespace, *objects)

    fresh = KubeCluster(kubelab.kubeconfig)  # a new `gitsync diff`: only the persisted memo
    quiet = sync(fresh, ConfigMapStateStore(fresh), namespace, *objects, dry_run=True)
    assert quiet.plan.summary() == "0 to create, 0 to change, 0 to delete, 2 unchanged"
    assert fresh.requests.get("dry-run", 0) == 0

    # another writer changes the image; the manifest and the stored memo are what they were
    take_field(
        cluster,
        objects[1],
        "kubectl-edit",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:edited"}]}}}},
    )
    again = KubeCluster(kubelab.kubeconfig)
    found = sync(again, ConfigMapStateStore(again), namespace, *objects, dry_run=True, force=True)
    assert found.plan.summary() == "0 to create, 1 to change, 0 to delete, 1 unchanged"
    assert [c.id for c in found.plan.of(PlanAction.UPDATE)] == [objects[1].id]
    assert "web:edited" in found.plan.of(PlanAction.UPDATE)[0].diff
    assert again.requests.get("dry-run", 0) == 1


def test_diff_settles_unchanged_objects_from_metadata_lists_alone(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str, kubelab: Any
) -> None:
    objects = [configmap(namespace, f"c{i}", v=str(i)) for i in range(3)]
    sync(cluster, store, namespace, *objects)

    fresh = KubeCluster(kubelab.kubeconfig)  # a new `gitsync diff`, as the CLI reads
    quiet = sync(fresh, ConfigMapStateStore(fresh), namespace, *objects, dry_run=True, live=versions_first(fresh))
    assert quiet.plan.summary() == "0 to create, 0 to change, 0 to delete, 3 unchanged"
    assert fresh.requests.get("list-metadata") == 1
    assert fresh.requests.get("list", 0) == 0, "no object content fetched when nothing moved"
    assert fresh.requests.get("dry-run", 0) == 0

    # a Deployment's status is written after the apply: it moves, and its content says it is unchanged
    objects.append(deployment(namespace))
    sync(cluster, store, namespace, *objects)
    # an edit moves one ConfigMap's resourceVersion: the kind is listed in full and the edit is found
    take_field(cluster, objects[0], "kubectl-edit", {"data": {"v": "edited"}})
    again = KubeCluster(kubelab.kubeconfig)
    found = sync(
        again, ConfigMapStateStore(again), namespace, *objects, dry_run=True, force=True, live=versions_first(again)
    )
    assert found.plan.summary() == "0 to create, 1 to change, 0 to delete, 3 unchanged"
    assert "edited" in found.plan.of(PlanAction.UPDATE)[0].diff
    assert again.requests.get("dry-run", 0) == 1, "only the edited object"

    # a new object in the render is a create, not hidden by the metadata path
    grown = sync(
        again,
        ConfigMapStateStore(again),
        namespace,
        *objects,
        configmap(namespace, "c9", v="9"),
        dry_run=True,
        force=True,
        live=versions_first(again),
    )
    assert grown.plan.summary() == "1 to create, 1 to change, 0 to delete, 3 unchanged"


def test_diff_settles_a_workload_whose_status_moved_without_fetching_it(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str, kubelab: Any
) -> None:
    web = deployment(namespace)
    synced_until_status_moved(cluster, store, namespace, web, "the Deployment controller never wrote status")

    fresh = KubeCluster(kubelab.kubeconfig)  # a new `gitsync diff`: its status moved since the sync remembered it
    quiet = sync(fresh, ConfigMapStateStore(fresh), namespace, web, dry_run=True, live=versions_first(fresh))
    assert quiet.plan.summary() == "0 to create, 0 to change, 0 to delete, 1 unchanged"
    assert fresh.requests.get("list", 0) == 0, "same generation and metadata: the object itself is not fetched"
    assert fresh.requests.get("dry-run", 0) == 0

    # an edit of the spec bumps the generation: fetched, dry-run, found
    edit = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:edited"}]}}}}
    take_field(cluster, web, "kubectl-edit", edit)
    again = KubeCluster(kubelab.kubeconfig)
    found = sync(
        again, ConfigMapStateStore(again), namespace, web, dry_run=True, force=True, live=versions_first(again)
    )
    assert found.plan.summary() == "0 to create, 1 to change, 0 to delete, 0 unchanged"
    assert "web:edited" in found.plan.of(PlanAction.UPDATE)[0].diff
    # a label edit makes no new generation, but the metadata list shows it, so the object is checked again
    sync(cluster, store, namespace, web, force=True)
    take_field(cluster, web, "kubectl-label", {"metadata": {"labels": {"team": "other"}}})
    relabelled = KubeCluster(kubelab.kubeconfig)
    seen = sync(
        relabelled, ConfigMapStateStore(relabelled), namespace, web, dry_run=True, live=versions_first(relabelled)
    )
    assert relabelled.requests.get("dry-run", 0) == 1
    assert seen.plan.summary() == "0 to create, 0 to change, 0 to delete, 1 unchanged", "another manager's label"


def test_diff_settles_a_crd_whose_status_moved_without_fetching_crds(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str, kubelab: Any
) -> None:
    """The API server writes a new CRD's status (NamesAccepted, Established) after the apply that created it, so
    the resourceVersion the sync remembered is stale at once; a CRD's generation moves only with its spec. Real
    operators' CRDs are large (hundreds of kilobytes each): a diff must not list them in full to find nothing."""
    crd = owned(widget_crd(f"{namespace}.example.com"))
    try:
        synced_until_status_moved(cluster, store, namespace, crd, "the API server never wrote the CRD's status")

        fresh = KubeCluster(kubelab.kubeconfig)
        quiet = sync(fresh, ConfigMapStateStore(fresh), namespace, crd, dry_run=True, live=versions_first(fresh))
        assert quiet.plan.summary() == "0 to create, 0 to change, 0 to delete, 1 unchanged"
        assert fresh.requests.get("list", 0) == 0, "same generation and metadata: the CRD is not fetched"
        assert fresh.requests.get("dry-run", 0) == 0

        # another manager takes a field of the spec gitsync sets: the generation moved; found
        take_field(cluster, crd, "kubectl-edit", {"spec": {"names": {"singular": "wdg"}}})
        again = KubeCluster(kubelab.kubeconfig)
        found = sync(
            again, ConfigMapStateStore(again), namespace, crd, dry_run=True, force=True, live=versions_first(again)
        )
        assert found.plan.summary() == "0 to create, 1 to change, 0 to delete, 0 unchanged"
        assert "wdg" in found.plan.of(PlanAction.UPDATE)[0].diff
    finally:
        cluster.delete(crd.id)


def synced_until_status_moved(
    cluster: KubeCluster, store: ConfigMapStateStore, ns: str, manifest: Manifest, never: str
) -> None:
    """Sync ``manifest``, then wait until a controller wrote its status (its resourceVersion moved past the one
    the sync remembered): what a later `gitsync diff` finds."""
    synced = sync(cluster, store, ns, manifest)
    remembered = synced.inventory.memo[str(manifest.id)].split(":")[2]
    deadline = time.monotonic() + 30
    while cluster.get(manifest.id)["metadata"]["resourceVersion"] == remembered:  # type: ignore[index]
        assert time.monotonic() < deadline, never
        time.sleep(0.1)


def versions_first(cluster: KubeCluster) -> ListSnapshot:
    return ListSnapshot(cluster, versions_first=True)


def test_prune_deletes_what_left_the_render_and_keeps_what_asks(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    keep = configmap(namespace, "keep", {ANNOTATION_PRUNE: "false"})
    sync(cluster, store, namespace, configmap(namespace, "a"), configmap(namespace, "b"), keep, deployment(namespace))

    without_prune = sync(cluster, store, namespace, configmap(namespace, "a"), prune=False)
    assert cluster.get(deployment(namespace).id) is not None
    assert deployment(namespace).id in without_prune.inventory.objects

    result = sync(cluster, store, namespace, configmap(namespace, "a"))
    assert actions(result) == {
        f"ConfigMap/{namespace}/a": "unchanged",
        f"ConfigMap/{namespace}/keep": "skipped",
        f"ConfigMap/{namespace}/b": "deleted",
        f"Deployment.apps/{namespace}/web": "deleted",
    }
    assert [e.id.kind for e in result.changes if e.action is SyncAction.DELETED] == ["Deployment", "ConfigMap"]
    assert cluster.get(ObjectId("", "ConfigMap", namespace, "b")) is None
    assert cluster.get(keep.id) is not None, "an object annotated prune: false is never deleted"
    assert result.inventory.objects == {ObjectId("", "ConfigMap", namespace, "a")}


def test_an_app_that_stops_rendering_the_environments_namespace_never_deletes_it(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    """Upstream files often ship the Namespace they install into; removing that document from the app must not
    delete the namespace, with every object of the environment and gitsync's own records in it."""
    own = owned({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    sync(cluster, store, namespace, own, configmap(namespace, "a"))

    result = sync(cluster, store, namespace, configmap(namespace, "a"))

    assert actions(result) == {f"ConfigMap/{namespace}/a": "unchanged", f"Namespace/{namespace}": "skipped"}
    assert result.plan.orphaned == (own.id,)
    live = cluster.get(own.id)
    assert live is not None and not live.get("metadata", {}).get("deletionTimestamp")
    assert cluster.get(ObjectId("", "ConfigMap", namespace, "a")) is not None
    assert result.inventory.objects == {ObjectId("", "ConfigMap", namespace, "a")}, "no longer gitsync's to prune"


def test_prune_never_deletes_what_is_not_this_app_envs(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    """An inventory entry whose live object carries no ownership labels of this app-env (another environment's
    object named by a forged inventory, or one another app took over) is released, never deleted."""
    other_env = configmap(namespace, "prod-precious")
    other_env.body["metadata"]["labels"][LABEL_ENV] = "prod"
    taken_over = configmap(namespace, "moved")
    taken_over.body["metadata"]["labels"][LABEL_APP] = "billing"
    foreign = owned({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain", "namespace": namespace}})
    del foreign.body["metadata"]["labels"]
    for manifest in (other_env, taken_over, foreign):
        cluster.apply(manifest.body)
    sync(cluster, store, namespace, configmap(namespace, "a"), configmap(namespace, "b"))
    before = inventories.load(store, KEY, namespace)
    forged = before.adding({other_env.id, taken_over.id, foreign.id})
    inventories.save(store, KEY, namespace, forged, before)

    result = sync(cluster, store, namespace, configmap(namespace, "a"))

    assert actions(result) == {
        f"ConfigMap/{namespace}/a": "unchanged",
        f"ConfigMap/{namespace}/b": "deleted",
        f"ConfigMap/{namespace}/prod-precious": "skipped",
        f"ConfigMap/{namespace}/moved": "skipped",
        f"ConfigMap/{namespace}/plain": "skipped",
    }
    for manifest in (other_env, taken_over, foreign):
        assert cluster.get(manifest.id) is not None, f"{manifest.id} is not {KEY}'s to delete"
    assert result.inventory.objects == {ObjectId("", "ConfigMap", namespace, "a")}


def test_empty_render_never_prunes_unless_allowed(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    sync(cluster, store, namespace, configmap(namespace, "a"))
    refused = sync(cluster, store, namespace)
    assert actions(refused) == {f"ConfigMap/{namespace}/a": "skipped"}
    assert cluster.get(ObjectId("", "ConfigMap", namespace, "a")) is not None
    assert ObjectId("", "ConfigMap", namespace, "a") in refused.inventory.objects

    allowed = sync(cluster, store, namespace, environment=Env(prune_allow_empty=True))
    assert actions(allowed) == {f"ConfigMap/{namespace}/a": "deleted"}
    assert allowed.inventory.objects == frozenset()


def test_invalid_object_applies_nothing(cluster: KubeCluster, store: ConfigMapStateStore, namespace: str) -> None:
    bad = owned(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"ports": [{"port": 99999}]},
        }
    )
    result = sync(cluster, store, namespace, configmap(namespace, "good"), bad)
    assert not result.ok
    (error,) = [e.error for e in result.failures]
    assert error is not None and error.startswith(f"Service/{namespace}/web: invalid")
    assert actions(result)[f"ConfigMap/{namespace}/good"] == "skipped"
    assert cluster.get(ObjectId("", "ConfigMap", namespace, "good")) is None


def take_field(cluster: KubeCluster, manifest: Manifest, manager: str, patch: Json) -> None:
    """Another field manager (a person, an HPA) sets fields with its own server-side apply."""
    res = cluster.resource(manifest.id.group, manifest.id.kind)
    body = {
        "apiVersion": manifest.body["apiVersion"],
        "kind": manifest.id.kind,
        "metadata": {"name": manifest.id.name, "namespace": manifest.id.namespace},
        **patch,
    }
    cluster._request(
        "apply",
        "PATCH",
        res.path(manifest.id.namespace, manifest.id.name),
        subject="test",
        query={"fieldManager": manager, "force": "true"},
        body=body,
        content_type="application/apply-patch+yaml",
    )


def test_field_conflict_names_fields_and_manager_then_forced_take_over(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    sync(cluster, store, namespace, deployment(namespace, replicas=1))
    take_field(cluster, deployment(namespace), "ops-team", {"spec": {"replicas": 4}})

    refused = sync(cluster, store, namespace, deployment(namespace, replicas=2))
    assert not refused.ok
    (error,) = [e.error for e in refused.failures]
    assert error is not None
    assert error.startswith(f"Deployment.apps/{namespace}/web: conflict")
    assert ".spec.replicas" in error and "ops-team" in error
    assert cluster.get(deployment(namespace).id)["spec"]["replicas"] == 4  # type: ignore[index]

    forced = sync(cluster, store, namespace, deployment(namespace, replicas=2, annotations={ANNOTATION_FORCE: "true"}))
    assert forced.ok, forced.failures
    assert cluster.get(deployment(namespace).id)["spec"]["replicas"] == 2  # type: ignore[index]


def test_immutable_field_fails_or_recreates_when_annotated(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    sync(cluster, store, namespace, deployment(namespace, app="web"))
    old_uid = cluster.get(deployment(namespace).id)["metadata"]["uid"]  # type: ignore[index]

    refused = sync(cluster, store, namespace, deployment(namespace, app="web2"))
    (error,) = [e.error for e in refused.failures]
    assert error is not None and "field is immutable: spec.selector" in error
    assert error.startswith(f"Deployment.apps/{namespace}/web:")

    recreated = sync(
        cluster, store, namespace, deployment(namespace, app="web2", annotations={ANNOTATION_RECREATE: "true"})
    )
    assert recreated.ok, recreated.failures
    live = cluster.get(deployment(namespace).id)
    assert live is not None
    assert live["metadata"]["uid"] != old_uid
    assert live["spec"]["selector"] == {"matchLabels": {"app": "web2"}}


def test_crd_and_its_custom_object_in_one_render(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    group = f"{namespace}.example.com"
    crd = owned(widget_crd(group))
    widget = owned(
        {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": namespace}, "size": 3}
    )
    try:
        planned = sync(cluster, store, namespace, widget, crd, dry_run=True)
        assert planned.plan.summary() == "2 to create, 0 to change, 0 to delete, 0 unchanged"
        result = sync(cluster, store, namespace, widget, crd)
        assert result.ok, result.failures
        assert [e.id.kind for e in result.changes] == ["CustomResourceDefinition", "Widget"]
        assert cluster.get(widget.id)["size"] == 3  # type: ignore[index]
        again = sync(cluster, store, namespace, widget, crd)
        assert set(actions(again).values()) == {"unchanged"}
    finally:
        cluster.delete(crd.id)


def test_namespace_and_objects_in_it_in_one_render(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    child_ns = f"{namespace}-child"
    ns = owned({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": child_ns}})
    try:
        result = sync(cluster, store, namespace, configmap(child_ns, "inside"), deployment(child_ns), ns)
        assert result.ok, result.failures
        assert [e.id.kind for e in result.changes] == ["Namespace", "ConfigMap", "Deployment"]
        assert cluster.get(ObjectId("", "ConfigMap", child_ns, "inside")) is not None
    finally:
        cluster.delete(ns.id)


def test_bad_namespace_is_an_error_not_a_create(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    result = sync(cluster, store, namespace, configmap(f"{namespace}-typo", "x"))
    assert not result.ok
    assert "not found" in (result.failures[0].error or "")


def scale(cluster: KubeCluster, manifest: Manifest, replicas: int) -> None:
    """What the HorizontalPodAutoscaler controller does: an update of the scale subresource, as its own manager."""
    path = cluster.resource("apps", "Deployment").path(manifest.id.namespace, manifest.id.name) + "/scale"
    cluster._request(
        "update",
        "PATCH",
        path,
        subject="test",
        query={"fieldManager": "horizontal-pod-autoscaler"},
        body={"spec": {"replicas": replicas}},
        content_type="application/merge-patch+json",
    )


def test_replicas_owned_by_an_autoscaler_are_not_drift(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    sync(cluster, store, namespace, deployment(namespace, replicas=1))
    scale(cluster, deployment(namespace), 7)
    # the chart stops declaring replicas once autoscaling is on: the autoscaler's value is not drift
    result = sync(cluster, store, namespace, deployment(namespace, replicas=None))
    assert actions(result) == {f"Deployment.apps/{namespace}/web": "unchanged"}
    assert cluster.get(deployment(namespace).id)["spec"]["replicas"] == 7  # type: ignore[index]
    scale(cluster, deployment(namespace), 3)
    again = sync(cluster, store, namespace, deployment(namespace, replicas=None))
    assert actions(again) == {f"Deployment.apps/{namespace}/web": "unchanged"}
    assert cluster.get(deployment(namespace).id)["spec"]["replicas"] == 3  # type: ignore[index]


def test_ignore_differences_annotation_is_honoured(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    cm = configmap(namespace, "tuned", {ANNOTATION_IGNORE: "/data/level"}, level="1", other="x")
    sync(cluster, store, namespace, cm)
    take_field(cluster, cm, "tuner", {"data": {"level": "9"}})
    dry = sync(cluster, store, namespace, cm, dry_run=True, force=True)
    assert dry.plan.of(PlanAction.UNCHANGED), "a change only in an ignored field is not drift"


def test_secret_values_stay_out_of_the_plan(cluster: KubeCluster, store: ConfigMapStateStore, namespace: str) -> None:
    def secret(value: str) -> Manifest:
        return owned(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "db", "namespace": namespace},
                "stringData": {"password": value},
            }
        )

    sync(cluster, store, namespace, secret("hunter2-old"))
    dry = sync(cluster, store, namespace, secret("hunter2-new"), dry_run=True)
    (change,) = dry.plan.changes
    assert change.action is PlanAction.UPDATE
    assert "password" in change.diff
    assert "hunter2" not in change.diff and "aHVudGVyMi" not in change.diff
    assert "hunter2" not in json.dumps([(str(e.id), str(e.action), e.error) for e in dry.changes])


def test_sync_converges_when_called_again_after_an_interruption(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    """Simulates a crash after apply and before the inventory write: the next sync adopts what it applied."""
    objects = (configmap(namespace, "a"), configmap(namespace, "b"))
    for m in objects:
        cluster.apply(m.body)
    result = sync(cluster, store, namespace, *objects)
    assert set(actions(result).values()) == {"unchanged"}
    assert result.inventory.objects == {m.id for m in objects}
    time.sleep(0)  # nothing to wait for: the second call is complete
