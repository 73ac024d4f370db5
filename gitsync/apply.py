"""The apply stage: server-side apply of the objects a plan found changed, in dependency order.

Order: Namespaces and CRDs first, each waited for (Active / Established, bounded), because everything else may
live in them; then by wave (``gitsync.dev/wave``) and, within a wave, by kind (ConfigMaps before the Deployments
that mount them). Objects of one step go in parallel through a bounded pool. A failed step stops the sync: later
steps may depend on it, and the next reconcile retries from the top (apply is idempotent).

A recreate (``gitsync.dev/recreate`` on an immutable-field change) deletes only what the plan validated: its
replacement passed a server-side dry-run create. If the create still fails, the object is put back from the copy
the plan read, with its field owners, so a running workload is never left deleted.

Contract: never applies anything when the plan has errors; an object whose fields another owner holds (a
``conflict`` change) fails alone and blocks nothing else; returns a ``ChangeSet``, the one result value that
feeds logs, the inventory and the CLI; raises nothing for per-object failures (they are entries with ``error``
and its ``retry`` class).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby

from gitsync import log as logging
from gitsync.errors import GitsyncError, Retry, StaleError, retry_of
from gitsync.memo import DryRunMemo
from gitsync.model import DELETION_METADATA, SERVER_OWNED_METADATA, Json, ObjectId, SyncAction, kind_rank
from gitsync.plan import PARENT_KINDS, Plan, PlanAction, PlannedChange
from gitsync.ports import Cluster
from gitsync.served import PARENT_WAIT_SECONDS, POLL_SECONDS, NotReadyError, wait_ready, when_served

__all__ = ["APPLY_WORKERS", "ChangeSet", "ChangeSetEntry", "Progress", "apply", "failed"]

APPLY_WORKERS = 8
"""Concurrent applies within a step: enough to hide request latency, few enough not to trip API priority limits."""
_OWNER_ATTEMPTS = 5
"""Tries to give a put-back object's fields to their owners while its controller keeps writing it."""

log = logging.get("gitsync.apply")


@dataclass(frozen=True, slots=True)
class ChangeSetEntry:
    """What happened to one object; ``error`` and ``retry`` (whether trying again may succeed) are set exactly
    when ``action`` is ``failed``."""

    id: ObjectId
    action: SyncAction
    error: str | None = None
    retry: Retry | None = None


ChangeSet = tuple[ChangeSetEntry, ...]


Progress = Callable[[ChangeSetEntry], None]
"""Called once per object as it finishes (from worker threads): the CLI's progress bar, or nothing."""


def failed(changes: ChangeSet) -> ChangeSet:
    return tuple(e for e in changes if e.action is SyncAction.FAILED)


