"""Waiting for workloads: watch events end the wait, the timer only backs it up.

Contract: part of the agent's scheduling; reads only the watch cache, no request. An app-env whose reconcile asks
to be looked at again because of its workloads registers them here (``requeue``), and ``on_change`` (a
``WatchCache`` subscriber, on the watch thread) wakes it (``ReconcileQueue.wake``) when a change it waits for
arrives:

- a rollout (a canary or blue-green step, ``RolloutProgress.serving``) is woken by any change of its Deployments'
  status or its pods' readiness or failures, so a step ends when the watch says the pods are Ready, not at the next
  poll. While it waits for the cluster (``RolloutProgress.on_change``) its timer is only a fallback,
  ``ON_CHANGE_FALLBACK``; a timed wait (a pause, an analysis interval) keeps its exact time;
- an app whose Deployments roll out by themselves (health Progressing) is woken once every one of them has
  settled (no longer Progressing, read from the cache) or one of their pods fails, and its timer backs off from
  ``PROGRESSING_REQUEUE`` doubling to ``PROGRESSING_LONGEST``: a release of 300 Deployments costs a few
  reconciles, not one every two seconds while the controllers work.

Changes that alter nothing a wait depends on (a status rewrite with the same counts, gitsync's own spec writes)
wake nobody. Without a watch cache nothing wakes: the timers apply as the reconcile returned them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from gitsync.cache import Change
from gitsync.health import WORKLOAD_KINDS, assess, pod_ready
from gitsync.history import Result
from gitsync.model import AppEnv, HealthStatus, Json, ObjectId
from gitsync.ports import LiveReader, WatchEventType
from gitsync.reconcile import PROGRESSING_REQUEUE
from gitsync.result import Kind, ReconcileResult

__all__ = ["ON_CHANGE_FALLBACK", "PROGRESSING_LONGEST", "Wakeups"]

ON_CHANGE_FALLBACK = 5.0
"""Seconds before a rollout waiting for its pods is looked at anyway, should a watch event go missing."""
PROGRESSING_LONGEST = 30.0
"""The longest wait between looks at workloads rolling out by themselves (the watch wakes it when they settle)."""

_Name = tuple[str, str]
"""(namespace, workload name)"""


class Wakeups:
    """Which app-envs wait for which workloads; thread-safe."""

    def __init__(self, wake: Callable[[AppEnv], None], reader: LiveReader | None, now: Callable[[], float]) -> None:
        """``wake``: ``ReconcileQueue.wake``; ``reader``: the watch cache the events come from (None: no watch,
        the timers stand as returned); ``now``: the clock reconciles are timed by."""
        self._wake = wake
        self._reader = reader
        self._now = now
        self._changed: dict[_Name, float] = {}
        """When a workload (or one of its pods) last changed: a change that came after a reconcile read the cache
        but before it registered its wait (``requeue``) ends that wait at once."""
        self._lock = threading.Lock()
        self._rollouts: dict[_Name, set[AppEnv]] = {}
        self._settling: dict[_Name, set[AppEnv]] = {}
        self._refs: dict[AppEnv, tuple[ObjectId, ...]] = {}
        self._waits: dict[AppEnv, int] = {}
        """Consecutive health waits of an app-env, for the backoff."""
        self._seen: dict[ObjectId, tuple[object, ...]] = {}

    def requeue(self, result: ReconcileResult) -> float | None:
        """Register what ``result`` waits for, and return its requeue (stretched or backed off as above)."""
        key, delay = result.key, result.requeue_after
        rollout, rendered, health = result.rollout, result.rendered, result.health
        self.forget(key)
        if delay is None or result.kind is not Kind.RELEASE or rendered is None or self._reader is None:
            self.forget(key, waits=True)
            return delay
        if rollout is not None and rollout.requeue_after is not None and rollout.serving:
            self.forget(key, waits=True)
            names = self._register(self._rollouts, key, rollout.serving, rendered.namespace)
            with self._lock:
                missed = any(self._changed.get(name, float("-inf")) >= result.started_at for name in names)
            if missed:
                return 0.0
            return max(delay, ON_CHANGE_FALLBACK) if rollout.on_change else delay
        if result.outcome is Result.PROGRESSING and health is not None and health.status is HealthStatus.PROGRESSING:
            refs = [m.id for m in rendered.manifests if m.id.kind in WORKLOAD_KINDS - {"Job"}]
            self._register(self._settling, key, refs, rendered.namespace)
            with self._lock:
                waits = self._waits[key] = self._waits.get(key, -1) + 1
            return float(min(PROGRESSING_REQUEUE * 2**waits, PROGRESSING_LONGEST))
        self.forget(key, waits=True)
        return delay

    def forget(self, key: AppEnv, *, waits: bool = False) -> None:
        """Stop waking ``key`` (its reconcile no longer waits for workloads); ``waits``: reset its backoff too."""
        with self._lock:
            for table in (self._rollouts, self._settling):
                for name in [n for n, keys in table.items() if key in keys]:
                    table[name].discard(key)
                    if not table[name]:
                        del table[name]
            self._refs.pop(key, None)
            if waits:
                self._waits.pop(key, None)

    def on_change(self, change: Change) -> None:
        """A ``WatchCache`` subscriber: wake the app-envs this change ends the wait of."""
        ref = change.id
        if ref.kind not in ("Pod", *WORKLOAD_KINDS):
            return
        obj = change.object
        deleted = change.type is WatchEventType.DELETED
        fingerprint = _pod_fingerprint(obj, deleted) if ref.kind == "Pod" else _fingerprint(obj)
        with self._lock:
            if self._seen.get(ref) == fingerprint:
                return
            self._seen[ref] = fingerprint
            if deleted:
                self._seen.pop(ref, None)
            name = (ref.namespace, _workload_of(obj) if ref.kind == "Pod" else ref.name)
            self._changed[name] = self._now()
            rollouts = set(self._rollouts.get(name, ()))
            settling = set(self._settling.get(name, ()))
            refs = {key: self._refs.get(key, ()) for key in settling}
        woken = rollouts
        if ref.kind == "Pod":
            woken |= settling if assess(obj).status is HealthStatus.DEGRADED else set()
        else:
            woken |= {key for key in settling if self._settled(refs[key])}
        for key in woken:
            self._wake(key)

    def _register(
        self, table: dict[_Name, set[AppEnv]], key: AppEnv, refs: Iterable[ObjectId], namespace: str
    ) -> list[_Name]:
        refs = tuple(refs)
        names = [(ref.namespace or namespace, ref.name) for ref in refs]
        with self._lock:
            self._refs[key] = refs
            for name in names:
                table.setdefault(name, set()).add(key)
        return names

    def _settled(self, refs: Iterable[ObjectId]) -> bool:
        assert self._reader is not None
        return all(assess(self._reader.get(ref)).status is not HealthStatus.PROGRESSING for ref in refs)


def _workload_of(pod: Json) -> str:
    """The workload a pod belongs to, by name: its ReplicaSet's name without the pod-template hash
    (``web-5d8f9c7b6d`` -> ``web``; the canary's ReplicaSet is named so too), or its StatefulSet or DaemonSet."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("controller"):
            name = str(owner.get("name", ""))
            return name.rsplit("-", 1)[0] if owner.get("kind") == "ReplicaSet" else name
    return ""


def _fingerprint(obj: Json) -> tuple[object, ...]:
    """What of a workload a wait depends on: its spec's generation as observed, its counts, its conditions."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    conditions = tuple(
        sorted((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or [])
    )
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    counts = tuple(status.get(k) for k in ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas"))
    return observed, spec.get("replicas"), spec.get("paused"), counts, tuple(conditions)


def _pod_fingerprint(pod: Json, deleted: bool) -> tuple[object, ...]:
    """What of a pod a wait depends on: Ready, its phase, why a container waits, its restarts, being deleted."""
    status = pod.get("status") or {}
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    waiting = tuple(str(((c.get("state") or {}).get("waiting") or {}).get("reason", "")) for c in containers)
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    deleting = deleted or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    return pod_ready(pod), status.get("phase"), waiting, restarts, deleting
