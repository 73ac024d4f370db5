"""The pure parts of drift reporting (what the cache's changes turn into): field paths, the Event, the summary.
Detection and healing themselves run against a real API server in tests/cluster/test_drift.py."""

from __future__ import annotations

from typing import Any

import pytest

from gitsync.drift import Drift, changed_paths, detect, drift_event
from gitsync.model import AppEnv, Manifest, ObjectId


@pytest.mark.parametrize(
    ("a", "b", "paths"),
    [
        ({"spec": {"replicas": 2}}, {"spec": {"replicas": 2}}, []),
        ({"spec": {"replicas": 2}}, {"spec": {"replicas": 5}}, [".spec.replicas"]),
        ({"data": {"a": "1", "b": "2"}}, {"data": {"a": "1"}}, [".data.b"]),
        ({"data": {"a": "1"}}, {"data": {"a": "1", "z": "9"}}, [".data.z"]),
        (
            {"spec": {"containers": [{"name": "c", "image": "x:1"}, {"name": "d", "image": "y:1"}]}},
            {"spec": {"containers": [{"name": "c", "image": "x:2"}, {"name": "d", "image": "y:1"}]}},
            [".spec.containers[0].image"],
        ),
        ({"spec": {"ports": [1, 2]}}, {"spec": {"ports": [1]}}, [".spec.ports"]),
        ({"a": 1}, {"a": "1"}, [".a"]),
        (1, 2, ["."]),
    ],
)
def test_changed_paths(a: Any, b: Any, paths: list[str]) -> None:
    assert changed_paths(a, b) == paths


WEB = ObjectId("apps", "Deployment", "shop", "web")
KEY = AppEnv("web", "prod")


def test_summary_says_what_changed_and_who_changed_it() -> None:
    assert Drift(KEY, WEB, (".spec.replicas",), ("kubectl-edit",)).summary == (
        "Deployment.apps/shop/web: .spec.replicas changed by kubectl-edit"
    )
    assert Drift(KEY, WEB, missing=True).summary == "Deployment.apps/shop/web: deleted outside gitsync"


def test_the_event_is_a_warning_on_the_drifted_object() -> None:
    live = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"uid": "u-1", "resourceVersion": "42"}}
    event = drift_event(Drift(KEY, WEB, (".spec.replicas",), ("kubectl",)), live, now=1_800_000_000.0)
    assert event["metadata"] == {"name": "web.drift-42", "namespace": "shop"}
    assert event["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "namespace": "shop",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"]) == ("Warning", "DriftDetected")
    assert event["message"] == "Deployment.apps/shop/web: .spec.replicas changed by kubectl (web@prod)"
    assert event["lastTimestamp"] == "2027-01-15T08:00:00Z"


def test_events_about_cluster_scoped_objects_go_to_default() -> None:
    crd = ObjectId("apiextensions.k8s.io", "CustomResourceDefinition", "", "widgets.example.com")
    event = drift_event(Drift(KEY, crd, missing=True), None, now=0.0)
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]
    assert event["metadata"]["name"] == "widgets.example.com.drift-gone"


@pytest.mark.parametrize(("ttl", "drifted"), [(None, True), (0, False), (3600, False)])
def test_a_missing_job_that_removes_itself_is_not_drift(ttl: int | None, drifted: bool) -> None:
    spec: dict[str, Any] = {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "setup", "namespace": "shop"}, "spec": spec}
    job = Manifest(ObjectId.of(body), body)
    found = detect(AppEnv("web", "prod"), job, None, cluster=None)  # type: ignore[arg-type]  # never asked
    assert (found is not None and found.missing) is drifted
