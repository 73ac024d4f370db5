"""Drift: a managed object whose live state no longer matches what gitsync applied, noticed within seconds.

Detection re-plans one object the way the plan stage does (DESIGN.md invariant), with the plan's own
``normalise``, ignore annotation and force rule: a server-side apply dry-run of the desired body as field manager
``gitsync``, compared with the live object. Drift is either a conflict (another manager took over fields gitsync
declares: the ``kubectl edit`` case, with the fields and the manager), or a difference (a declared field changed
or vanished without a change of owner), or the object is gone. Fields gitsync does not declare (an HPA's
``replicas``) never show up in the dry-run, so they are not drift.

The seam, for the long-running agent:
- ``DriftWatcher`` is started per app-env with the bodies gitsync last applied (the rendered manifests, or what a
  rollout step applied); the cluster's ``DriftHub`` (one subscription to the ``WatchCache``, one thread, whatever
  the number of app-envs) routes it the changes of its objects, and it checks an object only when its spec or
  metadata changed (status-only updates cost nothing). It reports every drift (log ``drift.detected``, the metrics
  below, a Kubernetes Event ``DriftDetected`` on the object) and hands it to ``on_drift``, where the agent
  enqueues a reconcile of the key (triggers only enqueue).
- Reverting is not the watcher's job: with self-heal, the agent's reconcile of the key (a drift trigger) takes the
  declared fields back through the one sync path, forcing only what gitsync declares (an HPA's ``replicas`` is never
  touched). A controller fighting gitsync must not turn into a reconcile loop, so at most ``heal_limit`` drifts of
  one object per ``heal_window`` seconds are handed on; more are reported and logged ``drift.heal_deferred``.
- The metric objects are module globals in the default registry; the agent's ``/metrics`` serves them as is.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from gitsync import log as logging
from gitsync.cache import Change, WatchCache
from gitsync.errors import FieldConflictError, GitsyncError
from gitsync.events import Reason
from gitsync.model import MANAGER, AppEnv, Json, Manifest, ObjectId
from gitsync.normalise import ignored_pointers, normalise
from gitsync.plan import wants_force
from gitsync.ports import Clock, Cluster, WatchEventType

__all__ = [
    "DRIFT_DETECTED",
    "DRIFT_HEALED",
    "DRIFT_OBJECTS",
    "Drift",
    "DriftHub",
    "DriftWatcher",
    "detect",
]

log = logging.get("gitsync.drift")

DRIFT_OBJECTS = Gauge(
    "gitsync_drift_objects", "Managed objects currently drifted from what gitsync applied", ["app", "env"]
)
DRIFT_DETECTED = Counter(
    "gitsync_drift_detected", "Drift detections (one per object change found drifted)", ["app", "env"]
)
DRIFT_HEALED = Counter("gitsync_drift_healed", "Drifted objects reverted by self-heal", ["app", "env"])


@dataclass(frozen=True, slots=True)
class Drift:
    """One drifted object. ``fields`` are paths like ``.spec.replicas``; ``managers`` changed them, when known."""

    key: AppEnv
    id: ObjectId
    fields: tuple[str, ...] = ()
    managers: tuple[str, ...] = ()
    missing: bool = False

    @property
    def summary(self) -> str:
        if self.missing:
            return f"{self.id}: deleted outside gitsync"
        by = f" by {', '.join(self.managers)}" if self.managers else ""
        return f"{self.id}: {', '.join(self.fields) or 'fields'} changed{by}"


# --- deciding ---------------------------------------------------------------------------------------------------


def detect(key: AppEnv, manifest: Manifest, live: Json | None, cluster: Cluster) -> Drift | None:
    """Re-plan one object: None when the live object is what applying ``manifest`` would leave (no drift).

    ``manifest`` must be what gitsync last applied: the live state cannot tell gitsync's own newer write from an
    edit (an edit that only removes a declared field leaves no other manager in managedFields).
    """
    if live is None:  # a Job that runs once is removed by its TTL when it finished: not drift
        return None if manifest.runs_once else Drift(key, manifest.id, missing=True)
    try:
        predicted = cluster.apply(manifest.body, dry_run=True, force=wants_force(manifest, False))
    except FieldConflictError as e:
        return Drift(key, manifest.id, e.fields, e.managers)
    ignore = ignored_pointers(manifest.body)
    fields = tuple(changed_paths(normalise(predicted, ignore), normalise(live, ignore)))
    if not fields:
        return None
    return Drift(key, manifest.id, fields, _last_writer(live))


def changed_paths(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths (``.spec.template.spec.containers[0].image``) where two JSON values differ, deepest first reached."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for name in sorted(set(a) | set(b)):
            out += changed_paths(a.get(name), b.get(name), f"{path}.{name}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in changed_paths(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "."]


def _writes(live: Json) -> list[Json]:
    """managedFields entries of writes to the object itself (spec, metadata, scale), not to its status."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    return [e for e in entries if e.get("subresource") != "status"]


