"""Waiting on workloads: a watch event ends a rollout's wait before its timer, a health wait backs off, and changes
nothing waits for wake nobody. The real queue and ``Wakeups`` with a fake clock and a dict for the watch cache."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from gitsync.cache import Change
from gitsync.health import Health
from gitsync.history import Result
from gitsync.model import AppEnv, HealthStatus, Json, Manifest, ObjectId
from gitsync.ports import WatchEventType
from gitsync.reconcile import RolloutStep
from gitsync.result import Kind, ReconcileResult
from gitsync.runtime.queue import Outcome, ReconcileQueue
from gitsync.runtime.wakeups import ON_CHANGE_FALLBACK, PROGRESSING_LONGEST, Wakeups

KEY = AppEnv("web", "staging")
NS = "shop"
STABLE = ObjectId("apps", "Deployment", NS, "web")
CANARY = ObjectId("apps", "Deployment", NS, "web-canary")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class Cache(dict[ObjectId, Json]):
    def get(self, ref: ObjectId, default: Any = None) -> Json | None:  # type: ignore[override]
        return super().get(ref, default)


def deployment(name: str, ready: int, replicas: int = 4, generation: int = 1) -> Json:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": replicas,
        },
    }


def pod(name: str, replica_set: str, *, ready: bool = False, waiting: str = "") -> Json:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "ownerReferences": [{"kind": "ReplicaSet", "name": replica_set, "controller": True}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "app", "state": state, "restartCount": 3 if waiting else 0}],
        },
    }


def change(obj: Json, kind: WatchEventType = WatchEventType.MODIFIED) -> Change:
    return Change(kind, ObjectId.of(obj), obj)


def result(clock: Clock, rollout: RolloutStep | None, health: HealthStatus, requeue: float | None) -> ReconcileResult:
    body = deployment("web", 4)
    rendered = SimpleNamespace(namespace=NS, manifests=(Manifest(STABLE, body, "t"),))
    return ReconcileResult(
        key=KEY,
        kind=Kind.RELEASE,
        reasons=(),
        started_at=clock.now(),
        finished_at=clock.now(),
        outcome=Result.PROGRESSING,
        rendered=rendered,  # type: ignore[arg-type]
        health=Health(health),
        rollout=rollout,
        requeue_after=requeue,
    )


def setup() -> tuple[ReconcileQueue, Wakeups, Clock, Cache]:
    clock = Clock()
    queue = ReconcileQueue(clock, random.Random(1))
    cache = Cache()
    return queue, Wakeups(queue.wake, cache, clock.now), clock, cache


def waiting_rollout() -> RolloutStep:
    return RolloutStep(requeue_after=1.0, serving=frozenset({STABLE, CANARY}), phase="Progressing", on_change=True)


def test_a_rollout_waiting_for_its_pods_runs_when_the_watch_sees_them_ready_not_at_its_timer() -> None:
    queue, wakeups, clock, _ = setup()
    queue.add(KEY)
    item = queue.get(timeout=0)
    assert item is not None
    clock.t += 1  # changes seen before the reconcile started do not count
    delay = wakeups.requeue(result(clock, waiting_rollout(), HealthStatus.PROGRESSING, 1.0))
    assert delay == ON_CHANGE_FALLBACK, "the timer only backs the watch up"
    queue.done(item, Outcome.REQUEUE, retry_after=delay)
    assert queue.get(timeout=0) is None
    wakeups.on_change(change(pod("web-5d8f9c7b6d-x1", "web-5d8f9c7b6d", ready=True)))
    woken = queue.get(timeout=0)
    assert woken is not None and woken.key == KEY


def test_a_change_while_the_reconcile_runs_makes_its_requeue_immediate() -> None:
    queue, wakeups, clock, _ = setup()
    queue.add(KEY)
    item = queue.get(timeout=0)
    assert item is not None
    started = result(clock, waiting_rollout(), HealthStatus.PROGRESSING, 1.0)
    clock.t += 0.1
    wakeups.on_change(change(deployment("web-canary", ready=1)))  # before the wait was registered
    assert wakeups.requeue(started) == 0.0


def test_changes_a_wait_does_not_depend_on_wake_nobody() -> None:
    _queue, wakeups, clock, _ = setup()
    woken: list[AppEnv] = []
    wakeups = Wakeups(woken.append, Cache(), clock.now)
    clock.t += 1
    wakeups.requeue(result(clock, waiting_rollout(), HealthStatus.PROGRESSING, 1.0))
    wakeups.on_change(change(deployment("web-canary", ready=1)))
    wakeups.on_change(change(deployment("web-canary", ready=1)))  # the same counts again
    wakeups.on_change(change(deployment("other", ready=0)))  # another workload
    assert woken == [KEY]


def test_a_health_wait_backs_off_and_ends_when_every_workload_settled_or_a_pod_fails() -> None:
    _queue, wakeups, clock, cache = setup()
    woken: list[AppEnv] = []
    wakeups = Wakeups(woken.append, cache, clock.now)
    delays = [wakeups.requeue(result(clock, None, HealthStatus.PROGRESSING, 2.0)) for _ in range(6)]
    assert delays == [2.0, 4.0, 8.0, 16.0, PROGRESSING_LONGEST, PROGRESSING_LONGEST]
    cache[STABLE] = deployment("web", ready=2)
    wakeups.on_change(change(cache[STABLE]))
    assert woken == [], "still rolling out"
    wakeups.on_change(change(pod("web-5d8f9c7b6d-x1", "web-5d8f9c7b6d", waiting="CrashLoopBackOff")))
    assert woken == [KEY], "a failing pod ends the wait"
    cache[STABLE] = deployment("web", ready=4)
    wakeups.on_change(change(cache[STABLE]))
    assert woken == [KEY, KEY], "every workload settled"
    # Settled: the next wait starts from the shortest again.
    assert wakeups.requeue(result(clock, None, HealthStatus.HEALTHY, None)) is None
    assert wakeups.requeue(result(clock, None, HealthStatus.PROGRESSING, 2.0)) == 2.0


def test_a_wake_never_shortens_a_backoff_after_a_failure() -> None:
    queue, _wakeups, _clock, _ = setup()
    queue.add(KEY)
    item = queue.get(timeout=0)
    assert item is not None
    queue.done(item, Outcome.TRANSIENT)
    queue.wake(KEY)
    assert queue.get(timeout=0) is None
