"""What a sync must never do with a bad commit: delete a running workload for a replacement the server refuses,
apply half of a commit, or retry a body the server refuses as if the network had failed (issue 14, items 1, 7)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client
from test_drift import healer
from test_sync import Env, Rendered, configmap, deployment, owned
from widgets import widget_crd

from gitsync import served
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.errors import GitsyncError, Retry
from gitsync.model import ANNOTATION_RECREATE, AppEnv, Json, Manifest, ObjectId
from gitsync.plan import ListSnapshot
from gitsync.sync import SyncResult, sync_app


@pytest.fixture
def cluster(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


def sync(cluster: KubeCluster, ns: str, *manifests: Manifest) -> SyncResult:
    return sync_app(
        Rendered(ns, tuple(manifests), environment=Env()),
        cluster,
        ConfigMapStateStore(cluster),
        prune=True,
        dry_run=False,
    )


def recreated_web(ns: str, *, replicas: int = 1) -> Manifest:
    """The Deployment with a new selector (immutable), opted in to delete-and-recreate."""
    return deployment(ns, app="web2", replicas=replicas, annotations={ANNOTATION_RECREATE: "true"})


def test_recreate_whose_replacement_is_invalid_deletes_nothing_and_applies_nothing(
    cluster: KubeCluster, namespace: str
) -> None:
    first = sync(cluster, namespace, deployment(namespace, app="web"), configmap(namespace, "settings", v="1"))
    assert first.ok, first.failures
    uid = cluster.get(deployment(namespace).id)["metadata"]["uid"]  # type: ignore[index]

    # the next commit changes the selector (recreate) but its new body is invalid too, and changes a ConfigMap
    result = sync(cluster, namespace, recreated_web(namespace, replicas=-1), configmap(namespace, "settings", v="2"))
    assert not result.ok
    assert result.retry is Retry.TERMINAL
    (error,) = [e.error for e in result.failures]
    assert error is not None and error.startswith(f"Deployment.apps/{namespace}/web: invalid")
    assert "spec.replicas" in error
    live = cluster.get(deployment(namespace).id)
    assert live is not None and live["metadata"]["uid"] == uid, "the running workload was deleted"
    assert cluster.get(configmap(namespace, "settings").id)["data"] == {"v": "1"}  # type: ignore[index]

    # a valid replacement is recreated as before
    fixed = sync(cluster, namespace, recreated_web(namespace), configmap(namespace, "settings", v="2"))
    assert fixed.ok, fixed.failures
    live = cluster.get(deployment(namespace).id)
    assert live is not None and live["metadata"]["uid"] != uid
    assert live["spec"]["selector"] == {"matchLabels": {"app": "web2"}}


def _deny_real_creates_of_web2(kube_api: client.ApiClient, namespace: str) -> str:
    """An admission policy that lets a dry-run create of the web2 Deployment pass and refuses the real one: the
    replacement is validated, and still fails when created (what a quota or a webhook racing the sync can do)."""
    name = f"deny-web2-{namespace}"
    admission = client.AdmissionregistrationV1Api(kube_api)
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "request.dryRun == true || object.spec.selector.matchLabels['app'] != 'web2'",
                        "message": "web2 may not be created for real",
                    }
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
            },
        }
    )
    return name


def _until_denied(cluster: KubeCluster, namespace: str) -> None:
    """Policies take effect a moment after they are created: probe with a real create until refused."""
    probe = deployment(namespace, "probe", app="web2")
    deadline = time.monotonic() + 30
    while True:
        try:
            cluster.create(probe.body)
        except GitsyncError as e:  # the refusal is what we wait for
            if "may not be created" in str(e):
                return
            raise
        cluster.delete(probe.id)
        while cluster.get(probe.id) is not None:
            time.sleep(0.1)
        assert time.monotonic() < deadline, "the admission policy never took effect"
        time.sleep(0.3)


def test_recreate_puts_the_previous_object_back_when_the_create_fails(
    cluster: KubeCluster, namespace: str, kube_api: client.ApiClient
) -> None:
    assert sync(cluster, namespace, deployment(namespace, app="web")).ok
    policy = _deny_real_creates_of_web2(kube_api, namespace)
    admission = client.AdmissionregistrationV1Api(kube_api)
    try:
        _until_denied(cluster, namespace)
        result = sync(cluster, namespace, recreated_web(namespace))
        assert result.retry is Retry.TERMINAL
        (error,) = [e.error for e in result.failures]
        assert error is not None and error.startswith(f"Deployment.apps/{namespace}/web:")
        assert "may not be created" in error and "the previous object was put back" in error
    finally:
        admission.delete_validating_admission_policy_binding(policy)
        admission.delete_validating_admission_policy(policy)

    live = cluster.get(deployment(namespace).id)
    assert live is not None, "the workload was deleted and not put back"
    assert live["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    owners = {(e["manager"], e["operation"]) for e in live["metadata"]["managedFields"]}
    assert ("gitsync", "Apply") in owners, owners
    # put back with its owners, the next sync of the old body is a no-op rather than a conflict
    again = sync(cluster, namespace, deployment(namespace, app="web"))
    assert again.ok, again.failures


def test_bodies_the_server_refuses_are_terminal_and_apply_nothing(cluster: KubeCluster, namespace: str) -> None:
    """HTTP 422 (a port out of range) and the HTTP 500 server-side apply answers for a value of the wrong type
    (a number in a Secret's stringData) are content errors: wait for the next commit, never retried."""
    good = configmap(namespace, "good", v="1")
    secret: Json = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pin", "namespace": namespace},
        "stringData": {"pin": 73317331},
    }
    typed = sync(cluster, namespace, good, owned(secret))
    assert typed.retry is Retry.TERMINAL, [e.error for e in typed.failures]
    assert cluster.get(good.id) is None, "a commit with any refused object applies nothing"

    service: Json = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"ports": [{"port": 99999}]},
    }
    invalid = sync(cluster, namespace, good, owned(service))
    assert invalid.retry is Retry.TERMINAL
    assert json.dumps([e.retry for e in invalid.failures]) == '["terminal"]'
    assert cluster.get(good.id) is None


