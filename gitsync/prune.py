"""The prune stage: delete what the inventory holds and the render no longer does.

Guards that are load-bearing (a wrong prune deletes production): the caller never reaches prune with a failed
render; an empty render prunes nothing unless the environment allows it; objects whose live copy carries
``gitsync.dev/prune: "false"`` were already left out by the plan (``Plan.orphaned``). Deletes go in reverse
apply order (Deployments before the ConfigMaps they mount, Namespaces last) with background propagation.
"""

from __future__ import annotations

from gitsync import log as logging
from gitsync.apply import ChangeSet, ChangeSetEntry, Progress
from gitsync.errors import GitsyncError
from gitsync.model import SyncAction, apply_order
from gitsync.plan import Plan, PlanAction
from gitsync.ports import Cluster

__all__ = ["prune"]

log = logging.get("gitsync.prune")


def prune(
    plan: Plan,
    cluster: Cluster,
    *,
    allow_empty: bool,
    rendered_count: int,
    progress: Progress | None = None,
) -> ChangeSet:
    """Delete the plan's deletes; orphaned objects are reported as skipped. Failed deletes are ``failed``
    entries (they stay in the inventory); already-gone objects count as deleted."""
    entries = [ChangeSetEntry(ref, SyncAction.SKIPPED) for ref in plan.orphaned]
    deletes = sorted(plan.of(PlanAction.DELETE), key=lambda c: apply_order(c.id), reverse=True)
    if rendered_count == 0 and not allow_empty:
        if deletes:
            log.warning("prune.refused_empty_render", objects=len(deletes))
        return tuple(entries + [ChangeSetEntry(c.id, SyncAction.SKIPPED) for c in deletes])
    for change in deletes:
        try:
            cluster.delete(change.id, propagation="Background")
            entry = ChangeSetEntry(change.id, SyncAction.DELETED)
        except GitsyncError as e:
            entry = ChangeSetEntry(change.id, SyncAction.FAILED, str(e))
        entries.append(entry)
        log.info("prune.object", object=str(change.id), action=str(entry.action), error=entry.error)
        if progress is not None:
            progress(entry)
    return tuple(entries)
