"""A first apply without a dry-run per object (``gitsync.judge``) still applies nothing when the server would
refuse any object: one the schema refuses, and one only the server's admission refuses."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from test_sync import Env, actions, configmap, owned, sync

from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.errors import GitsyncError
from gitsync.model import Json, ObjectId, SyncAction

ADMISSION = "admissionregistration.k8s.io/v1"


@pytest.fixture
def cluster(kubelab: Any) -> KubeCluster:
    return KubeCluster(kubelab.kubeconfig)


@pytest.fixture
def store(cluster: KubeCluster) -> ConfigMapStateStore:
    return ConfigMapStateStore(cluster)


def gadget_crd(group: str) -> Json:
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer", "minimum": 1}}}
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def gadget(group: str, namespace: str, name: str, size: Any) -> Any:
    return owned(
        {
            "apiVersion": f"{group}/v1",
            "kind": "Gadget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"size": size},
        }
    )


def applied_nothing(cluster: KubeCluster, namespace: str, result: Any) -> None:
    assert not result.ok
    assert SyncAction.CREATED not in {e.action for e in result.changes}
    managed = cluster.list("", "ConfigMap", namespace, "app.kubernetes.io/managed-by=gitsync").items
    assert [m["metadata"]["name"] for m in managed if not m["metadata"]["name"].startswith("gitsync.")] == []


def test_judged_creates_skip_the_dry_run_and_a_schema_invalid_object_still_applies_nothing(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    group = f"judge{secrets.token_hex(3)}.example.com"
    crd = cluster.apply(gadget_crd(group))
    try:
        deadline = time.monotonic() + 30
        while not any(
            c["type"] == "Established"
            for c in ((cluster.get(ObjectId.of(crd)) or {}).get("status") or {}).get("conditions") or []
        ):
            assert time.monotonic() < deadline, "CRD not Established"
            time.sleep(0.1)
        good = [configmap(namespace, f"cm-{n}", v="x") for n in range(5)] + [gadget(group, namespace, "g1", 2)]
        before = cluster.requests.get("dry-run", 0)
        result = sync(cluster, store, namespace, *good)
        assert result.ok, result.failures
        assert set(actions(result).values()) == {"created"}
        assert cluster.requests.get("dry-run", 0) == before  # every create was judged, none dry-run

        bad = [configmap(namespace, f"more-{n}", v="x") for n in range(5)] + [gadget(group, namespace, "g2", "big")]
        result = sync(cluster, store, namespace, *good, *bad)
        (failure,) = result.failures
        assert failure.error is not None and failure.error.startswith(f"Gadget.{group}/{namespace}/g2: invalid")
        for n in range(5):
            assert cluster.get(ObjectId("", "ConfigMap", namespace, f"more-{n}")) is None
    finally:
        cluster.delete(ObjectId.of(crd))


def test_an_object_only_an_admission_policy_refuses_still_applies_nothing(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    name = f"no-forbidden-{secrets.token_hex(3)}"
    policy = {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}
                ]
            },
            "validations": [{"expression": "!has(object.data) || !('forbidden' in object.data)", "message": "no"}],
        },
    }
    binding = {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    made = [cluster.apply(policy), cluster.apply(binding)]
    try:
        probe = configmap(namespace, "probe", forbidden="x").body
        deadline = time.monotonic() + 30
        while True:  # the policy takes effect once the server has loaded it
            try:
                cluster.create(probe, dry_run=True)
            except GitsyncError:
                break
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(0.2)
        objects = [configmap(namespace, f"cm-{n}", v="x") for n in range(5)] + [
            configmap(namespace, "bad", forbidden="x")
        ]
        result = sync(cluster, store, namespace, *objects, environment=Env())
        applied_nothing(cluster, namespace, result)
        (failure,) = result.failures
        assert failure.error is not None and f"ConfigMap/{namespace}/bad" in failure.error
    finally:
        for obj in reversed(made):
            cluster.delete(ObjectId.of(obj))


def test_an_object_only_a_quota_refuses_still_applies_nothing(
    cluster: KubeCluster, store: ConfigMapStateStore, namespace: str
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "services", "namespace": namespace},
        "spec": {"hard": {"count/services": "0"}},
    }
    cluster.apply(quota)
    deadline = time.monotonic() + 30
    while not (cluster.get(ObjectId("", "ResourceQuota", namespace, "services")) or {}).get("status", {}).get("hard"):
        assert time.monotonic() < deadline, "quota never observed"
        time.sleep(0.1)
    service = owned(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"ports": [{"port": 80}]},
        }
    )
    result = sync(cluster, store, namespace, *(configmap(namespace, f"cm-{n}", v="x") for n in range(5)), service)
    applied_nothing(cluster, namespace, result)
    (failure,) = result.failures
    assert failure.error is not None and "exceeded quota" in failure.error
