"""The apply stage: server-side apply of the objects a plan found changed, in dependency order.

Order: Namespaces and CRDs first, each waited for (Active / Established, bounded), because everything else may
live in them; then by wave (``gitsync.dev/wave``) and, within a wave, by kind (ConfigMaps before the Deployments
that mount them). Objects of one step go in parallel through a bounded pool. A failed step stops the sync: later
steps may depend on it, and the next reconcile retries from the top (apply is idempotent).

Contract: never applies anything when the plan has errors; returns a ``ChangeSet``, the one result value that
feeds logs, the inventory and the CLI; raises nothing for per-object failures (they are entries with ``error``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby

from gitsync import log as logging
from gitsync.errors import GitsyncError, NotFoundError, TransientError
from gitsync.model import Json, ObjectId, SyncAction, kind_rank
from gitsync.plan import DryRunMemo, Plan, PlanAction, PlannedChange
from gitsync.ports import Cluster

__all__ = ["APPLY_WORKERS", "ChangeSet", "ChangeSetEntry", "NotReadyError", "Progress", "apply", "failed"]

APPLY_WORKERS = 8
"""Concurrent applies within a step: enough to hide request latency, few enough not to trip API priority limits."""
PARENT_WAIT_SECONDS = 30.0
"""Upper bound for a new Namespace to be Active or a CRD Established (and served) before its children go."""
_POLL_SECONDS = 0.2
_PARENT_KINDS = ("Namespace", "CustomResourceDefinition")

log = logging.get("gitsync.apply")


@dataclass(frozen=True, slots=True)
class ChangeSetEntry:
    """What happened to one object; ``error`` is set exactly when ``action`` is ``failed``."""

    id: ObjectId
    action: SyncAction
    error: str | None = None


ChangeSet = tuple[ChangeSetEntry, ...]


class NotReadyError(TransientError):
    """A Namespace or CRD did not become usable in time (or an object did not go away for a recreate)."""


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
    todo = [c for c in plan.changes if c.action in (PlanAction.CREATE, PlanAction.UPDATE)]
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
        return ChangeSetEntry(change.id, SyncAction.FAILED, change.error)
    return ChangeSetEntry(
        change.id, SyncAction.UNCHANGED if change.action is PlanAction.UNCHANGED else SyncAction.SKIPPED
    )


def _steps(changes: Sequence[PlannedChange]) -> Iterator[list[PlannedChange]]:
    """Parents (Namespaces, CRDs) first, then (wave, kind rank) groups in order."""

    def key(c: PlannedChange) -> tuple[int, int, int]:
        assert c.desired is not None
        parent = c.id.kind in _PARENT_KINDS
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
            _delete_and_wait(change.id, cluster, sleep)
            action = SyncAction.CREATED
        applied = _apply_when_served(change, cluster, sleep)
        if change.id.kind in _PARENT_KINDS:
            _wait_ready(change.id, applied, cluster, sleep)
        if memo is not None:
            memo.remember(change.id, change.desired, applied)
        entry = ChangeSetEntry(change.id, action)
    except GitsyncError as e:
        entry = ChangeSetEntry(change.id, SyncAction.FAILED, str(e))
    log.info("sync.object", object=str(change.id), action=str(entry.action), error=entry.error)
    if progress is not None:
        progress(entry)
    return entry


def _apply_when_served(change: PlannedChange, cluster: Cluster, sleep: Callable[[float], None]) -> Json:
    """Apply; a custom object whose CRD was established moments ago may not be in discovery yet: retry, bounded."""
    assert change.desired is not None
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while True:
        try:
            return cluster.apply(change.desired.body, force=change.force)
        except NotFoundError:
            if change.result is not None or time.monotonic() > deadline:
                raise
            sleep(_POLL_SECONDS)


def _wait_ready(ref: ObjectId, obj: Json, cluster: Cluster, sleep: Callable[[float], None]) -> None:
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while not _ready(obj):
        if time.monotonic() > deadline:
            state = "Active" if ref.kind == "Namespace" else "Established"
            raise NotReadyError(f"{ref}: not {state} after {PARENT_WAIT_SECONDS:.0f}s")
        sleep(_POLL_SECONDS)
        obj = cluster.get(ref) or {}


def _ready(obj: Json) -> bool:
    status = obj.get("status") or {}
    if obj.get("kind") == "Namespace":
        return status.get("phase") == "Active"
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _delete_and_wait(ref: ObjectId, cluster: Cluster, sleep: Callable[[float], None]) -> None:
    """Delete and wait until the name is free, so the re-create is not refused. Background propagation: the old
    object's dependents (ReplicaSets, Pods) point at its uid and are collected by the garbage collector."""
    cluster.delete(ref)
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while cluster.get(ref) is not None:
        if time.monotonic() > deadline:
            raise NotReadyError(f"{ref}: still terminating {PARENT_WAIT_SECONDS:.0f}s after delete for recreate")
        sleep(_POLL_SECONDS)
