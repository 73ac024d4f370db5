"""Health: is a live object doing what it was asked to do? One read, no waiting.

Contract: pure, no I/O. ``assess`` looks at one live object as the API server returned it; ``assess_workload``
adds the evidence of the workload's pods, so a release whose pods crash-loop is Degraded at once rather than
after its progress deadline; ``aggregate`` folds many into the health of an app-env (the worst object wins,
and its id leads the reason). Callers gather the objects (a GET, or the watch-fed cache) and decide what to do
with the answer (requeue, roll back): waiting is never done here.

The rules follow ``kubectl rollout status`` and gitops-engine's ``pkg/health``: an object is Progressing while
its controller has not observed the latest generation or its replicas are not all updated and available.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gitsync.model import HEALTH_SEVERITY, HealthStatus, Json, ObjectId

POD_FAILURE_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container waiting reasons that no amount of waiting fixes: the release is Degraded now, not at its deadline."""


@dataclass(frozen=True, slots=True)
class Health:
    status: HealthStatus
    reason: str = ""

    def worse_than(self, other: Health) -> bool:
        return HEALTH_SEVERITY[self.status] > HEALTH_SEVERITY[other.status]


HEALTHY = Health(HealthStatus.HEALTHY)
MISSING = Health(HealthStatus.MISSING, "object does not exist")


def assess(obj: Json | None) -> Health:
    """The health of one live object (None: it does not exist). Kinds without a rule are Healthy once they exist."""
    if obj is None:
        return MISSING
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Health(HealthStatus.PROGRESSING, "being deleted")
    check = _CHECKS.get(str(obj.get("kind", "")))
    return check(obj) if check else HEALTHY


def assess_workload(workload: Json | None, pods: Iterable[Json]) -> Health:
    """The health of a workload together with its current pods, which the caller supplies unfiltered
    (e.g. every pod of the namespace from the cache).

    The pods considered are those the workload's selector matches and that belong to its newest revision
    (``status.updateRevision`` for a StatefulSet, otherwise the pod-template hash of the most recently created
    pod), so crashing pods of an old revision being replaced do not mark a fixed release Degraded.
    """
    own = assess(workload)
    if workload is None or HEALTH_SEVERITY[own.status] >= HEALTH_SEVERITY[HealthStatus.DEGRADED]:
        return own
    for pod in current_pods(workload, pods):
        pod_health = assess(pod)
        if pod_health.status is HealthStatus.DEGRADED:
            return Health(HealthStatus.DEGRADED, f"{ObjectId.of(pod)}: {pod_health.reason}")
    return own


WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
"""Kinds whose pods ``assess_workload`` inspects."""


def current_pods(workload: Json, pods: Iterable[Json]) -> list[Json]:
    """The pods of ``workload``'s newest revision that are not being deleted, in a stable order."""
    selector = (workload.get("spec") or {}).get("selector") or {}
    namespace = (workload.get("metadata") or {}).get("namespace", "")
    if not selector:
        return []
    mine = [
        pod
        for pod in pods
        if _meta(pod).get("namespace", "") == namespace
        and not _meta(pod).get("deletionTimestamp")
        and selects(selector, _meta(pod).get("labels") or {})
    ]
    revision_label = _REVISION_LABEL.get(str(workload.get("kind", "")))
    if revision_label and mine:
        wanted = (workload.get("status") or {}).get("updateRevision") if workload.get("kind") == "StatefulSet" else None
        if not wanted:
            newest = max(mine, key=lambda pod: str(_meta(pod).get("creationTimestamp", "")))
            wanted = (_meta(newest).get("labels") or {}).get(revision_label)
        if wanted:
            mine = [pod for pod in mine if (_meta(pod).get("labels") or {}).get(revision_label) == wanted]
    return sorted(mine, key=lambda pod: str(_meta(pod).get("name", "")))


