"""One sync of one app-env, as a straight line: plan -> apply -> inventory -> prune -> inventory.

The caller (CLI or the agent's reconcile) owns errors, status and requeue; this function only advances the
cluster towards the render. It is re-entrant: killed at any line, calling it again converges, because apply is
idempotent, unchanged objects still join the inventory, and deletes of objects already gone count as done.

Contract: a render error never gets here (no ``RenderedApp``, no sync); a plan with a failed dry-run applies
nothing (objects in a new Namespace or of a new CRD's kind are dry-run too, after their parents are created:
only those parents may then have been applied; creates the client proves acceptable, ``gitsync.judge``, are
the only objects not dry-run); a failed apply prunes nothing; an empty render prunes nothing
unless the environment allows it. Per-object failures are ``failed`` entries of the result, classified by
``SyncResult.retry``; ``TransientError`` (API unreachable while planning, a concurrent inventory write) is raised
for the caller to retry with backoff.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from gitsync import inventory as inventories
from gitsync import log as logging
from gitsync.apply import ChangeSet, Progress, apply, failed
from gitsync.errors import ForbiddenError, Retry, StaleError, retry_of_all
from gitsync.inventory import Inventory
from gitsync.judge import Judge
from gitsync.memo import DryRunMemo
from gitsync.model import LABEL_MANAGED_BY, MANAGER, AppEnv, Json, ObjectId, SyncAction
from gitsync.plan import PARENT_KINDS, ListSnapshot, Plan, PlanAction, defined_kind, plan
from gitsync.ports import Cluster, LiveReader, RenderedApp, StateStore
from gitsync.prune import prune as prune_stage

__all__ = ["SyncResult", "create_namespace", "ensure_namespace", "namespace_exists", "sync_app"]

log = logging.get("gitsync.sync")


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The outcome of one sync: the plan it acted on, what happened per object, and the stored inventory."""

    app_env: AppEnv
    revision: str
    digest: str
    plan: Plan
    changes: ChangeSet
    inventory: Inventory
    dry_run: bool = False

    @property
    def failures(self) -> ChangeSet:
        return failed(self.changes)

    @property
    def ok(self) -> bool:
        return not self.plan.errors and not self.failures

    @property
    def retry(self) -> Retry | None:
        """None when ok. Otherwise whether the same revision may still succeed: ``transient`` when any failure is
        (network, 5xx, 429, a parent not ready in time: back off and try again), ``terminal`` when every failure
        needs a new revision (a body the server refuses, an immutable field, a conflict with another owner,
        forbidden). The agent requeues by it; the CLI picks its exit status by it."""
        if self.ok:
            return None
        return retry_of_all([c.retry for c in self.plan.errors] + [e.retry for e in self.failures]) or Retry.TERMINAL

    @property
    def errors(self) -> tuple[str, ...]:
        """Each distinct error of the plan and of the apply once, in that order: an object the dry-run refused is
        also a failure of the refused apply, with the same message, and a user must read it once."""
        found = [c.error for c in self.plan.errors] + [e.error for e in self.failures]
        return tuple(dict.fromkeys(e for e in found if e))

    def counts(self) -> dict[SyncAction, int]:
        counted = Counter(e.action for e in self.changes)
        return {action: counted[action] for action in SyncAction}

    def summary(self) -> str:
        if self.dry_run:
            return f"{self.app_env}: dry run: {self.plan.summary()}"
        n = self.counts()
        return f"{self.app_env}: " + ", ".join(f"{n[action]} {action}" for action in SyncAction if n[action])


