"""A watch-fed cache of live objects: ``ports.LiveReader`` answered from memory.

Why: a reconcile of an unchanged revision should cost (almost) no API calls, and an edit made behind gitsync's back
should be seen within seconds, not at the next poll. Both come from keeping a LIST + WATCH per
(group, kind, namespace), as gitops-engine's ``pkg/cache`` and client-go informers do.

Contract:
- ``ensure`` starts tracking a (group, kind, namespace) once (idempotent) and blocks, bounded, until its first
  LIST is in. Managed kinds are listed with the label selector ``app.kubernetes.io/managed-by=gitsync``;
  ``all_objects=True`` tracks everything of the kind (Pods of a namespace, whose health workloads depend on).
  Namespace ``""`` means cluster-scoped kinds, or every namespace.
- ``get`` answers from memory. It tracks the ref's kind on first use, and falls back to one GET only when the
  answer cannot come from memory: the kind could not be listed in time, or the store is label-filtered and the
  object is absent from it. A filtered list's scope is "objects carrying gitsync's label", so an object missing
  from it may still exist without that label: one gitsync is about to adopt (made by kubectl or Helm before), or
  one whose label someone removed (a selector watch reports that as DELETED, exactly like a deletion). That GET
  is what keeps those right. A GET that finds nothing (404) is remembered, and later reads of that object are
  answered "absent" without a request (a Job its TTL removed, read by every drift-timer reconcile and health
  read), until something says otherwise: a watch event for it, a write of this process to it (labelled or not),
  or a re-list of its kind. What no labelled watch can tell is an object created afterwards *without* gitsync's
  label under that name: until one of those it reads as absent, so a plan takes it for a create, and the server-
  side apply that follows adopts it (it is then labelled and watched). A warm cache serving managed objects, and
  the objects it knows absent, makes no call.
- One daemon thread per tracked key: LIST, then WATCH from the list's resourceVersion with bookmarks (the
  adapter resumes from the last resourceVersion it saw); a 410 (``WatchExpired``) re-lists, any other error
  reconnects from the last resourceVersion after an exponential backoff.
- Subscribers are called on the watch thread with a ``Change`` for every ADDED/MODIFIED/DELETED after the
  first LIST (a re-list after 410 reports what changed meanwhile). They must return quickly (enqueue work)
  and their exceptions are logged, never propagated.
- Reachability: when a tracker's LIST or WATCH cannot reach the API server at all (``UnreachableError``), the
  cluster is down or cut off and memory is no longer the cluster's state: reads raise that error (as a GET
  would) until a tracker lists again, and ``on_reach`` listeners are told of both changes, so the agent reports
  a cluster that went away with Git unchanged (its reconciles read only from here) and reconciles once it is
  back. A tracker that lost its cluster lists again rather than resuming its watch.
- ``stop`` asks every thread to end and joins them for a bounded time: a thread blocked in a quiet watch ends at
  its next event or at the watch's ``timeout_seconds``; threads are daemons, so they never hold up exit.
- Writes go through: ``wrote`` stores what a write of this process returned (``KubeCluster.on_write``), so a read
  right after gitsync's own apply sees it (a Deployment's new generation, a state ConfigMap's new
  resourceVersion) without waiting for its watch event; an event older than what is stored never replaces it,
  nor does a late DELETED remove a version stored after it (gitsync's own re-create of a deleted object), nor
  does a re-list (after a 410) that was in flight while this process wrote: a stored version later than the
  list's resourceVersion can only be such a write, and is kept over the listed one (or over its absence).
  That is what lets health, rollouts and the state store read from here instead of a GET after each write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gitsync import log as logging
from gitsync.errors import UnreachableError, WatchExpired
from gitsync.model import LABEL_MANAGED_BY, MANAGER, Json, ObjectId
from gitsync.ports import Cluster, WatchEventType

__all__ = ["MANAGED_SELECTOR", "Change", "Listener", "WatchCache"]

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"

log = logging.get("gitsync.cache")


@dataclass(frozen=True, slots=True)
class Change:
    """One change the cache saw. ``object`` is the new state, or the last known one for DELETED."""

    type: WatchEventType
    id: ObjectId
    object: Json


Listener = Callable[[Change], None]

_Key = tuple[str, str, str, bool]
"""(group, kind, namespace, all_objects)"""


class WatchCache:
    """Live objects of the tracked kinds, kept current by watches; thread-safe."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        list_timeout: float = 10.0,
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        """``watch_timeout`` bounds each watch request (and how long ``stop`` may leave a quiet thread behind);
        ``backoff`` is the first and the longest delay before reconnecting after an error."""
        self._cluster = cluster
        self._list_timeout = list_timeout
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._lock = threading.Lock()
        self._trackers: dict[_Key, _Tracker] = {}
        self._listeners: list[Listener] = []
        self._reach_listeners: list[Callable[[str], None]] = []
        self._unreachable = ""
        """The error that showed the cluster unreachable, "" while it answers."""
        self._stopping = threading.Event()

    # -- tracking -------------------------------------------------------------------------------------------

    def ensure(self, group: str, kind: str, namespace: str = "", *, all_objects: bool = False) -> bool:
        """Track a kind in a namespace; True once its first LIST is in, False when that LIST failed (the tracker
        keeps retrying) or took longer than ``list_timeout``."""
        key = (group, kind, namespace, all_objects)
        with self._lock:
            tracker = self._trackers.get(key)
            if tracker is None:
                tracker = _Tracker(self, key)
                self._trackers[key] = tracker
                tracker.start()
        tracker.tried.wait(self._list_timeout)
        return tracker.listed.is_set()

    def synced(self) -> bool:
        """Whether every tracked key has its current LIST in (false while re-listing after a 410)."""
        with self._lock:
            trackers = list(self._trackers.values())
        return all(t.listed.is_set() for t in trackers)

    def stop(self, timeout: float = 2.0) -> None:
        """End tracking; joins the threads for at most ``timeout`` seconds in total."""
        self._stopping.set()
        with self._lock:
            trackers = list(self._trackers.values())
        deadline = time.monotonic() + timeout
        for tracker in trackers:
            tracker.thread.join(max(0.0, deadline - time.monotonic()))
        alive = sum(t.thread.is_alive() for t in trackers)
        log.debug("cache.stopped", trackers=len(trackers), still_watching=alive)

    # -- reading --------------------------------------------------------------------------------------------

    def get(self, ref: ObjectId) -> Json | None:
        """The live object from memory (see the module contract for the rare fallback GET)."""
        self._check_reachable()
        trackers = self._serving(ref)
        if not trackers:
            self.ensure(ref.group, ref.kind, ref.namespace)
            trackers = self._serving(ref)
        listed = [t for t in trackers if t.listed.is_set()]
        for tracker in listed:
            answered, found = tracker.answer(ref)
            if answered:
                return found
        marks = [(tracker, tracker.changes) for tracker in listed]
        found = self._cluster.get(ref)
        if found is None:
            for tracker, mark in marks:
                tracker.absent(ref, mark)
        return found

    def objects(self, group: str, kind: str, namespace: str, *, all_objects: bool = False) -> list[Json]:
        """Every cached object of a tracked key (tracking it first if needed), e.g. the Pods of a namespace."""
        self._check_reachable()
        self.ensure(group, kind, namespace, all_objects=all_objects)
        return self._trackers[(group, kind, namespace, all_objects)].snapshot()

    def pods(self, namespace: str) -> list[Json]:
        """All Pods of a namespace, managed or not: workload health needs the pods a controller made."""
        return self.objects("", "Pod", namespace, all_objects=True)

    def replica_sets(self, namespace: str) -> list[Json]:
        """All ReplicaSets of a namespace: which of a Deployment's pods are of its newest revision."""
        return self.objects("apps", "ReplicaSet", namespace, all_objects=True)

    # -- write-through --------------------------------------------------------------------------------------

    def wrote(self, ref: ObjectId, obj: Json | None) -> None:
        """What a write of this process returned (``obj``; None: deleted), stored where the watch would store it,
        unless the store already holds a newer version."""
        for tracker in self._serving(ref):
            if obj is None:
                tracker.drop(ref)
            elif tracker.all_objects or _labels(obj).get(LABEL_MANAGED_BY) == MANAGER:
                tracker.put(ref, obj)
            else:
                tracker.outside(ref)

    def _serving(self, ref: ObjectId) -> list[_Tracker]:
        """Trackers whose store holds ``ref`` if it exists, unfiltered (authoritative) first."""
        with self._lock:
            keys = [
                (ref.group, ref.kind, namespace, all_objects)
                for all_objects in (True, False)
                for namespace in dict.fromkeys((ref.namespace, ""))
            ]
            return [self._trackers[k] for k in keys if k in self._trackers]

    # -- reachability ---------------------------------------------------------------------------------------

    @property
    def unreachable(self) -> str:
        """Why the cluster is unreachable (the error that showed it), or "" while it answers."""
        with self._lock:
            return self._unreachable

    def on_reach(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with the error when the cluster becomes unreachable, and with "" when it answers
        again; on a watch thread, so it must return quickly."""
        with self._lock:
            self._reach_listeners.append(listener)

    def _check_reachable(self) -> None:
        """On every read (a reconcile makes one per object): one attribute read, no lock (a str is replaced whole)."""
        error = self._unreachable
        if error:
            raise UnreachableError(error)

    def _reach(self, error: str) -> None:
        """Record that the cluster answered ("") or could not be reached (``error``); listeners hear changes."""
        with self._lock:
            changed = bool(self._unreachable) != bool(error)
            self._unreachable = error if error else ""
            listeners = list(self._reach_listeners) if changed else []
        if changed and error:
            log.warning("cache.unreachable", error=error)
        elif changed:
            log.info("cache.reachable")
        for listener in listeners:
            try:
                listener(error)
            except Exception as e:  # noqa: BLE001 - a subscriber's bug must not stop the watch
                log.error("cache.listener_failed", error=f"{type(e).__name__}: {e}")

    # -- notifications --------------------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every change from now on; returns the function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, change: Change) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(change)
            except Exception as e:  # noqa: BLE001 - a subscriber's bug must not stop the watch
                log.error("cache.listener_failed", object=str(change.id), error=f"{type(e).__name__}: {e}")


class _Tracker:
    """LIST + WATCH of one key on its own daemon thread; the store maps ObjectId to the live dict."""

    def __init__(self, cache: WatchCache, key: _Key) -> None:
        self.cluster = cache._cluster
        self.stopping = cache._stopping
        self.watch_timeout = cache._watch_timeout
        self.backoff = cache._backoff
        self.notify = cache._notify
        self.reach = cache._reach
        self.group, self.kind, self.namespace, self.all_objects = key
        self.selector = "" if self.all_objects else MANAGED_SELECTOR
        self.store: dict[ObjectId, Json] = {}
        self.missing: set[ObjectId] = set()
        """Objects a GET found absent (404) since the last change to them: a filtered store's answer "absent"."""
        self.changes = 0
        """Counts every change to the store, so a 404 is not remembered over a change that came during its GET."""
        self.lock = threading.Lock()
        self.listed = threading.Event()
        self.tried = threading.Event()
        """Set once the first LIST succeeded or failed, so ``ensure`` does not wait out a forbidden kind."""
        self.lists = 0
        self.resource_version = ""
        self.thread = threading.Thread(
            target=self.run, name=f"watch-{self.kind}-{self.namespace or 'all'}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def answer(self, ref: ObjectId) -> tuple[bool, Json | None]:
        """(whether this store can answer for ``ref``, the object or None): an unfiltered store answers for every
        object; a filtered one for those it holds and those a GET found absent since."""
        with self.lock:
            found = self.store.get(ref)
            return found is not None or self.all_objects or ref in self.missing, found

    def absent(self, ref: ObjectId, mark: int) -> None:
        """Remember that a GET found ``ref`` absent, unless the store changed since ``mark`` (taken before that GET):
        a watch event in between may have been about ``ref`` (created, then its label removed)."""
        with self.lock:
            if self.changes == mark and ref not in self.store:
                self.missing.add(ref)

    def outside(self, ref: ObjectId) -> None:
        """``ref`` exists outside this filtered store (this process wrote it without gitsync's label): neither the
        version held (if any) nor "absent" is true any more, so reads ask the API."""
        with self.lock:
            self.store.pop(ref, None)
            self.missing.discard(ref)
            self.changes += 1

    def snapshot(self) -> list[Json]:
        with self.lock:
            return list(self.store.values())

    def put(self, obj_id: ObjectId, obj: Json) -> bool:
        """Store ``obj`` unless the store holds a newer version of it; True when stored."""
        with self.lock:
            self.missing.discard(obj_id)
            self.changes += 1
            if _newer(self.store.get(obj_id), obj):
                return False
            self.store[obj_id] = obj
            return True

    def drop(self, obj_id: ObjectId, deleted: Json | None = None) -> bool:
        """Forget ``obj_id``, unless ``deleted`` (a DELETED event's last state) is older than what the store holds:
        a version written after that deletion, as a re-create by this process; True when dropped. Not remembered as
        absent: a filtered watch says DELETED also when the object lost gitsync's label, so the next read asks."""
        with self.lock:
            self.missing.discard(obj_id)
            self.changes += 1
            if deleted is not None and _newer(self.store.get(obj_id), deleted):
                return False
            self.store.pop(obj_id, None)
            return True

    def id_of(self, obj: Json) -> ObjectId:
        meta = obj.get("metadata") or {}
        return ObjectId(self.group, self.kind, str(meta.get("namespace") or ""), str(meta.get("name", "")))

    def run(self) -> None:
        first, longest = self.backoff
        delay = first
        fields = {"group": self.group, "kind": self.kind, "namespace": self.namespace, "selector": self.selector}
        while not self.stopping.is_set():
            try:
                if not self.resource_version:
                    self.relist()
                events = self.cluster.watch(
                    self.group, self.kind, self.namespace, self.selector, self.resource_version, self.watch_timeout
                )
                for event in events:
                    if self.stopping.is_set():
                        return
                    self.handle(event.type, event.object)
                delay = first
            except WatchExpired:
                log.info("cache.relist", reason="resourceVersion expired", **fields)
                self.listed.clear()
                self.resource_version = ""
            except UnreachableError as e:
                if self.stopping.is_set():
                    return
                self.reach(str(e))
                self.resource_version = ""  # what changed while it was away is learnt by a LIST once it answers
                self.tried.set()
                self.stopping.wait(delay)
                delay = min(delay * 2, longest)
            except Exception as e:  # noqa: BLE001 - keep watching whatever the failure; it is logged
                if self.stopping.is_set():  # the stream broke because its cluster went away after stop()
                    return
                log.warning("cache.watch_failed", error=f"{type(e).__name__}: {e}", retry_in=delay, **fields)
                self.tried.set()
                self.stopping.wait(delay)
                delay = min(delay * 2, longest)

    def relist(self) -> None:
        """Replace the store; on a re-list, report what changed while the watch was gone."""
        listing = self.cluster.list(self.group, self.kind, self.namespace, self.selector)
        fresh = {self.id_of(item): item for item in listing.items}
        with self.lock:
            old = self.store
            # The watch is not running while the list is in flight, so a version later than the list can only be
            # what a write of this process stored meanwhile: the list holds it older, or not yet.
            fresh |= {i: obj for i, obj in old.items() if _later(_version(obj), listing.resource_version)}
            self.store = fresh
            self.missing.clear()  # what happened outside the label's scope while the watch was gone is unknown
            self.changes += 1
        self.resource_version = listing.resource_version
        relisting = self.lists > 0
        self.lists += 1
        self.listed.set()
        self.tried.set()
        self.reach("")
        if not relisting:
            return
        for obj_id, obj in fresh.items():
            before = old.get(obj_id)
            if before is None:
                self.notify(Change(WatchEventType.ADDED, obj_id, obj))
            elif _version(before) != _version(obj):
                self.notify(Change(WatchEventType.MODIFIED, obj_id, obj))
        for obj_id, obj in old.items():
            if obj_id not in fresh:
                self.notify(Change(WatchEventType.DELETED, obj_id, obj))

    def handle(self, kind: WatchEventType, obj: Json) -> None:
        version = _version(obj)
        if version:
            self.resource_version = version
        if kind is WatchEventType.BOOKMARK:
            return
        obj_id = self.id_of(obj)
        taken = self.drop(obj_id, obj) if kind is WatchEventType.DELETED else self.put(obj_id, obj)
        if not taken:
            return  # older than what a write of this process already stored
        self.notify(Change(kind, obj_id, obj))


def _version(obj: Json) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _newer(held: Json | None, obj: Json) -> bool:
    """Whether ``held`` is a later version than ``obj``."""
    return _later(_version(held or {}), _version(obj))


def _later(a: str, b: str) -> bool:
    """Whether resourceVersion ``a`` is later than ``b``. resourceVersions are opaque to clients in general, but
    the API server's are etcd revisions (integers), objects' and lists' alike; anything else is taken as not
    later."""
    return a.isdigit() and b.isdigit() and int(a) > int(b)


def _labels(obj: Json) -> Json:
    return (obj.get("metadata") or {}).get("labels") or {}
