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

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitsync.model import HEALTH_SEVERITY, LABEL_TRACK, HealthStatus, Json, ObjectId
from gitsync.ports import Cluster, LiveReader, WorkloadReader

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
    """The health of one live object (None: it does not exist).

    Kinds without a rule of their own (custom resources, mostly) are read kstatus-style (``_conditions``): a
    controller that has not observed the latest generation, or reports ``Reconciling``, ``Stalled``, or ``Ready``
    / ``Available`` False, says so; an object with none of that is Healthy once it exists.
    """
    if obj is None:
        return MISSING
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Health(HealthStatus.PROGRESSING, "being deleted")
    check = _CHECKS.get(str(obj.get("kind", "")), _conditions)
    return check(obj)


def assess_workload(workload: Json | None, pods: Iterable[Json], replica_sets: Iterable[Json] = ()) -> Health:
    """The health of a workload together with its current pods, which the caller supplies unfiltered
    (e.g. every pod and ReplicaSet of the namespace from the cache).

    Only pods of the workload's newest revision count (see ``current_pods``), so crashing pods of a bad revision
    that a fix is replacing do not mark the fix Degraded and make a rollout abort it.
    """
    own = assess(workload)
    if workload is None or own.status is HealthStatus.DEGRADED or _generation_pending(workload):
        return own  # until the controller has seen the new spec, its pods cannot be told apart by revision
    for pod in current_pods(workload, pods, replica_sets):
        pod_health = assess(pod)
        if pod_health.status is HealthStatus.DEGRADED:
            return Health(HealthStatus.DEGRADED, f"{ObjectId.of(pod)}: {pod_health.reason}")
    return own


WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
"""Kinds whose pods ``assess_workload`` inspects."""


def current_pods(workload: Json, pods: Iterable[Json], replica_sets: Iterable[Json] = ()) -> list[Json]:
    """The pods of ``workload``'s newest revision that are not being deleted, in name order.

    The newest revision is the StatefulSet's ``status.updateRevision``, or the pod-template hash of the
    Deployment's ReplicaSet with the highest ``deployment.kubernetes.io/revision``. Without those (no
    ReplicaSets given, a DaemonSet), it is the revision of the most recently created pods; creation times have
    one-second resolution, so every revision created in that second counts (a tie errs towards reporting).
    ReplicaSets older than the Deployment's own revision (a cache a moment behind) make no pod current.
    """
    selector = _spec(workload).get("selector") or {}
    namespace = _meta(workload).get("namespace", "")
    mine = [
        pod
        for pod in pods
        if _meta(pod).get("namespace", "") == namespace
        and not _meta(pod).get("deletionTimestamp")
        and selects(selector, _labels(pod))
    ]
    label = _REVISION_LABEL.get(str(workload.get("kind", "")))
    if label and mine:
        wanted = _newest_revision(workload, replica_sets)
        revisions: set[str | None]
        if wanted:
            revisions = {wanted}
        else:
            newest = max(str(_meta(pod).get("creationTimestamp", "")) for pod in mine)
            revisions = {_labels(p).get(label) for p in mine if str(_meta(p).get("creationTimestamp", "")) == newest}
        mine = [pod for pod in mine if _labels(pod).get(label) in revisions]
    return sorted(mine, key=lambda pod: str(_meta(pod).get("name", "")))


def _newest_revision(workload: Json, replica_sets: Iterable[Json]) -> str:
    if workload.get("kind") == "StatefulSet":
        return str(_status(workload).get("updateRevision") or "")
    if workload.get("kind") != "Deployment":
        return ""
    uid = _meta(workload).get("uid")
    owned = [
        rs
        for rs in replica_sets
        if uid and any(ref.get("uid") == uid for ref in _meta(rs).get("ownerReferences") or [])
    ]
    if not owned:
        return ""
    newest = max(owned, key=_revision)
    if _revision(newest) < _revision(workload):
        return _NOT_SEEN_YET  # the new ReplicaSet has not reached the caller's copy yet
    return str(_labels(newest).get("pod-template-hash") or "")