def sync_app(
    rendered: RenderedApp,
    cluster: Cluster,
    store: StateStore,
    *,
    prune: bool,
    dry_run: bool,
    force: bool = False,
    exclude: frozenset[ObjectId] = frozenset(),
    live: LiveReader | None = None,
    memo: DryRunMemo | None = None,
    progress: Progress | None = None,
    new_namespace: bool = False,
    new_kinds: Collection[tuple[str, str]] = (),
) -> SyncResult:
    """Advance the cluster to ``rendered``. ``exclude``: rendered objects a rollout strategy applies itself
    (they stay in the inventory and are never pruned). ``live``: where reads come from (the watch cache).
    ``new_namespace``: a dry run for an environment whose namespace a real sync would create first
    (``ensure_namespace``): its objects are planned as creates, not as errors. ``new_kinds``: likewise for the
    kinds whose CRDs other apps of the environment render (``plan.defined_kind``), in a preview of all of it."""
    key, namespace = rendered.app_env, rendered.namespace
    revision = rendered.revision or ""
    before = inventories.load(store, key, namespace)
    manifests = [m for m in rendered.manifests if m.id not in exclude]
    memo = memo if memo is not None else DryRunMemo(before.memo)
    judge = None if dry_run else Judge(cluster)  # a preview dry-runs every create: its diff shows server defaults

    def planned_now(
        reader: LiveReader | None, judge: Judge | None = judge, settling: frozenset[tuple[str, str]] = frozenset()
    ) -> Plan:
        return plan(
            manifests,
            cluster,
            inventory=before.objects - exclude,
            live=reader,
            force=force,
            memo=memo,
            new_namespaces=(namespace,) if new_namespace else (),
            new_kinds=new_kinds,
            judge=judge,
            # an app that stops rendering the environment's own Namespace (upstream files often carry it) must not
            # delete it: every object of the environment, and gitsync's records, live in it
            keep=(ObjectId("", "Namespace", "", namespace),),
            settling_kinds=settling,
            owner=key,
        )

    planned = planned_now(live)
    first: ChangeSet = ()
    schemas = _schema_changes(planned)
    if not dry_run and not planned.errors and (schemas or any(c.deferred for c in planned.changes)):
        # Objects in a new Namespace, of a new CRD's kind, or of a CRD this commit changes could not be validated
        # yet: apply those parents (waited for), then plan again, so every object is validated by the server as
        # it will be before any of them is applied (the judge reads the CRDs again).
        first = apply(_parents(planned), cluster, progress=progress, memo=memo)
        if not failed(first):
            planned = planned_now(_fresh(live, cluster), None if judge is None else Judge(cluster), schemas)
    if dry_run or planned.errors or failed(first):
        refused = apply(planned, cluster) if planned.errors and not failed(first) else ()
        changes = _merged(first, refused)
        stored = before
        if first:  # parents created before the refusal are gitsync's: inventoried, so they can be pruned
            stored = inventories.save(store, key, namespace, before.adding(_present(first)), before)
        result = SyncResult(key, revision, rendered.digest, planned, changes, stored, dry_run)
        _log(result)
        return result

    applied = _merged(first, apply(planned, cluster, progress=progress, memo=memo))
    clean = not failed(applied)
    rendered_excluded = {m.id for m in rendered.manifests} & exclude
    after_apply = before.adding(
        _present(applied) | rendered_excluded,
        revision=revision if clean else "",
        digest=rendered.digest if clean else "",
    )
    after_apply = _with_memo(after_apply, before, memo)
    stored = inventories.save(store, key, namespace, after_apply, before)
    pruned: ChangeSet = ()
    if prune and clean:
        pruned = prune_stage(
            planned,
            cluster,
            allow_empty=rendered.environment.prune_allow_empty,
            rendered_count=len(rendered.manifests),
            progress=progress,
        )
        deleted = {e.id for e in pruned if e.action is SyncAction.DELETED}
        still_there = {c.id for c in planned.of(PlanAction.DELETE)} - deleted
        pruned_inventory = stored.removing(set(planned.stale) - still_there)
        pruned_inventory = _with_memo(pruned_inventory, stored, memo)
        stored = inventories.save(store, key, namespace, pruned_inventory, stored)
    result = SyncResult(key, revision, rendered.digest, planned, applied + pruned, stored)
    _log(result)
    return result


