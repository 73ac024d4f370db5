"""Health rules, row by row: what a user sees in `gitsync status` for each state an object can be in."""

from __future__ import annotations

from typing import Any

import pytest

from gitsync.health import Health, aggregate, assess, assess_app, assess_workload, current_pods, selects
from gitsync.model import HealthStatus, ObjectId

H, P, S, M, D = (
    HealthStatus.HEALTHY,
    HealthStatus.PROGRESSING,
    HealthStatus.SUSPENDED,
    HealthStatus.MISSING,
    HealthStatus.DEGRADED,
)


def obj(
    kind: str, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **meta: Any
) -> dict[str, Any]:
    api = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "ReplicaSet": "apps/v1"}
    return {
        "apiVersion": api.get(kind, "v1"),
        "kind": kind,
        "metadata": {"name": meta.pop("name", "x"), "namespace": "shop", **meta},
        "spec": spec or {},
        "status": status or {},
    }


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def container(name: str = "web", restarts: int = 0, **state: Any) -> dict[str, Any]:
    return {"name": name, "restartCount": restarts, "state": state}


RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
READY = [cond("Ready", "True")]

CASES = [
    # (id, object, status, reason fragment)
    ("missing", None, M, "does not exist"),
    ("unknown kind exists", obj("ConfigMap"), H, ""),
    ("being deleted", obj("ConfigMap", deletionTimestamp="2026-01-01T00:00:00Z"), P, "being deleted"),
    # Deployment
    (
        "deploy paused",
        obj("Deployment", {"paused": True, "replicas": 2}, {"observedGeneration": 1}, generation=1),
        S,
        "paused",
    ),
    (
        "deploy generation not observed",
        obj("Deployment", {"replicas": 2}, {"observedGeneration": 1}, generation=2),
        P,
        "observe",
    ),
    ("deploy never observed", obj("Deployment", {"replicas": 2}, {}, generation=1), P, "observe"),
    (
        "deploy deadline exceeded",
        obj(
            "Deployment",
            {"replicas": 2},
            {
                "observedGeneration": 3,
                "conditions": [
                    cond("Progressing", "False", "ProgressDeadlineExceeded", 'ReplicaSet "w" has timed out')
                ],
            },
            generation=3,
        ),
        D,
        "ProgressDeadlineExceeded",
    ),
    (
        "deploy updating",
        obj(
            "Deployment", {"replicas": 3}, {"observedGeneration": 1, "updatedReplicas": 1, "replicas": 3}, generation=1
        ),
        P,
        "1 of 3 replicas updated",
    ),
    (
        "deploy old replicas terminating",
        obj(
            "Deployment", {"replicas": 2}, {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 3}, generation=1
        ),
        P,
        "1 old replicas pending termination",
    ),
    (
        "deploy not available",
        obj(
            "Deployment",
            {"replicas": 2},
            {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1},
            generation=1,
        ),
        P,
        "1 of 2 updated replicas available",
    ),
    (
        "deploy healthy",
        obj(
            "Deployment",
            {"replicas": 2},
            {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
            generation=1,
        ),
        H,
        "",
    ),
    ("deploy scaled to zero", obj("Deployment", {"replicas": 0}, {"observedGeneration": 1}, generation=1), H, ""),
    # StatefulSet
    ("sts generation", obj("StatefulSet", {"replicas": 1}, {"observedGeneration": 0}, generation=1), P, "observe"),
    (
        "sts on delete",
        obj(
            "StatefulSet",
            {"replicas": 2, "updateStrategy": {"type": "OnDelete"}},
            {"observedGeneration": 1},
            generation=1,
        ),
        H,
        "",
    ),
    (
        "sts not ready",
        obj("StatefulSet", {"replicas": 2}, {"observedGeneration": 1, "readyReplicas": 1}, generation=1),
        P,
        "1 of 2 replicas ready",
    ),
    (
        "sts partition pending",
        obj(
            "StatefulSet",
            {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
            {"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1},
            generation=1,
        ),
        P,
        "1 of 2 partitioned",
    ),
    (
        "sts partition done",
        obj(
            "StatefulSet",
            {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
            {"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 2},
            generation=1,
        ),
        H,
        "",
    ),
    (
        "sts revision rolling",
        obj(
            "StatefulSet",
            {"replicas": 2},
            {
                "observedGeneration": 1,
                "readyReplicas": 2,
                "updatedReplicas": 1,
                "currentRevision": "a",
                "updateRevision": "b",
            },
            generation=1,
        ),
        P,
        "1 of 2 replicas updated",
    ),
    (
        "sts healthy",
        obj(
            "StatefulSet",
            {"replicas": 2},
            {"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "a"},
            generation=1,
        ),
        H,
        "",
    ),
    # DaemonSet
    ("ds generation", obj("DaemonSet", {}, {"observedGeneration": 1}, generation=2), P, "observe"),
    (
        "ds on delete",
        obj("DaemonSet", {"updateStrategy": {"type": "OnDelete"}}, {"observedGeneration": 1}, generation=1),
        H,
        "",
    ),
    (
        "ds updating",
        obj(
            "DaemonSet",
            {},
            {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberAvailable": 3},
            generation=1,
        ),
        P,
        "2 of 3 pods updated",
    ),
    (
        "ds unavailable",
        obj(
            "DaemonSet",
            {},
            {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 1},
            generation=1,
        ),
        P,
        "1 of 3 pods available",
    ),
    (
        "ds healthy",
        obj(
            "DaemonSet",
            {},
            {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3},
            generation=1,
        ),
        H,
        "",
    ),
    # ReplicaSet
    ("rs generation", obj("ReplicaSet", {"replicas": 1}, {}, generation=1), P, "observe"),
    (
        "rs failure",
        obj(
            "ReplicaSet",
            {"replicas": 1},
            {"observedGeneration": 1, "conditions": [cond("ReplicaFailure", "True", "FailedCreate", "quota exceeded")]},
            generation=1,
        ),
        D,
        "FailedCreate: quota exceeded",
    ),
    (
        "rs unavailable",
        obj("ReplicaSet", {"replicas": 2}, {"observedGeneration": 1, "availableReplicas": 1}, generation=1),
        P,
        "1 of 2",
    ),
    (
        "rs healthy",
        obj("ReplicaSet", {"replicas": 2}, {"observedGeneration": 1, "availableReplicas": 2}, generation=1),
        H,
        "",
    ),
    # Pod
    *[
        (
            f"pod {reason}",
            obj(
                "Pod",
                status={
                    "phase": "Running",
                    "containerStatuses": [container("web", 4, waiting={"reason": reason, "message": "back-off 40s"})],
                },
            ),
            D,
            f"container web: {reason} (restarts 4): back-off 40s",
        )
        for reason in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")
    ],
    (
        "pod init container crashing",
        obj(
            "Pod",
            status={
                "phase": "Pending",
                "initContainerStatuses": [container("migrate", 2, waiting={"reason": "CrashLoopBackOff"})],
            },
        ),
        D,
        "container migrate: CrashLoopBackOff (restarts 2)",
    ),
    (
        "pod waiting to start is not a failure",
        obj(
            "Pod",
            status={"phase": "Pending", "containerStatuses": [container(waiting={"reason": "ContainerCreating"})]},
        ),
        P,
        "pod is Pending",
    ),
    ("pod failed", obj("Pod", status={"phase": "Failed", "message": "evicted"}), D, "evicted"),
    ("pod failed no message", obj("Pod", status={"phase": "Failed"}), D, "pod failed"),
    ("pod succeeded", obj("Pod", status={"phase": "Succeeded"}), H, ""),
    (
        "pod running ready",
        obj("Pod", status={"phase": "Running", "conditions": READY, "containerStatuses": [container(**RUNNING)]}),
        H,
        "",
    ),
    (
        "pod running not ready",
        obj("Pod", status={"phase": "Running", "conditions": [cond("Ready", "False")]}),
        P,
        "running, not ready",
    ),
    ("pod pending", obj("Pod", status={"phase": "Pending"}), P, "Pending"),
    ("pod without status", obj("Pod"), P, "Pending"),
    # Job
    (
        "job failed",
        obj("Job", status={"conditions": [cond("Failed", "True", "BackoffLimitExceeded", "too many retries")]}),
        D,
        "BackoffLimitExceeded: too many retries",
    ),
    ("job complete", obj("Job", status={"conditions": [cond("Complete", "True")]}), H, ""),
    ("job suspended", obj("Job", {"suspend": True}), S, "suspended"),
    ("job running", obj("Job", status={"active": 2}), P, "2 active"),
    # CronJob
    ("cronjob suspended", obj("CronJob", {"suspend": True}), S, "suspended"),
    ("cronjob never run", obj("CronJob", {"schedule": "* * * * *"}), H, ""),
    (
        "cronjob last run succeeded",
        obj(
            "CronJob", status={"lastScheduleTime": "2026-01-01T10:00:00Z", "lastSuccessfulTime": "2026-01-01T10:00:09Z"}
        ),
        H,
        "",
    ),
    (
        "cronjob last run failed",
        obj(
            "CronJob", status={"lastScheduleTime": "2026-01-01T11:00:00Z", "lastSuccessfulTime": "2026-01-01T10:00:09Z"}
        ),
        D,
        "2026-01-01T11:00:00Z did not succeed",
    ),
    (
        "cronjob run in progress",
        obj("CronJob", status={"lastScheduleTime": "2026-01-01T11:00:00Z", "active": [{"name": "j-1"}]}),
        H,
        "",
    ),
    # Ingress
    ("ingress without address", obj("Ingress", {"rules": []}), P, "publish an address"),
    ("ingress with address", obj("Ingress", status={"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}]}}), H, ""),
    # PodDisruptionBudget
    (
        "pdb not observed",
        obj("PodDisruptionBudget", {"minAvailable": 2}, {"observedGeneration": 1}, generation=2),
        P,
        "observe",
    ),
    (
        "pdb short of healthy pods",
        obj(
            "PodDisruptionBudget",
            {"minAvailable": 2},
            {"observedGeneration": 1, "currentHealthy": 1, "desiredHealthy": 2},
            generation=1,
        ),
        P,
        "1 of 2 pods",
    ),
    (
        "pdb satisfied",
        obj(
            "PodDisruptionBudget",
            {"minAvailable": 2},
            {"observedGeneration": 1, "currentHealthy": 3, "desiredHealthy": 2},
            generation=1,
        ),
        H,
        "",
    ),
    # APIService
    ("apiservice pending", obj("APIService", {"service": {"name": "metrics"}}), P, "Available"),
    ("apiservice available", obj("APIService", status={"conditions": [cond("Available", "True", "Passed")]}), H, ""),
    (
        "apiservice unavailable",
        obj(
            "APIService",
            status={"conditions": [cond("Available", "False", "FailedDiscoveryCheck", "no response from svc")]},
        ),
        D,
        "FailedDiscoveryCheck: no response from svc",
    ),
    # custom resources, kstatus-style
    ("cr without status", obj("Prometheus", {"replicas": 1}), H, ""),
    ("cr generation not observed", obj("Widget", status={"observedGeneration": 1}, generation=2), P, "observe"),
    (
        "cr stalled",
        obj("Widget", status={"conditions": [cond("Stalled", "True", "BadSpec", "no such disk")]}),
        D,
        "no such disk",
    ),
    ("cr reconciling", obj("Widget", status={"conditions": [cond("Reconciling", "True", "Scaling")]}), P, "Scaling"),
    (
        "cr not ready",
        obj("Certificate", status={"conditions": [cond("Ready", "False", "Issuing")]}),
        P,
        "not Ready: Issuing",
    ),
    ("cr not available", obj("Alertmanager", status={"conditions": [cond("Available", "False")]}), P, "not Available"),
    ("cr ready", obj("Certificate", status={"conditions": [cond("Ready", "True")]}), H, ""),
    # Service
    ("svc lb pending", obj("Service", {"type": "LoadBalancer"}), P, "load balancer"),
    (
        "svc lb ready",
        obj("Service", {"type": "LoadBalancer"}, {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}),
        H,
        "",
    ),
    ("svc cluster ip", obj("Service", {"type": "ClusterIP"}), H, ""),
    # PVC
    ("pvc bound", obj("PersistentVolumeClaim", status={"phase": "Bound"}), H, ""),
    ("pvc pending", obj("PersistentVolumeClaim", status={"phase": "Pending"}), P, "Pending"),
    ("pvc lost", obj("PersistentVolumeClaim", status={"phase": "Lost"}), D, "lost"),
    # CRD
    ("crd established", obj("CustomResourceDefinition", status={"conditions": [cond("Established", "True")]}), H, ""),
    ("crd pending", obj("CustomResourceDefinition"), P, "established"),
    (
        "crd names rejected",
        obj(
            "CustomResourceDefinition",
            status={"conditions": [cond("NamesAccepted", "False", "ListKindConflict", "taken")]},
        ),
        D,
        "ListKindConflict",
    ),
    # Namespace
    ("ns active", obj("Namespace", status={"phase": "Active"}), H, ""),
    ("ns terminating", obj("Namespace", status={"phase": "Terminating"}), P, "terminating"),
    # HPA
    ("hpa no conditions", obj("HorizontalPodAutoscaler"), P, "waiting"),
    (
        "hpa metrics failing",
        obj(
            "HorizontalPodAutoscaler",
            status={
                "conditions": [
                    cond("AbleToScale", "True", "SucceededGetScale"),
                    cond("ScalingActive", "False", "FailedGetResourceMetric", "no metrics"),
                ]
            },
        ),
        D,
        "FailedGetResourceMetric: no metrics",
    ),
    (
        "hpa disabled",
        obj("HorizontalPodAutoscaler", status={"conditions": [cond("ScalingActive", "False", "ScalingDisabled")]}),
        S,
        "ScalingDisabled",
    ),
    (
        "hpa healthy",
        obj(
            "HorizontalPodAutoscaler",
            status={
                "conditions": [
                    cond("AbleToScale", "True"),
                    cond("ScalingActive", "True"),
                    cond("ScalingLimited", "True"),
                ]
            },
        ),
        H,
        "",
    ),
]


@pytest.mark.parametrize(("live", "status", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_assess(live: dict[str, Any] | None, status: HealthStatus, reason: str) -> None:
    health = assess(live)
    assert health.status is status
    assert reason in health.reason
    if status is HealthStatus.HEALTHY:
        assert health.reason == ""


def pod(name: str, labels: dict[str, str], created: str, *, crashing: bool = False, **meta: Any) -> dict[str, Any]:
    state = {"waiting": {"reason": "CrashLoopBackOff"}} if crashing else RUNNING
    return obj(
        "Pod",
        status={
            "phase": "Running",
            "conditions": READY,
            "containerStatuses": [container("web", 3 if crashing else 0, **state)],
        },
        name=name,
        labels=labels,
        creationTimestamp=created,
        **meta,
    )


ROLLING = obj(
    "Deployment",
    {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
    {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 3, "availableReplicas": 2},
    generation=2,
    name="web",
)


def test_crash_looping_release_is_degraded_before_its_deadline() -> None:
    pods = [
        pod("web-old-1", {"app": "web", "pod-template-hash": "old"}, "2026-01-01T00:00:00Z"),
        pod("web-new-1", {"app": "web", "pod-template-hash": "new"}, "2026-01-01T01:00:00Z", crashing=True),
    ]
    assert assess(ROLLING).status is HealthStatus.PROGRESSING
    health = assess_workload(ROLLING, pods)
    assert health == Health(HealthStatus.DEGRADED, "Pod/shop/web-new-1: container web: CrashLoopBackOff (restarts 3)")


def test_crashing_pods_of_a_replaced_revision_do_not_degrade_the_fix() -> None:
    pods = [
        pod("web-bad-1", {"app": "web", "pod-template-hash": "bad"}, "2026-01-01T00:00:00Z", crashing=True),
        pod("web-fix-1", {"app": "web", "pod-template-hash": "fix"}, "2026-01-01T01:00:00Z"),
    ]
    assert assess_workload(ROLLING, pods).status is HealthStatus.PROGRESSING


def replica_set(hash_: str, revision: str, owner_uid: str = "uid-web") -> dict[str, Any]:
    rs = obj("ReplicaSet", name=f"web-{hash_}", labels={"pod-template-hash": hash_})
    rs["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": revision}
    rs["metadata"]["ownerReferences"] = [{"kind": "Deployment", "name": "web", "uid": owner_uid}]
    return rs


def test_the_newest_replica_set_names_the_current_pods_even_when_created_in_the_same_second() -> None:
    deploy = {**ROLLING, "metadata": {**ROLLING["metadata"], "uid": "uid-web"}}
    same_second = "2026-01-01T00:00:00Z"
    pods = [
        pod("web-bad-1", {"app": "web", "pod-template-hash": "bad"}, same_second, crashing=True),
        pod("web-fix-1", {"app": "web", "pod-template-hash": "fix"}, same_second),
    ]
    sets = [replica_set("bad", "9"), replica_set("fix", "10"), replica_set("bad", "11", owner_uid="someone-else")]
    assert [p["metadata"]["name"] for p in current_pods(deploy, pods, sets)] == ["web-fix-1"]
    assert assess_workload(deploy, pods, sets).status is HealthStatus.PROGRESSING
    # Without ReplicaSets, a tie on the creation second counts both revisions: it errs towards reporting.
    assert assess_workload(deploy, pods).status is HealthStatus.DEGRADED
    # A cache a moment behind (the Deployment is at revision 12, its ReplicaSet not seen yet): no pod is current.
    ahead = {**deploy, "metadata": {**deploy["metadata"], "annotations": {"deployment.kubernetes.io/revision": "12"}}}
    assert current_pods(ahead, pods, sets) == []


def test_pods_are_not_judged_until_the_controller_observed_the_new_spec() -> None:
    pending = {**ROLLING, "metadata": {**ROLLING["metadata"], "generation": 3}}
    crashing = [pod("web-1", {"app": "web", "pod-template-hash": "h"}, "2026-01-01T00:00:00Z", crashing=True)]
    assert assess_workload(pending, crashing) == assess(pending)


def test_pods_outside_the_selector_namespace_or_being_deleted_are_ignored() -> None:
    crashing = {"crashing": True}
    pods = [
        pod("other-app", {"app": "other"}, "2026-01-01T02:00:00Z", **crashing),
        {**pod("web-elsewhere", {"app": "web"}, "2026-01-01T02:00:00Z", **crashing), "metadata": {"namespace": "x"}},
        pod("web-going", {"app": "web"}, "2026-01-01T02:00:00Z", deletionTimestamp="2026-01-01T03:00:00Z", **crashing),
    ]
    assert current_pods(ROLLING, pods) == []
    assert assess_workload(ROLLING, pods) == assess(ROLLING)


def test_statefulset_pods_follow_its_update_revision() -> None:
    sts = obj(
        "StatefulSet",
        {"replicas": 2, "selector": {"matchLabels": {"app": "db"}}},
        {"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "db-1", "updateRevision": "db-2"},
        generation=1,
        name="db",
    )
    older_but_current = pod(
        "db-0", {"app": "db", "controller-revision-hash": "db-2"}, "2026-01-01T00:00:00Z", crashing=True
    )
    newer_but_old = pod("db-1", {"app": "db", "controller-revision-hash": "db-1"}, "2026-01-01T05:00:00Z")
    assert current_pods(sts, [newer_but_old, older_but_current]) == [older_but_current]
    assert assess_workload(sts, [newer_but_old, older_but_current]).status is HealthStatus.DEGRADED


def test_a_workload_worse_than_its_pods_keeps_its_own_reason() -> None:
    deadline = {
        **ROLLING,
        "status": {
            "observedGeneration": 2,
            "conditions": [cond("Progressing", "False", "ProgressDeadlineExceeded", "timed out")],
        },
    }
    crashing = [pod("web-1", {"app": "web"}, "2026-01-01T00:00:00Z", crashing=True)]
    assert assess_workload(deadline, crashing).reason == "ProgressDeadlineExceeded: timed out"
    assert assess_workload(None, crashing).status is HealthStatus.MISSING


SELECTORS = [
    ({}, {"a": "1"}, False),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
]


@pytest.mark.parametrize(("selector", "labels", "expected"), SELECTORS)
def test_selects(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert selects(selector, labels) is expected


WEB = ObjectId("apps", "Deployment", "shop", "web")
DB = ObjectId("apps", "StatefulSet", "shop", "db")
CM = ObjectId("", "ConfigMap", "shop", "cfg")


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], Health(H)),
        ([(CM, Health(H)), (WEB, Health(H))], Health(H)),
        (
            [(CM, Health(H)), (WEB, Health(P, "1 of 2 replicas updated")), (DB, Health(S, "paused"))],
            Health(P, "Deployment.apps/shop/web: 1 of 2 replicas updated"),
        ),
        (
            [(WEB, Health(P, "rolling")), (DB, Health(D, "crash")), (CM, Health(M, "object does not exist"))],
            Health(D, "StatefulSet.apps/shop/db: crash"),
        ),
        ([(CM, Health(M)), (WEB, Health(M))], Health(M, "ConfigMap/shop/cfg")),
    ],
)
def test_aggregate_reports_the_worst_object_by_id(items: list[tuple[ObjectId, Health]], expected: Health) -> None:
    assert aggregate(items) == expected


def test_app_health_is_its_worst_object_with_workloads_judged_by_their_pods() -> None:
    crashing = [pod("web-1", {"app": "web", "pod-template-hash": "h"}, "2026-01-01T00:00:00Z", crashing=True)]
    live = {WEB: ROLLING, CM: obj("ConfigMap", name="cfg"), ObjectId("", "Service", "shop", "gone"): None}
    health = assess_app(live, crashing)
    assert health.status is HealthStatus.DEGRADED
    assert health.reason.startswith("Deployment.apps/shop/web: Pod/shop/web-1: container web: CrashLoopBackOff")
    assert assess_app(live).reason == "Service/shop/gone: object does not exist"
    assert assess_app({}) == Health(H)
