"""The cache's bookkeeping (re-list on 410, reconnect after errors, notifications, fallback GETs) driven by a
scripted list/watch source. That the cache follows a real API server is tested in tests/cluster/test_cache_watch.py."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
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
        self.answers: dict[str, Json] = {}
        """What a GET of an ObjectId's string form finds (an object without gitsync's label); None otherwise."""
        self.on_get: Callable[[ObjectId], Json | None] | None = None

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
        if self.on_get is not None:
            return self.on_get(ref)
        return self.answers.get(str(ref))


def changes_of(cache: WatchCache) -> queue.Queue[Change]:
    seen: queue.Queue[Change] = queue.Queue()
    cache.subscribe(seen.put)
    return seen


def next_changes(seen: queue.Queue[Change], n: int) -> list[tuple[WatchEventType, str]]:
    return [(c.type, c.id.name) for c in (seen.get(timeout=60) for _ in range(n))]


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
        assert cache.get(ref("zz")) is None  # and remembers its answer
        assert gets(cluster) == 1
        # An unfiltered store is authoritative: absent means absent.
        assert cache.objects("", "ConfigMap", "shop", all_objects=True) == []
        assert cache.get(ref("yy")) is None
        assert gets(cluster) == 1
    finally:
        cluster.done.set()
        cache.stop()


def gets(cluster: Scripted) -> int:
    return [c[0] for c in cluster.calls].count("get")


def labelled(obj: Json) -> Json:
    obj["metadata"]["labels"] = {LABEL_MANAGED_BY: MANAGER}
    return obj


def test_an_absent_object_costs_one_get_until_something_says_it_came_back() -> None:
    # A Job its TTL removed is read by every drift-timer reconcile and health read: one GET, not one per read.
    # Whatever may have brought it back ends that: its watch event, this process writing it (labelled or not),
    # a re-list of the kind; a DELETED (which a filtered watch also says when the label was removed) is asked again.
    created, deleted, expired = threading.Event(), threading.Event(), threading.Event()
    cluster = Scripted(
        [[], []],
        [
            [
                created,
                WatchEvent(ADDED, labelled(cm("gone", "5"))),
                deleted,
                WatchEvent(DELETED, labelled(cm("gone", "6"))),
                expired,
                WatchExpired("resourceVersion expired"),
            ]
        ],
    )
    cache = WatchCache(cluster, backoff=(0.01, 0.01))  # type: ignore[arg-type]
    seen = changes_of(cache)
    try:
        assert cache.ensure("", "ConfigMap", "shop")
        for _ in range(5):
            assert cache.get(ref("gone")) is None
        assert gets(cluster) == 1

        created.set()  # created again, with gitsync's label: the watch says so, and the store answers
        assert next_changes(seen, 1) == [(ADDED, "gone")]
        assert cache.get(ref("gone")) == labelled(cm("gone", "5"))
        deleted.set()
        assert next_changes(seen, 1) == [(DELETED, "gone")]
        assert cache.get(ref("gone")) is None
        assert cache.get(ref("gone")) is None
        assert gets(cluster) == 2  # deleted, or only unlabelled: asked once, remembered again

        # The kind is listed again after the 410: what was remembered is forgotten.
        expired.set()
        while [c[0] for c in cluster.calls].count("list") < 2:
            time.sleep(0.01)
        while not cache.synced():
            time.sleep(0.01)
        assert cache.get(ref("gone")) is None
        assert gets(cluster) == 3

        cache.wrote(ref("gone"), cm("gone", "20"))  # this process wrote it without gitsync's label
        cluster.answers[str(ref("gone"))] = cm("gone", "20")
        assert cache.get(ref("gone")) == cm("gone", "20")
        assert gets(cluster) == 4
    finally:
        cluster.done.set()
        cache.stop()


def test_a_change_during_the_get_keeps_the_absence_unremembered() -> None:
    # The GET found nothing, but the store changed while it was in flight (the object may have been created and
    # its label removed meanwhile): its 404 proves nothing about now, so the next read asks again.
    cluster = Scripted([[]], [])
    cache = WatchCache(cluster)  # type: ignore[arg-type]

    def racing(obj_id: ObjectId) -> Json | None:
        cache.wrote(ref("other"), labelled(cm("other", "7")))
        return None

    try:
        assert cache.ensure("", "ConfigMap", "shop")
        cluster.on_get = racing
        assert cache.get(ref("a")) is None
        cluster.on_get = None
        assert cache.get(ref("a")) is None
        assert cache.get(ref("a")) is None
        assert gets(cluster) == 2
    finally:
        cluster.done.set()
        cache.stop()


def test_a_relist_keeps_what_this_process_wrote_while_it_was_in_flight() -> None:
    # The watch expired; while the new LIST (at resourceVersion 10) was in flight, gitsync applied Deployment-like
    # object a (12) and created b (11). The list holds a's older version and no b: neither may go back.
    class WritesDuringTheList(Scripted):
        def list(self, *args: Any, **kwargs: Any) -> ObjectList:
            listing = super().list(*args, **kwargs)
            if len(self.listings) == 0:  # the re-list
                cache.wrote(ref("a"), labelled(cm("a", "12", v="mine")))
                cache.wrote(ref("b"), labelled(cm("b", "11", v="mine")))
                return ObjectList(listing.items, "10")
            return listing

    cluster = WritesDuringTheList(
        [[cm("a", "1"), cm("c", "1")], [cm("a", "9"), cm("c", "2")]],
        [[WatchExpired("resourceVersion expired")]],
    )
    cache = WatchCache(cluster)  # type: ignore[arg-type]
    seen = changes_of(cache)
    try:
        assert cache.ensure("", "ConfigMap", "shop")
        assert next_changes(seen, 1) == [(MODIFIED, "c")]  # a and b: nothing the store did not hold already
        assert (cache.get(ref("a")) or {})["data"] == {"v": "mine"}
        assert (cache.get(ref("b")) or {})["data"] == {"v": "mine"}
        assert cache.get(ref("c")) == cm("c", "2")
        assert gets(cluster) == 0
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
    # An hour of LIST timeout and of backoff: a read that waited for either would never come back in this test.
    cache = WatchCache(cluster, list_timeout=3600, backoff=(3600, 3600))  # type: ignore[arg-type]
    answers: list[object] = []
    reader = threading.Thread(
        target=lambda: answers.extend([cache.ensure("", "ConfigMap", "shop"), cache.get(ref("a"))]), daemon=True
    )
    try:
        reader.start()
        reader.join(60)
        assert not reader.is_alive(), "the reads waited for the failed LIST to be retried"
        assert answers == [False, None]  # not listed; the object answered by a GET
        assert [c[0] for c in cluster.calls].count("list") == 1, "answered before the LIST was tried again"
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