def _schema_changes(planned: Plan) -> frozenset[tuple[str, str]]:
    """The (group, kind) pairs whose CRDs the plan updates."""
    updates = (c.desired for c in planned.of(PlanAction.UPDATE) if c.error is None and c.desired is not None)
    return frozenset(kind for m in updates if (kind := defined_kind(m)) is not None)


def _parents(planned: Plan) -> Plan:
    """The plan's Namespaces and CRDs to create or update, alone."""
    return Plan(tuple(c for c in planned.changes if c.id.kind in PARENT_KINDS and c.action is not PlanAction.DELETE))


def _fresh(live: LiveReader | None, cluster: Cluster) -> LiveReader | None:
    """A reader that sees the parents just created: a ``ListSnapshot`` listed before them is read again."""
    return ListSnapshot(cluster, versions_first=live.versions_first) if isinstance(live, ListSnapshot) else live


def _merged(first: ChangeSet, then: ChangeSet) -> ChangeSet:
    """What happened to each object: ``first`` (the parents, when created before planning again) wins over the
    second pass, which finds them unchanged."""
    done = {e.id for e in first}
    return first + tuple(e for e in then if e.id not in done)


def _present(changes: ChangeSet) -> set[ObjectId]:
    return {e.id for e in changes if e.action in (SyncAction.CREATED, SyncAction.CONFIGURED, SyncAction.UNCHANGED)}


def namespace_exists(cluster: Cluster, namespace: str) -> bool:
    """Whether the namespace is there; without permission to read namespaces (namespace-scoped RBAC) it is taken
    to exist."""
    try:
        return cluster.get(ObjectId("", "Namespace", "", namespace)) is not None
    except ForbiddenError:
        log.info("namespace.unchecked", namespace=namespace, reason="no permission to read namespaces")
        return True


def ensure_namespace(cluster: Cluster, namespace: str) -> bool:
    """Create the environment's namespace when it is missing (True when it did): the app's objects and its state
    ConfigMaps live there, and every dry-run in a missing namespace fails. Labelled as gitsync's, never pruned; a
    namespace that exists is never relabelled. No Pod Security label, as Argo CD's CreateNamespace: an app that
    mounts its node (a log shipper, node-exporter) would see its pods refused with nothing in Git to say why; the
    install's namespaces (deploy/manifests/05-environment.yaml) enforce "baseline", chosen there by the platform."""
    return not namespace_exists(cluster, namespace) and create_namespace(cluster, namespace)


def create_namespace(cluster: Cluster, namespace: str) -> bool:
    """``ensure_namespace`` of a namespace already read as missing (True when this call created it), for a caller
    that read it for more than its existence (``gitsync sync`` looks for one being deleted) and need not read it
    twice."""
    metadata: Json = {"name": namespace, "labels": {LABEL_MANAGED_BY: MANAGER}}
    try:  # create, never apply: an existing namespace is not ours to relabel (and RBAC needs no patch on it)
        cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
    except StaleError:
        return False  # created meanwhile by someone else: what we wanted
    log.info("namespace.created", namespace=namespace)
    return True


def _with_memo(inventory: Inventory, previous: Inventory, memo: DryRunMemo) -> Inventory:
    """``inventory`` with the memo's entries for its objects. A no-op keeps the stored entries, so it writes
    nothing; an inventory written anyway also takes the resourceVersions found since (a Deployment's status)."""
    kept = inventory.with_memo(memo.export(inventory.objects))
    if kept.same_content(previous):
        return kept
    memo.settle()
    return inventory.with_memo(memo.export(inventory.objects))


def _log(result: SyncResult) -> None:
    fields = {str(action): n for action, n in result.counts().items() if n}
    event = "sync.planned" if result.dry_run else ("sync.applied" if result.ok else "sync.failed")
    emit = log.info if result.ok else log.warning
    emit(
        event,
        app=result.app_env.app,
        env=result.app_env.env,
        revision=result.revision,
        digest=result.digest,
        errors=[e.error for e in result.failures][:5],
        **fields,
    )