def _last_writer(live: Json) -> tuple[str, ...]:
    """The most recent field manager other than gitsync that wrote the object."""
    others = [e for e in _writes(live) if e.get("manager") != MANAGER]
    if not others:
        return ()
    return (str(max(others, key=lambda e: str(e.get("time", ""))).get("manager")),)


def _fingerprint(obj: Json | None) -> str:
    """What a drift check depends on: the object without status and server bookkeeping."""
    return "" if obj is None else json.dumps(normalise(obj), sort_keys=True, default=str)


# --- acting -----------------------------------------------------------------------------------------------------


def drift_event(drift: Drift, live: Json | None, now: float) -> Json:
    """A core/v1 Warning Event on the drifted object, named so re-reporting the same change updates it."""
    meta = (live or {}).get("metadata") or {}
    namespace = drift.id.namespace or "default"
    version = str(meta.get("resourceVersion") or "gone")
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved: Json = {
        "apiVersion": str((live or {}).get("apiVersion") or ""),
        "kind": drift.id.kind,
        "name": drift.id.name,
    }
    if drift.id.namespace:
        involved["namespace"] = drift.id.namespace
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{drift.id.name}.drift-{version}", "namespace": namespace},
        "involvedObject": involved,
        "reason": str(Reason.DRIFT_DETECTED),
        "message": f"{drift.summary} ({drift.key})",
        "type": "Warning",
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "reportingInstance": str(drift.key),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class DriftHub:
    """The drift checks of every app-env on one cluster: one subscription to its ``WatchCache`` and one thread.

    A change is routed by object id to the watchers that declare the object (an index, not a callback per
    app-env: with a thousand app-envs a change costs one dictionary lookup, not a thousand calls), and checks run
    on a small pool (each is a dry-run request). A burst of changes (an edit, then the controllers' reactions)
    settles into one check per object: the batch closes after ``settle`` seconds without a new change, or after
    ``MAX_BATCH_SETTLES`` settles in all, so a steady stream of other app-envs' changes cannot hold a check back.
    """

    MAX_BATCH_SETTLES = 5
    CHECKERS = 4

    def __init__(self, cache: WatchCache, *, settle: float = 0.2) -> None:
        self.cache = cache
        self._settle = settle
        self._lock = threading.Lock()
        self._index: dict[ObjectId, set[DriftWatcher]] = {}
        self._pending: queue.Queue[tuple[DriftWatcher, ObjectId] | None] = queue.Queue()
        self._unsubscribe: Callable[[], None] | None = None
        self._worker: threading.Thread | None = None

    def watch(self, watcher: DriftWatcher, before: Iterable[ObjectId], after: Iterable[ObjectId]) -> None:
        """Route changes of ``after`` (no longer of ``before``) to ``watcher``; starts the hub on first use."""
        with self._lock:
            for obj_id in before:
                watchers = self._index.get(obj_id)
                if watchers is not None:
                    watchers.discard(watcher)
                    if not watchers:
                        del self._index[obj_id]
            for obj_id in after:
                self._index.setdefault(obj_id, set()).add(watcher)
            if self._worker is None:
                self._unsubscribe = self.cache.subscribe(self._on_change)
                self._worker = threading.Thread(target=self._run, name="drift-checks", daemon=True)
                self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._pending.put(None)
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout)

    def _on_change(self, change: Change) -> None:
        """On a watch thread: queue a check for each watcher whose object's spec or metadata changed."""
        with self._lock:  # most changes are of objects no app-env declares (pods, events, status writes)
            watchers = list(self._index.get(change.id, ()))
        for watcher in watchers:
            if watcher.changed(change):
                self._pending.put((watcher, change.id))

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=self.CHECKERS, thread_name_prefix="drift-check") as pool:
            while True:
                first = self._pending.get()
                if first is None:
                    return
                batch, stopping = self._batch(first)
                list(pool.map(lambda item: item[0].check(item[1]), batch))
                if stopping:
                    return

    def _batch(self, first: tuple[DriftWatcher, ObjectId]) -> tuple[list[tuple[DriftWatcher, ObjectId]], bool]:
        """``first`` and what follows it until the changes settle; True when the hub was told to stop."""
        batch = {first: None}
        deadline = time.monotonic() + self._settle * self.MAX_BATCH_SETTLES
        while (left := deadline - time.monotonic()) > 0:
            try:
                more = self._pending.get(timeout=min(self._settle, left))
            except queue.Empty:
                break
            if more is None:
                return list(batch), True
            batch[more] = None
        return list(batch), False