def _revision(obj: Json) -> int:
    raw = (_meta(obj).get("annotations") or {}).get(_REVISION, "0")
    return int(raw) if str(raw).isdigit() else 0


_NOT_SEEN_YET = "\0not-seen-yet"
"""A revision no pod carries: the caller's ReplicaSets are older than the Deployment, so no pod is current."""


_REVISION = "deployment.kubernetes.io/revision"
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


def assess_app(
    live: Mapping[ObjectId, Json | None],
    pods: Sequence[Json] = (),
    replica_sets: Sequence[Json] = (),
    finished: Collection[ObjectId] = (),
) -> Health:
    """The health of an app-env: each desired object as read (None when missing), workloads with their pods
    (``pods`` and ``replica_sets`` of the app's namespaces, unfiltered), folded by ``aggregate``; ``finished`` as
    for ``read_health``."""

    def one(obj_id: ObjectId, obj: Json | None) -> Health:
        if obj is None and obj_id in finished:
            return HEALTHY
        return assess_workload(obj, pods, replica_sets) if obj_id.kind in WORKLOAD_KINDS else assess(obj)

    return aggregate((obj_id, one(obj_id, obj)) for obj_id, obj in sorted(live.items()))


# --- one rule per kind -----------------------------------------------------------------------------------------


def _meta(obj: Json) -> Json:
    return obj.get("metadata") or {}


def _labels(obj: Json) -> Json:
    return _meta(obj).get("labels") or {}


def _spec(obj: Json) -> Json:
    return obj.get("spec") or {}


def _status(obj: Json) -> Json:
    return obj.get("status") or {}


def pod_ready(pod: Json) -> bool:
    """Whether the pod's ``Ready`` condition is True: it passes its readiness probes and Services send it traffic."""
    ready = _condition(pod, "Ready")
    return ready is not None and ready.get("status") == "True"


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
    # A canary Deployment is paused by the rollout that drives it (its ReplicaSet is the executor's): not Suspended.
    if _spec(obj).get("paused") and _labels(obj).get(LABEL_TRACK) != "canary":
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
        if pod_ready(obj):
            return HEALTHY
        return Health(HealthStatus.PROGRESSING, "running, not ready")
    return Health(HealthStatus.PROGRESSING, f"pod is {phase}")


def _cronjob(obj: Json) -> Health:
    """Suspended when suspended; Degraded when the last scheduled run has not succeeded and none is running (as
    Argo CD reads it); otherwise Healthy, since a CronJob between runs is doing what it was asked to do."""
    if _spec(obj).get("suspend"):
        return Health(HealthStatus.SUSPENDED, "cronjob is suspended")
    status = _status(obj)
    scheduled, succeeded = str(status.get("lastScheduleTime") or ""), str(status.get("lastSuccessfulTime") or "")
    if status.get("active"):
        return HEALTHY
    if scheduled and succeeded < scheduled:  # RFC 3339 UTC timestamps compare as text
        return Health(HealthStatus.DEGRADED, f"the run scheduled at {scheduled} did not succeed")
    return HEALTHY


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


def _ingress(obj: Json) -> Health:
    """Healthy once the ingress controller published an address (``kubectl get ingress`` ADDRESS), as Argo CD
    reads it: without one, no traffic reaches the app through it."""
    if (_status(obj).get("loadBalancer") or {}).get("ingress"):
        return HEALTHY
    return Health(HealthStatus.PROGRESSING, "waiting for the ingress controller to publish an address")


def _pdb(obj: Json) -> Health:
    """kstatus: Progressing until the controller has observed the budget and enough pods are healthy for it."""
    pending = _generation_pending(obj)
    if pending:
        return pending
    status = _status(obj)
    healthy, wanted = int(status.get("currentHealthy", 0)), int(status.get("desiredHealthy", 0))
    if healthy < wanted:
        return Health(HealthStatus.PROGRESSING, f"{healthy} of {wanted} pods the budget needs are healthy")
    return HEALTHY