_REVISION_LABEL = {
    "Deployment": "pod-template-hash",
    "StatefulSet": "controller-revision-hash",
    "DaemonSet": "controller-revision-hash",
}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a ``LabelSelector`` (matchLabels and matchExpressions) matches ``labels``; empty matches nothing,
    as the workload controllers treat it."""
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in expressions:
        key, operator, values = (
            expression.get("key", ""),
            expression.get("operator", ""),
            expression.get("values") or [],
        )
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def aggregate(healths: Iterable[tuple[ObjectId, Health]]) -> Health:
    """The worst health among objects (the first one on ties), its reason led by that object's id.

    All healthy (or nothing at all) is plain Healthy.
    """
    worst: tuple[ObjectId, Health] | None = None
    for obj_id, health in healths:
        if worst is None or health.worse_than(worst[1]):
            worst = (obj_id, health)
    if worst is None or worst[1].status is HealthStatus.HEALTHY:
        return HEALTHY
    obj_id, health = worst
    return Health(health.status, f"{obj_id}: {health.reason}" if health.reason else str(obj_id))


# --- one rule per kind -----------------------------------------------------------------------------------------


def _meta(obj: Json) -> Json:
    return obj.get("metadata") or {}


def _spec(obj: Json) -> Json:
    return obj.get("spec") or {}


def _status(obj: Json) -> Json:
    return obj.get("status") or {}


def _condition(obj: Json, kind: str) -> Json | None:
    for condition in _status(obj).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def _condition_text(condition: Json) -> str:
    reason, message = condition.get("reason", ""), condition.get("message", "")
    return f"{reason}: {message}" if reason and message else reason or message


def _generation_pending(obj: Json) -> Health | None:
    generation = _meta(obj).get("generation")
    observed = _status(obj).get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return Health(HealthStatus.PROGRESSING, "waiting for the controller to observe the new generation")
    return None


def _deployment(obj: Json) -> Health:
    if _spec(obj).get("paused"):
        return Health(HealthStatus.SUSPENDED, "rollout is paused")
    pending = _generation_pending(obj)
    if pending:
        return pending
    progressing = _condition(obj, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(HealthStatus.DEGRADED, _condition_text(progressing))
    status = _status(obj)
    wanted = int(_spec(obj).get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < wanted:
        return Health(HealthStatus.PROGRESSING, f"{updated} of {wanted} replicas updated")
    if total > updated:
        return Health(HealthStatus.PROGRESSING, f"{total - updated} old replicas pending termination")
    if available < updated:
        return Health(HealthStatus.PROGRESSING, f"{available} of {updated} updated replicas available")
    return HEALTHY


def _statefulset(obj: Json) -> Health:
    pending = _generation_pending(obj)
    if pending:
        return pending
    spec, status = _spec(obj), _status(obj)
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return HEALTHY
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0))
    if ready < wanted:
        return Health(HealthStatus.PROGRESSING, f"{ready} of {wanted} replicas ready")
    partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
    if partition > 0:
        updated = int(status.get("updatedReplicas", 0))
        if updated < wanted - partition:
            return Health(HealthStatus.PROGRESSING, f"{updated} of {wanted - partition} partitioned replicas updated")
        return HEALTHY
    if status.get("updateRevision") != status.get("currentRevision"):
        updated = int(status.get("updatedReplicas", 0))
        return Health(HealthStatus.PROGRESSING, f"{updated} of {wanted} replicas updated")
    return HEALTHY


def _daemonset(obj: Json) -> Health:
    pending = _generation_pending(obj)
    if pending:
        return pending
    if (_spec(obj).get("updateStrategy") or {}).get("type") == "OnDelete":
        return HEALTHY
    status = _status(obj)
    wanted = int(status.get("desiredNumberScheduled", 0))
    updated = int(status.get("updatedNumberScheduled", 0))
    available = int(status.get("numberAvailable", 0))
    if updated < wanted:
        return Health(HealthStatus.PROGRESSING, f"{updated} of {wanted} pods updated")
    if available < wanted:
        return Health(HealthStatus.PROGRESSING, f"{available} of {wanted} pods available")
    return HEALTHY


def _replicaset(obj: Json) -> Health:
    pending = _generation_pending(obj)
    if pending:
        return pending
    failure = _condition(obj, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        return Health(HealthStatus.DEGRADED, _condition_text(failure))
    wanted = int(_spec(obj).get("replicas", 1))
    available = int(_status(obj).get("availableReplicas", 0))
    if available < wanted:
        return Health(HealthStatus.PROGRESSING, f"{available} of {wanted} replicas available")
    return HEALTHY


def _pod(obj: Json) -> Health:
    status = _status(obj)
    for container in (*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in POD_FAILURE_REASONS:
            text = (
                f"container {container.get('name')}: {waiting['reason']} (restarts {container.get('restartCount', 0)})"
            )
            message = waiting.get("message")
            return Health(HealthStatus.DEGRADED, f"{text}: {message}" if message else text)
    phase = status.get("phase", "Pending")
    if phase == "Failed":
        return Health(HealthStatus.DEGRADED, status.get("message") or status.get("reason") or "pod failed")
    if phase == "Succeeded":
        return HEALTHY
    if phase == "Running":
        ready = _condition(obj, "Ready")
        if ready and ready.get("status") == "True":
            return HEALTHY
        return Health(HealthStatus.PROGRESSING, "running, not ready")
    return Health(HealthStatus.PROGRESSING, f"pod is {phase}")


def _job(obj: Json) -> Health:
    failed = _condition(obj, "Failed")
    if failed and failed.get("status") == "True":
        return Health(HealthStatus.DEGRADED, _condition_text(failed) or "job failed")
    complete = _condition(obj, "Complete")
    if complete and complete.get("status") == "True":
        return HEALTHY
    if _spec(obj).get("suspend"):
        return Health(HealthStatus.SUSPENDED, "job is suspended")
    return Health(HealthStatus.PROGRESSING, f"job running ({int(_status(obj).get('active', 0))} active)")


def _service(obj: Json) -> Health:
    if _spec(obj).get("type") == "LoadBalancer" and not (_status(obj).get("loadBalancer") or {}).get("ingress"):
        return Health(HealthStatus.PROGRESSING, "waiting for a load balancer address")
    return HEALTHY


def _pvc(obj: Json) -> Health:
    phase = _status(obj).get("phase", "Pending")
    if phase == "Bound":
        return HEALTHY
    if phase == "Lost":
        return Health(HealthStatus.DEGRADED, "claim lost its volume")
    return Health(HealthStatus.PROGRESSING, f"claim is {phase}")


def _crd(obj: Json) -> Health:
    names = _condition(obj, "NamesAccepted")
    if names and names.get("status") == "False":
        return Health(HealthStatus.DEGRADED, _condition_text(names))
    established = _condition(obj, "Established")
    if established and established.get("status") == "True":
        return HEALTHY
    return Health(HealthStatus.PROGRESSING, "waiting to be established")


def _namespace(obj: Json) -> Health:
    phase = _status(obj).get("phase", "Active")
    if phase == "Terminating":
        return Health(HealthStatus.PROGRESSING, "namespace is terminating")
    return HEALTHY


def _hpa(obj: Json) -> Health:
    conditions = _status(obj).get("conditions") or []
    if not conditions:
        return Health(HealthStatus.PROGRESSING, "waiting for the autoscaler to report")
    for condition in conditions:
        if condition.get("type") in ("AbleToScale", "ScalingActive") and condition.get("status") == "False":
            if condition.get("reason") == "ScalingDisabled":
                return Health(HealthStatus.SUSPENDED, _condition_text(condition))
            return Health(HealthStatus.DEGRADED, _condition_text(condition))
    return HEALTHY


_CHECKS: dict[str, Callable[[Json], Health]] = {
    "Deployment": _deployment,
    "StatefulSet": _statefulset,
    "DaemonSet": _daemonset,
    "ReplicaSet": _replicaset,
    "Pod": _pod,
    "Job": _job,
    "Service": _service,
    "PersistentVolumeClaim": _pvc,
    "CustomResourceDefinition": _crd,
    "Namespace": _namespace,
    "HorizontalPodAutoscaler": _hpa,
}


__all__ = [
    "HEALTHY",
    "MISSING",
    "POD_FAILURE_REASONS",
    "WORKLOAD_KINDS",
    "Health",
    "aggregate",
    "assess",
    "assess_workload",
    "current_pods",
    "selects",
]
