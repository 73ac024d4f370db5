"""The cache's bookkeeping (re-list on 410, reconnect after errors, notifications, fallback GETs) driven by a
scripted list/watch source. That the cache follows a real API server is tested in tests/cluster/test_cache_watch.py."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gitsync.cache import MANAGED_SELECTOR, Change, WatchCache
from gitsync.errors import UnavailableError, WatchExpired
from gitsync.model import LABEL_MANAGED_BY, MANAGER, Json, ObjectId
from gitsync.ports import ObjectList, WatchEvent, WatchEventType

ADDED, MODIFIED, DELETED, BOOKMARK = (
    WatchEventType.ADDED,
    WatchEventType.MODIFIED,
    WatchEventType.DELETED,
    WatchEventType.BOOKMARK,
)


def cm(name: str, rv: str, **data: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv},
        "data": data,
    }


def ref(name: str) -> ObjectId:
    return ObjectId("", "ConfigMap", "shop", name)


class Scripted:
    """Lists return the next scripted listing; each watch call replays the next scripted step (events, then an
    exception or the end of the stream; a ``threading.Event`` holds the stream until it is set); with no step
    left, a watch blocks until the test ends."""

    def __init__(
        self, listings: list[list[Json]], watches: list[list[Any]], list_error: Exception | None = None
    ) -> None:
        self.listings = listings
        self.list_error = list_error
        self.watches = watches
        self.calls: list[tuple[str, ...]] = []
        self.done = threading.Event()

    def list(
        self, group: str, kind: str, namespace: str = "", label_selector: str = "", *, metadata_only: bool = False
    ) -> ObjectList:
        self.calls.append(("list", kind, namespace, label_selector))
        if self.list_error is not None:
            raise self.list_error
        items = self.listings.pop(0)
        return ObjectList(tuple(items), str(len(self.calls)))

    def watch(
        self,
        group: str,
        kind: str,
        namespace: str = "",
        label_selector: str = "",
        resource_version: str = "",
        timeout_seconds: int = 300,
    ) -> Iterator[WatchEvent]:
        self.calls.append(("watch", kind, resource_version))
        if not self.watches:
            self.done.wait(5)
            return
        for step in self.watches.pop(0):
            if isinstance(step, threading.Event):
                step.wait(5)
                continue
            if isinstance(step, Exception):
                raise step
            yield step

    def get(self, ref: ObjectId) -> Json | None:
        self.calls.append(("get", str(ref)))
        return None


def changes_of(cache: WatchCache) -> queue.Queue[Change]:
    seen: queue.Queue[Change] = queue.Queue()
    cache.subscribe(seen.put)
    return seen


def next_changes(seen: queue.Queue[Change], n: int) -> list[tuple[WatchEventType, str]]:
    return [(c.type, c.id.name) for c in (seen.get(timeout=5) for _ in range(n))]


def test_watch_events_update_the_store_and_notify_subscribers() -> None:
    cluster = Scripted(
        [[cm("a", "1")]],
        [
            [
                WatchEvent(ADDED, cm("b", "5")),
                WatchEvent(MODIFIED, cm("a", "6", k="v")),
                WatchEvent(BOOKMARK, {"metadata": {"resourceVersion": "7"}}),
                WatchEvent(DELETED, cm("b", "8")),
            ]
        ],
    )
    cache = WatchCache(cluster, backoff=(0.01, 0.01))  # type: ignore[arg-type]
    seen = changes_of(cache)
    try:
        assert cache.ensure("", "ConfigMap", "shop")
        assert next_changes(seen, 3) == [(ADDED, "b"), (MODIFIED, "a"), (DELETED, "b")]
        assert cache.get(ref("a")) == cm("a", "6", k="v")
        assert cache.synced()
        # The stream ended: the next watch resumes from the bookmark's successor, without a new LIST.
        assert cluster.calls[:3] == [
            ("list", "ConfigMap", "shop", MANAGED_SELECTOR),
            ("watch", "ConfigMap", "1"),
            ("watch", "ConfigMap", "8"),
        ]
    finally:
        cluster.done.set()
        cache.stop()


def test_a_late_delete_event_keeps_the_object_this_process_wrote_since() -> None:
    # gitsync deleted ConfigMap a (at resourceVersion 3) and created it again (5); the watch tells of the delete
    # only afterwards. The re-created object is what the cluster holds: reads must keep seeing it.
    written, read = threading.Event(), threading.Event()
    late = [WatchEvent(DELETED, cm("a", "3")), WatchEvent(ADDED, cm("b", "4"))]
    cluster = Scripted([[cm("a", "1")]], [[written, *late, read, WatchEvent(DELETED, cm("a", "6"))]])
    recreated = cm("a", "5", k="recreated")
    recreated["metadata"]["labels"] = {LABEL_MANAGED_BY: MANAGER}
    cache = WatchCache(cluster, backoff=(0.01, 0.01))  # type: ignore[arg-type]
    seen = changes_of(cache)
    try:
        assert cache.ensure("", "ConfigMap", "shop")
        cache.wrote(ref("a"), recreated)
        written.set()
        assert next_changes(seen, 1) == [(ADDED, "b")]  # the stale delete is neither applied nor reported
        assert cache.get(ref("a")) == recreated
        read.set()
        assert next_changes(seen, 1) == [(DELETED, "a")]  # a delete after the write still removes it
        assert cache.get(ref("a")) is None
    finally:
        cluster.done.set()
        cache.stop()


def test_expired_watch_relists_and_reports_what_changed_meanwhile() -> None:
    cluster = Scripted(
        [[cm("a", "1"), cm("b", "1")], [cm("a", "9"), cm("c", "9")]],
        [[WatchExpired("ConfigMap: resourceVersion expired")]],
    )
    cache = WatchCache(cluster)  # type: ignore[arg-type]
    seen = changes_of(cache)
    try:
        cache.ensure("", "ConfigMap", "shop")
        assert sorted(next_changes(seen, 3)) == [(ADDED, "c"), (DELETED, "b"), (MODIFIED, "a")]
        assert [c[0] for c in cluster.calls[:4]] == ["list", "watch", "list", "watch"]
        assert cache.get(ref("b")) is None
    finally:
        cluster.done.set()
        cache.stop()


def test_errors_reconnect_from_the_last_version_without_relisting() -> None:
    cluster = Scripted(
        [[cm("a", "1")]],
        [[WatchEvent(MODIFIED, cm("a", "3")), UnavailableError("connection reset")], [WatchEvent(ADDED, cm("b", "4"))]],
    )
    cache = WatchCache(cluster, backoff=(0.01, 0.01))  # type: ignore[arg-type]
    seen = changes_of(cache)
    try:
        cache.ensure("", "ConfigMap", "shop")
        assert next_changes(seen, 2) == [(MODIFIED, "a"), (ADDED, "b")]
        assert [c for c in cluster.calls if c[0] != "get"][:3] == [
            ("list", "ConfigMap", "shop", MANAGED_SELECTOR),
            ("watch", "ConfigMap", "1"),
            ("watch", "ConfigMap", "3"),
        ]
    finally:
        cluster.done.set()
        cache.stop()


def test_get_answers_from_memory_and_falls_back_only_for_unlabelled_absentees() -> None:
    cluster = Scripted([[cm("a", "1")], []], [])
    cache = WatchCache(cluster)  # type: ignore[arg-type]
    try:
        assert cache.get(ref("a")) == cm("a", "1")  # first use lists the kind
        assert cache.get(ref("a")) == cm("a", "1")
        assert cache.get(ref("zz")) is None  # may exist without gitsync's label: asks the API once
        assert [c[0] for c in cluster.calls].count("get") == 1
        # An unfiltered store is authoritative: absent means absent.
        assert cache.objects("", "ConfigMap", "shop", all_objects=True) == []
        assert cache.get(ref("zz")) is None
        assert [c[0] for c in cluster.calls].count("get") == 1
    finally:
        cluster.done.set()
        cache.stop()


def test_a_failing_subscriber_does_not_stop_the_watch() -> None:
    cluster = Scripted([[]], [[WatchEvent(ADDED, cm("a", "2")), WatchEvent(ADDED, cm("b", "3"))]])
    cache = WatchCache(cluster)  # type: ignore[arg-type]

    def broken(change: Change) -> None:
        raise RuntimeError("bug")

    cache.subscribe(broken)
    seen = changes_of(cache)
    try:
        cache.ensure("", "ConfigMap", "shop")
        assert next_changes(seen, 2) == [(ADDED, "a"), (ADDED, "b")]
    finally:
        cluster.done.set()
        cache.stop()


def test_a_kind_that_cannot_be_listed_does_not_stall_reads() -> None:
    cluster = Scripted([], [], list_error=UnavailableError("forbidden"))  # as a forbidden or unserved kind would
    cache = WatchCache(cluster, list_timeout=30, backoff=(5, 5))  # type: ignore[arg-type]
    try:
        started = time.monotonic()
        assert cache.ensure("", "ConfigMap", "shop") is False
        assert cache.get(ref("a")) is None  # answered by a GET
        assert time.monotonic() - started < 5
        assert not cache.synced()
        assert ("get", "ConfigMap/shop/a") in cluster.calls
    finally:
        cluster.done.set()
        cache.stop(timeout=0.1)


def test_a_watch_that_breaks_after_stop_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    class BreaksOnRelease(Scripted):
        def watch(self, *args: Any, **kwargs: Any) -> Iterator[WatchEvent]:
            release.wait(5)  # blocked in a read, as a quiet watch is
            raise UnavailableError("watch interrupted: ProtocolError")
            yield  # pragma: no cover - makes this a generator

    cluster = BreaksOnRelease([[cm("a", "1")]], [])
    cache = WatchCache(cluster, backoff=(0.01, 0.01))  # type: ignore[arg-type]
    assert cache.ensure("", "ConfigMap", "shop")
    cache.stop(timeout=0.1)  # the thread is still blocked in its read
    with caplog.at_level(logging.WARNING):
        release.set()  # then the cluster goes away under it, as when a test or the bench tears kubelab down
        for tracker in cache._trackers.values():
            tracker.thread.join(5)
    assert not [r for r in caplog.records if "watch_failed" in r.getMessage()]