def test_a_missing_namespace_is_transient(cluster: KubeCluster, namespace: str) -> None:
    """Another app of the environment may create it: retried with backoff, not parked until the next commit."""
    result = sync(cluster, namespace, configmap(f"{namespace}-later", "x"))
    assert result.retry is Retry.TRANSIENT
    assert cluster.get(ObjectId("", "ConfigMap", namespace, "x")) is None


def test_a_crd_that_never_becomes_established_fails_naming_it(
    cluster: KubeCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRD whose kind another CRD of its group already uses is never Established: the wait is bounded, and the
    error names the CRD and is worth a retry (the conflicting CRD may go)."""
    monkeypatch.setattr(served, "PARENT_WAIT_SECONDS", 2.0)
    group = f"{namespace}.example.com"
    first, second = widget_crd(group), widget_crd(group)
    second["metadata"]["name"] = f"gadgets.{group}"
    second["spec"]["names"] = {"kind": "Widget", "plural": "gadgets", "singular": "gadget", "listKind": "WidgetList"}
    try:
        assert sync(cluster, namespace, owned(first)).ok
        result = sync(cluster, namespace, owned(first), owned(second))
        assert result.retry is Retry.TRANSIENT
        (error,) = [e.error for e in result.failures]
        assert error == f"CustomResourceDefinition.apiextensions.k8s.io/gadgets.{group}: not Established after 2s"
    finally:
        for crd in (first, second):
            cluster.delete(ObjectId.of(crd))


def test_the_reconcile_parks_a_refused_body_and_retries_a_missing_namespace(
    cluster: KubeCluster, namespace: str
) -> None:
    """The agent's reconcile requeues by the sync's class: a body the server refuses waits for the next commit
    (no six retries in 30 s), a namespace another app may still create is retried."""
    service: Json = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"ports": [{"port": 99999}]},
    }
    key = AppEnv("shop", f"refused-{namespace[-6:]}")
    refused = healer(key, [configmap(namespace, "good"), owned(service)], cluster, ListSnapshot(cluster))()
    assert refused.error_class is Retry.TERMINAL, refused.error
    assert refused.error.startswith(f"Service/{namespace}/web: invalid")
    assert refused.error.count(f"Service/{namespace}/web:") == 1, f"said once: {refused.error}"

    elsewhere = configmap(f"{namespace}-later", "x")
    waiting = healer(key, [configmap(namespace, "good"), elsewhere], cluster, ListSnapshot(cluster))()
    assert waiting.error_class is Retry.TRANSIENT, waiting.error