def _apiservice(obj: Json) -> Health:
    """An aggregated API is Healthy when its ``Available`` condition is True; False is Degraded (the backing
    Service does not answer, so every request for the group fails, discovery included)."""
    available = _condition(obj, "Available")
    if available is None:
        return Health(HealthStatus.PROGRESSING, "waiting for the Available condition")
    if available.get("status") == "True":
        return HEALTHY
    return Health(HealthStatus.DEGRADED, _condition_text(available) or "not available")


def _conditions(obj: Json) -> Health:
    """kstatus's generic rule for kinds without their own: observedGeneration behind the generation or
    ``Reconciling`` True is Progressing, ``Stalled`` True is Degraded, ``Ready`` (or ``Available``) False is
    Progressing; anything else that exists is Healthy."""
    if "observedGeneration" in _status(obj):
        pending = _generation_pending(obj)
        if pending:
            return pending
    stalled = _condition(obj, "Stalled")
    if stalled and stalled.get("status") == "True":
        return Health(HealthStatus.DEGRADED, _condition_text(stalled) or "stalled")
    reconciling = _condition(obj, "Reconciling")
    if reconciling and reconciling.get("status") == "True":
        return Health(HealthStatus.PROGRESSING, _condition_text(reconciling) or "reconciling")
    for kind in ("Ready", "Available"):
        condition = _condition(obj, kind)
        if condition and condition.get("status") == "False":
            return Health(HealthStatus.PROGRESSING, f"not {kind}: {_condition_text(condition)}".rstrip(": "))
    return HEALTHY


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
    "CronJob": _cronjob,
    "Ingress": _ingress,
    "PodDisruptionBudget": _pdb,
    "APIService": _apiservice,
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
    "Listed",
    "aggregate",
    "assess",
    "assess_app",
    "assess_workload",
    "current_pods",
    "pod_ready",
    "read_health",
    "selects",
]


class Listed:
    """A ``WorkloadReader`` without a watch cache (one-shot commands, an agent without ``driftWatch``): a GET per
    object, and the Pods and ReplicaSets of a namespace listed once for as long as this reader lives (one reconcile)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._lists: dict[tuple[str, str], list[Json]] = {}

    def get(self, ref: ObjectId) -> Json | None:
        return self._cluster.get(ref)

    def pods(self, namespace: str) -> list[Json]:
        return self._listed("Pod", namespace)

    def replica_sets(self, namespace: str) -> list[Json]:
        return self._listed("ReplicaSet", namespace)

    def _listed(self, kind: str, namespace: str) -> list[Json]:
        key = (kind, namespace)
        if key not in self._lists:
            group = "apps" if kind == "ReplicaSet" else ""
            self._lists[key] = list(self._cluster.list(group, kind, namespace).items)
        return self._lists[key]


def read_health(
    refs: Sequence[ObjectId],
    namespace: str,
    workloads: WorkloadReader,
    others: LiveReader | None = None,
    *,
    written: Collection[ObjectId] = (),
    finished: Collection[ObjectId] = (),
) -> Health:
    """The health of the objects ``refs``, read once. Workloads through ``workloads``, judged with the Pods and
    ReplicaSets of their namespace: the watch cache (no request; gitsync's own writes reach it at once, so a
    Deployment just applied reads as not yet observed, never as its old healthy self) or ``Listed``. Other objects
    through ``others`` when given (a list taken for the plan), else ``workloads``; but the objects in ``written``
    (those the sync just created or changed) always through ``workloads``: a list taken before the apply holds
    them as they were, so an object the sync re-created after someone deleted it would read as missing.
    ``finished``: Jobs that run once (``Manifest.runs_once``) the plan found applied: absent, they finished and
    their TTL removed them, which is healthy."""
    healths: list[tuple[ObjectId, Health]] = []
    for ref in refs:
        workload = ref.kind in WORKLOAD_KINDS - {"Job"}
        live = (workloads if workload or others is None or ref in written else others).get(ref)
        if workload and live is not None:
            where = ref.namespace or namespace
            healths.append((ref, assess_workload(live, workloads.pods(where), workloads.replica_sets(where))))
        else:
            healths.append((ref, HEALTHY if live is None and ref in finished else assess(live)))
    return aggregate(healths)