class DriftWatcher:
    """One app-env's managed objects: reports drift and hands it to ``on_drift``.

    Changes reach it through the cluster's ``DriftHub``, which runs the checks. At most ``heal_limit`` drifts of
    one object per ``heal_window`` seconds reach ``on_drift``: a controller fighting gitsync gets reported, not
    fought in a tight loop.
    """

    def __init__(
        self,
        key: AppEnv,
        manifests: Iterable[Manifest],
        cluster: Cluster,
        hub: DriftHub,
        clock: Clock,
        *,
        on_drift: Callable[[Drift], None] | None = None,
        heal_limit: int = 3,
        heal_window: float = 60.0,
    ) -> None:
        self.key = key
        self._cluster = cluster
        self._hub = hub
        self._cache = hub.cache
        self._clock = clock
        self._on_drift = on_drift
        self._heal_limit = heal_limit
        self._heal_window = heal_window
        self._lock = threading.Lock()
        self._desired: dict[ObjectId, Manifest] = {m.id: m for m in manifests}
        self._seen: dict[ObjectId, str] = {}
        self._drifted: set[ObjectId] = set()
        self._heals: dict[ObjectId, list[float]] = {}
        self._stopped = False

    @property
    def drifted(self) -> frozenset[ObjectId]:
        with self._lock:
            return frozenset(self._drifted)

    def start(self) -> None:
        """Track the kinds of the desired objects (blocking until listed) and start reacting to changes."""
        for group, kind, namespace in sorted({(i.group, i.kind, i.namespace) for i in self._desired}):
            self._cache.ensure(group, kind, namespace)
        with self._lock:
            desired = list(self._desired)
        self._hub.watch(self, (), desired)  # before reading what is live, so no change falls in between
        with self._lock:
            self._seen = {obj_id: _fingerprint(self._cache.get(obj_id)) for obj_id in desired}
        log.info("drift.watching", app=self.key.app, env=self.key.env, objects=len(desired))

    def update(self, manifests: Iterable[Manifest]) -> None:
        """New desired bodies; call before applying them, so gitsync's own writes are never taken for drift."""
        desired = {m.id: m for m in manifests}
        with self._lock:
            before = list(self._desired)
            self._desired = desired
            self._drifted &= set(desired)
            count = len(self._drifted)
            stopped = self._stopped
        DRIFT_OBJECTS.labels(self.key.app, self.key.env).set(count)
        for group, kind, namespace in sorted({(i.group, i.kind, i.namespace) for i in desired}):
            self._cache.ensure(group, kind, namespace)
        if not stopped:
            self._hub.watch(self, before, desired)

    def stop(self) -> None:
        """No more checks; a check already queued for this watcher is dropped."""
        with self._lock:
            self._stopped = True
            before = list(self._desired)
        self._hub.watch(self, before, ())

    def check(self, obj_id: ObjectId) -> Drift | None:
        """Check one desired object now (from the cache's copy of it); report it when it drifted."""
        with self._lock:
            manifest = None if self._stopped else self._desired.get(obj_id)
        if manifest is None:
            return None
        live = self._cache.get(obj_id)
        try:
            drift = detect(self.key, manifest, live, self._cluster)
        except GitsyncError as e:
            log.warning("drift.check_failed", app=self.key.app, env=self.key.env, object=str(obj_id), error=str(e))
            return None
        with self._lock:
            was_drifted = obj_id in self._drifted
            (self._drifted.add if drift else self._drifted.discard)(obj_id)
            count = len(self._drifted)
        DRIFT_OBJECTS.labels(self.key.app, self.key.env).set(count)
        log.debug("drift.checked", app=self.key.app, env=self.key.env, object=str(obj_id), drifted=drift is not None)
        if drift is None:
            if was_drifted:
                log.info("drift.resolved", app=self.key.app, env=self.key.env, object=str(obj_id))
            return None
        self._report(drift, live)
        return drift

    def changed(self, change: Change) -> bool:
        """Whether ``change`` moved a desired object's spec or metadata since this watcher last saw it."""
        with self._lock:
            if self._stopped or change.id not in self._desired:
                return False
            fingerprint = "" if change.type is WatchEventType.DELETED else _fingerprint(change.object)
            if self._seen.get(change.id) == fingerprint:
                return False
            self._seen[change.id] = fingerprint
        return True

    # -- internals ------------------------------------------------------------------------------------------

    def _report(self, drift: Drift, live: Json | None) -> None:
        app, env = self.key.app, self.key.env
        DRIFT_DETECTED.labels(app, env).inc()
        log.warning(
            "drift.detected",
            app=app,
            env=env,
            object=str(drift.id),
            fields=list(drift.fields),
            managers=list(drift.managers),
            missing=drift.missing,
        )
        try:
            self._cluster.apply(drift_event(drift, live, self._clock.now()))
        except GitsyncError as e:
            log.warning("drift.event_failed", app=app, env=env, object=str(drift.id), error=str(e))
        if self._on_drift is not None and self._within_limit(drift):
            self._on_drift(drift)

    def _within_limit(self, drift: Drift) -> bool:
        now = self._clock.now()
        with self._lock:
            recent = [t for t in self._heals.get(drift.id, []) if now - t < self._heal_window]
            if len(recent) >= self._heal_limit:
                log.warning("drift.heal_deferred", app=self.key.app, env=self.key.env, object=str(drift.id))
                return False
            self._heals[drift.id] = [*recent, now]
        return True