def apply(
    plan: Plan,
    cluster: Cluster,
    *,
    workers: int = APPLY_WORKERS,
    progress: Progress | None = None,
    memo: DryRunMemo | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ChangeSet:
    """Apply the plan's creates and updates; unchanged objects are reported, never sent. Each applied object is
    remembered in ``memo`` as it came back, so the next plan need not dry-run it again."""
    if plan.errors:
        return tuple(_refused(c) for c in plan.changes if c.action is not PlanAction.DELETE)
    entries = [ChangeSetEntry(c.id, SyncAction.UNCHANGED) for c in plan.of(PlanAction.UNCHANGED)]
    entries += (_refused(c) for c in plan.conflicts)
    todo = [c for c in plan.changes if c.action in (PlanAction.CREATE, PlanAction.UPDATE) and c.error is None]
    stopped = False
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for step in _steps(todo):
            if stopped:
                entries += (ChangeSetEntry(c.id, SyncAction.SKIPPED) for c in step)
                continue
            one = logging.in_caller_context(lambda c: _apply_one(c, cluster, sleep, progress, memo))
            done = list(pool.map(one, step))
            entries += done
            stopped = any(e.action is SyncAction.FAILED for e in done)
    return tuple(entries)


def _refused(change: PlannedChange) -> ChangeSetEntry:
    if change.error is not None:
        return ChangeSetEntry(change.id, SyncAction.FAILED, change.error, change.retry or Retry.TERMINAL)
    return ChangeSetEntry(
        change.id, SyncAction.UNCHANGED if change.action is PlanAction.UNCHANGED else SyncAction.SKIPPED
    )


def _steps(changes: Sequence[PlannedChange]) -> Iterator[list[PlannedChange]]:
    """Parents (Namespaces, CRDs) first, then (wave, kind rank) groups in order."""

    def key(c: PlannedChange) -> tuple[int, int, int]:
        assert c.desired is not None
        parent = c.id.kind in PARENT_KINDS
        return (0 if parent else 1, c.desired.wave if not parent else 0, kind_rank(c.id.kind))

    for _, group in groupby(sorted(changes, key=key), key=key):
        yield list(group)


def _apply_one(
    change: PlannedChange,
    cluster: Cluster,
    sleep: Callable[[float], None],
    progress: Progress | None,
    memo: DryRunMemo | None,
) -> ChangeSetEntry:
    assert change.desired is not None
    action = SyncAction.CREATED if change.action is PlanAction.CREATE else SyncAction.CONFIGURED
    try:
        if change.recreate:
            applied = _recreate(change, cluster, sleep)
            action = SyncAction.CREATED
        else:
            applied = _apply_when_served(change, cluster, sleep)
        if change.id.kind in PARENT_KINDS:
            wait_ready(change.id, applied, cluster, sleep)
        if memo is not None:
            memo.remember(change.id, change.desired, applied)
        entry = ChangeSetEntry(change.id, action)
    except GitsyncError as e:
        entry = ChangeSetEntry(change.id, SyncAction.FAILED, str(e), retry_of(e))
    log.info("sync.object", object=str(change.id), action=str(entry.action), error=entry.error)
    if progress is not None:
        progress(entry)
    return entry


def _apply_when_served(change: PlannedChange, cluster: Cluster, sleep: Callable[[float], None]) -> Json:
    """Apply; a custom object whose CRD was established moments ago may not be in discovery yet: wait, bounded."""
    desired = change.desired
    assert desired is not None
    return when_served(change.id, lambda: cluster.apply(desired.body, force=change.force), cluster, sleep)


def _recreate(change: PlannedChange, cluster: Cluster, sleep: Callable[[float], None]) -> Json:
    """Delete, wait until the name is free, create the replacement; if that fails, put the old object back (the
    plan's copy, ``_restorable``) and fail naming both. Background propagation: the old object's dependents
    (ReplicaSets, Pods) point at its uid and are collected by the garbage collector."""
    assert change.desired is not None and change.live is not None
    previous = change.live
    cluster.delete(change.id)
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while cluster.get(change.id) is not None:
        if time.monotonic() > deadline:
            raise NotReadyError(f"{change.id}: still terminating {PARENT_WAIT_SECONDS:.0f}s after delete for recreate")
        sleep(POLL_SECONDS)
    try:
        return cluster.apply(change.desired.body, force=change.force)
    except GitsyncError as e:
        try:
            _restore(previous, cluster)
        except GitsyncError as lost:
            raise type(e)(f"{e}; recreate failed and the previous object could not be put back: {lost}") from e
        raise type(e)(f"{e}; recreate failed, the previous object was put back") from e


def _restorable(live: Json) -> Json:
    """A live object as a create request: without what the server assigns (identity, versions, status)."""
    dropped = (*SERVER_OWNED_METADATA, *DELETION_METADATA)
    meta = {k: v for k, v in (live.get("metadata") or {}).items() if k not in dropped}
    return {k: v for k, v in live.items() if k != "status"} | {"metadata": meta}


def _restore(previous: Json, cluster: Cluster) -> None:
    """Create ``previous`` again, then give its fields back to their owners: a create makes its requester own every
    field, and an update that sets ``managedFields`` and nothing else replaces them as given. Controllers write the
    new object at once (a Deployment's status), so that update is retried on a fresh read; if it still cannot be
    made, the object is back all the same, only owned by gitsync, and that is logged."""
    ref = ObjectId.of(previous)
    current: Json | None = cluster.create(_restorable(previous))
    owners = (previous.get("metadata") or {}).get("managedFields")
    for _ in range(_OWNER_ATTEMPTS if owners else 0):
        if current is None:
            return
        try:
            cluster.replace(current | {"metadata": (current.get("metadata") or {}) | {"managedFields": owners}})
            return
        except StaleError:
            current = cluster.get(ref)
    if owners:
        log.warning("recreate.owners_not_restored", object=str(ref))
