"""The plan stage: what a sync would change, decided by the API server itself.

For every desired manifest the server runs a server-side apply with ``dryRun=All``; the object has drifted when
that result differs from the live object after both are normalised (server-owned fields removed, ignored fields
removed). Comparing against the server's own merge, not the manifest, is what makes defaulted fields, fields
other managers own (an HPA's ``replicas``) and list merges come out right without a schema.

Contract:
- ``plan`` only reads and dry-runs: it never writes. A dry-run that fails terminally puts an ``error`` on its
  change, and a plan with errors must apply nothing (``Plan.errors``); a transient failure (network, 429, 5xx)
  raises ``TransientError`` out of ``plan``, for the caller to retry after its backoff.
- ``gitsync.normalise`` gives the comparison form and the diff text (Secret values never appear in a diff, only a
  keyed hash per key so a change stays visible).
- A ``DryRunMemo`` (``gitsync.memo``) skips the dry-run of an object whose manifest and normalised live content
  are those of the last dry-run (or apply) that left nothing to change: with a watch-fed ``LiveReader`` a no-op
  plan makes no API request, and with the memo kept in the inventory a one-shot ``gitsync diff`` makes a handful
  of LISTs.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from gitsync import log as logging
from gitsync.errors import (
    FieldConflictError,
    GitsyncError,
    InvalidObjectError,
    NotFoundError,
    Retry,
    StaleError,
    TerminalError,
    retry_of,
)
from gitsync.judge import Judge
from gitsync.memo import DryRunMemo
from gitsync.model import (
    ANNOTATION_FORCE,
    ANNOTATION_PRUNE,
    ANNOTATION_RECREATE,
    AppEnv,
    Json,
    Manifest,
    ObjectId,
    apply_order,
)
from gitsync.normalise import diff_text, ignored_pointers, normalise
from gitsync.ownership import takes_over
from gitsync.ports import Cluster, LiveReader
from gitsync.served import when_schema_current, when_served

__all__ = [
    "PARENT_KINDS",
    "ListSnapshot",
    "Plan",
    "PlanAction",
    "PlannedChange",
    "defined_kind",
    "plan",
]

log = logging.get("gitsync.plan")

DRY_RUN_WORKERS = 8
"""Concurrent dry-runs; the API server handles them in parallel, and 1,000 objects one by one take too long."""


class PlanAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class PlannedChange:
    """One object's planned change. ``result`` is the dry-run's would-be object (None when not dry-run);
    ``live`` and ``result`` are both None for an unchanged object settled without reading it (``versions_first``).

    ``recreate``: an immutable field changes, the object opted in to delete-and-recreate, and the replacement
    passed a dry-run create. ``force``: apply takes over fields other managers own (``--force``, the annotation,
    or a person's kubectl edit: ``ownership.takes_over``). ``error``: the dry-run failed, ``retry`` says whether
    trying again may help; nothing may be applied, unless ``conflict``: fields another owner holds (a controller),
    which fails this object alone.
    ``compared``: the normalised (before, after) the ``diff`` is made of, on demand: only ``gitsync diff`` shows
    it, and printing 1,000 objects as YAML would cost a sync more than its requests.
    ``judged``: a create the client proved acceptable (``gitsync.judge``), so it was not dry-run.
    ``deferred``: not validated yet, because its Namespace or CRD is itself created or changed by this plan: the
    caller applies those parents first and plans again (``gitsync.sync``).
    """

    id: ObjectId
    action: PlanAction
    desired: Manifest | None = None
    live: Json | None = field(default=None, repr=False)
    result: Json | None = field(default=None, repr=False)
    compared: tuple[Json | None, Json | None] | None = field(default=None, repr=False)
    force: bool = False
    recreate: bool = False
    error: str | None = None
    retry: Retry | None = None
    conflict: bool = False
    judged: bool = False
    deferred: bool = False

    @property
    def diff(self) -> str:
        """A ``kubectl diff``-style unified diff, Secret values masked; empty when nothing differs."""
        return "" if self.compared is None else diff_text(self.id, *self.compared)


@dataclass(frozen=True, slots=True)
class Plan:
    """All changes of one app-env, in apply order; ``stale`` lists inventory entries no longer rendered (deleted
    or already gone), ``orphaned`` the stale ones kept: they carry ``gitsync.dev/prune: "false"``, or the caller
    keeps them (the environment's own namespace)."""

    changes: tuple[PlannedChange, ...]
    stale: tuple[ObjectId, ...] = ()
    orphaned: tuple[ObjectId, ...] = ()

    def of(self, action: PlanAction) -> tuple[PlannedChange, ...]:
        return tuple(c for c in self.changes if c.action is action)

    @property
    def errors(self) -> tuple[PlannedChange, ...]:
        """Changes the server refused: any of them means nothing of the plan may be applied."""
        return tuple(c for c in self.changes if c.error is not None and not c.conflict)

    @property
    def conflicts(self) -> tuple[PlannedChange, ...]:
        """Changes blocked by fields another owner holds: each fails alone, the rest of the plan goes on."""
        return tuple(c for c in self.changes if c.conflict)

    @property
    def has_changes(self) -> bool:
        return any(c.action is not PlanAction.UNCHANGED for c in self.changes)

    @property
    def finished_jobs(self) -> frozenset[ObjectId]:
        """Jobs that run once (``Manifest.runs_once``) planned unchanged: absent, their TTL removed them after
        they finished, which health reads as healthy."""
        unchanged = self.of(PlanAction.UNCHANGED)
        return frozenset(c.id for c in unchanged if c.desired is not None and c.desired.runs_once)

    def counts(self) -> dict[PlanAction, int]:
        return {action: len(self.of(action)) for action in PlanAction}

    def summary(self) -> str:
        n = self.counts()
        return (
            f"{n[PlanAction.CREATE]} to create, {n[PlanAction.UPDATE]} to change, "
            f"{n[PlanAction.DELETE]} to delete, {n[PlanAction.UNCHANGED]} unchanged"
        )


# -- pure parts ------------------------------------------------------------------------------------------------


def wants_force(manifest: Manifest, force: bool) -> bool:
    return force or manifest.annotations.get(ANNOTATION_FORCE) == "true"


class ListSnapshot:
    """A ``LiveReader`` for one-shot commands without a watch cache: the first read of a (kind, namespace) lists
    it once, later reads answer from that list. 1,000 objects of three kinds cost three requests, not 1,000.

    ``prefetch`` starts the lists of many kinds at once, so the server prepares one while this process decodes
    another. A kind that is not served (its CRD is not there yet) raises ``NotFoundError`` on every read, as a
    GET would.

    ``versions_first`` is for a plan whose unchanged objects need not be read (``gitsync diff``): kinds are
    listed as metadata first, and ``metadata`` answers from that, so the objects a ``DryRunMemo`` knows at their
    current resourceVersion are settled without their content; a kind is listed in full only when ``get`` asks.
    In a no-op diff of 1,000 objects that is a third of the bytes to fetch and decode.
    """

    def __init__(self, cluster: Cluster, *, versions_first: bool = False) -> None:
        self._cluster = cluster
        self.versions_first = versions_first
        self._lists: dict[tuple[_ListKey, bool], dict[str, Json]] = {}
        self._locks: dict[tuple[_ListKey, bool], threading.Lock] = {}
        self._requested: set[_ListKey] = set()
        self._lock = threading.Lock()

    def get(self, ref: ObjectId) -> Json | None:
        return self._listed((ref.group, ref.kind, ref.namespace), False).get(ref.name)

    def metadata(self, ref: ObjectId) -> Json | None:
        """The object as a metadata list has it (the full object when its kind was listed in full), None when it
        does not exist."""
        key = (ref.group, ref.kind, ref.namespace)
        listed = self._lists.get((key, False))
        if listed is None:
            listed = self._listed(key, self.versions_first)
        return listed.get(ref.name)

    def prefetch(self, refs: Iterable[ObjectId], pool: ThreadPoolExecutor) -> None:
        """List the kinds of ``refs`` on ``pool``, those not asked for before; a list that fails here is listed
        again, and fails, on read. A command previewing many apps prefetches all their kinds at once on one
        pool, so each app's plan then starts no thread of its own (a thread started while others hold the GIL
        waits for it: about 50 thread starts were an eighth of a profiled no-op diff of ten apps)."""
        keys = {(ref.group, ref.kind, ref.namespace) for ref in refs}
        with self._lock:
            keys -= self._requested
            self._requested |= keys
        for key in sorted(keys):
            pool.submit(self._listed_if_served, key)

    def _listed_if_served(self, key: _ListKey) -> None:
        with contextlib.suppress(GitsyncError):
            self._listed(key, self.versions_first)

    def _listed(self, key: _ListKey, metadata_only: bool) -> dict[str, Json]:
        with self._lock:
            lock = self._locks.setdefault((key, metadata_only), threading.Lock())
        with lock:  # one list per kind, however many threads read it first
            listed = self._lists.get((key, metadata_only))
            if listed is None:
                with _PAUSED_COLLECTOR:
                    items = self._cluster.list(*key, metadata_only=metadata_only).items
                listed = {str((i.get("metadata") or {}).get("name", "")): i for i in items}
                self._lists[(key, metadata_only)] = listed
        return listed


_ListKey = tuple[str, str, str]
"""(group, kind, namespace) of one list."""


class _CollectorPause:
    """Pauses Python's cyclic garbage collector while any thread is inside (re-entrant across threads).

    Decoding a list of 1,000 objects allocates tens of thousands of dicts and lists, which triggers a hundred
    collections, one of them full, that free nothing (decoded JSON has no cycles): measured 16 ms of a 0.28 s
    ``gitsync diff``. Reference counting still frees everything as usual meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._resume:
                gc.enable()


_PAUSED_COLLECTOR = _CollectorPause()


# -- the stage -------------------------------------------------------------------------------------------------


def plan(
    manifests: Sequence[Manifest],
    cluster: Cluster,
    *,
    inventory: Collection[ObjectId] = (),
    live: LiveReader | None = None,
    force: bool = False,
    memo: DryRunMemo | None = None,
    workers: int = DRY_RUN_WORKERS,
    new_namespaces: Collection[str] = (),
    new_kinds: Collection[tuple[str, str]] = (),
    judge: Judge | None = None,
    keep: Collection[ObjectId] = (),
    settling_kinds: Collection[tuple[str, str]] = (),
    owner: AppEnv | None = None,
) -> Plan:
    """Dry-run every manifest and compare with live; inventory entries no longer rendered become deletes.

    ``live`` answers reads (the watch cache); a ``ListSnapshot`` of the cluster when None. Objects whose
    Namespace or CRD is itself about to be created cannot be dry-run yet: they are planned as creates and
    validated when applied, after their dependency exists. ``new_namespaces`` are missing namespaces the caller
    creates before applying (the environment's own, as ``sync`` and the agent do): the same holds in them.
    ``new_kinds`` are (group, kind) pairs whose CRDs other apps of the environment render (``defined_kind``): a
    preview of the whole environment plans their objects as creates while those CRDs are not installed yet.
    ``judge``: creates it proves acceptable are planned without a dry-run (``gitsync.judge``; a sync that applies,
    not a preview, whose diff shows the server's defaults). ``keep``: inventory entries never deleted when they
    leave the render (released from the inventory as orphaned instead). ``owner``: the app-env whose inventory
    this is; a stale entry whose live object does not carry its ownership labels is never deleted but released
    as orphaned (another app took it over, or the entry names what was never gitsync's to delete).

    A custom resource whose CRD this plan changes is validated by the CRD it will have: its dry-run is not
    trusted now, and one the current schema refuses (a field the new version adds) is ``deferred``, not an
    error. ``settling_kinds`` are (group, kind) pairs whose CRDs the caller has just changed (that second
    plan): a refusal of theirs is asked again for a moment (``served.when_schema_current``).
    """
    reader: LiveReader = live if live is not None else ListSnapshot(cluster)
    desired_ids = {m.id for m in manifests}
    pending = _PendingParents(manifests, new_namespaces, new_kinds, settling_kinds)
    ordered = sorted(manifests, key=lambda m: apply_order(m.id))
    parents = [m for m in ordered if m.id.kind in PARENT_KINDS]
    children = [m for m in ordered if m.id.kind not in PARENT_KINDS]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        if isinstance(reader, ListSnapshot):
            reader.prefetch((m.id for m in manifests), pool)
        changes = _plan_batch(parents, pool, cluster, reader, pending, force, memo, judge)
        pending.created = {c.id for c in changes if c.action is PlanAction.CREATE and c.error is None}
        pending.changed = {c.id for c in changes if c.action is PlanAction.UPDATE and c.error is None}
        changes += _plan_batch(children, pool, cluster, reader, pending, force, memo, judge)

    stale = sorted((ref for ref in inventory if ref not in desired_ids), key=apply_order)
    orphaned: list[ObjectId] = []
    for ref in stale:
        try:
            obj = reader.get(ref)
        except NotFoundError:
            obj = None  # the kind itself is gone (its CRD was deleted): nothing left to delete
        if obj is None:
            continue
        if ref in keep or ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_PRUNE) == "false":
            orphaned.append(ref)
            continue
        if owner is not None and not owner.owns(obj):
            log.warning("prune.not_owned", app=owner.app, env=owner.env, object=str(ref))
            orphaned.append(ref)
            continue
        changes.append(PlannedChange(ref, PlanAction.DELETE, live=obj, compared=(normalise(obj), None)))
    return Plan(tuple(changes), tuple(stale), tuple(orphaned))


def _plan_batch(
    manifests: Sequence[Manifest],
    pool: ThreadPoolExecutor,
    cluster: Cluster,
    reader: LiveReader,
    pending: _PendingParents,
    force: bool,
    memo: DryRunMemo | None,
    judge: Judge | None = None,
) -> list[PlannedChange]:
    """Memo hits and judged creates are decided in this thread (pure CPU: threads would only contend for the GIL);
    the remaining dry-runs go to the pool. The reader is expected to answer from memory (watch cache,
    ``ListSnapshot``)."""
    known: dict[ObjectId, PlannedChange] = {}
    todo: list[tuple[Manifest, Json | None]] = []
    versions = reader if isinstance(reader, ListSnapshot) and reader.versions_first else None
    for manifest in manifests:
        if versions is not None and memo is not None and _settled(manifest, versions, memo):
            known[manifest.id] = PlannedChange(
                manifest.id, PlanAction.UNCHANGED, manifest, force=wants_force(manifest, force)
            )
            continue
        try:
            current = reader.get(manifest.id)
        except NotFoundError:
            current = None  # the kind is not served yet: its CRD may be in this very render
        if current is None and manifest.runs_once and memo is not None and memo.applied(manifest.id, manifest):
            # it ran, and its TTL removed it: not created again until its body changes
            known[manifest.id] = PlannedChange(
                manifest.id, PlanAction.UNCHANGED, manifest, force=wants_force(manifest, force)
            )
        elif current is not None and memo is not None and memo.unchanged(manifest.id, manifest, current):
            forced = wants_force(manifest, force)
            known[manifest.id] = PlannedChange(
                manifest.id, PlanAction.UNCHANGED, manifest, current, current, force=forced
            )
        elif (
            current is None
            and judge is not None
            and not pending.awaits_parent(manifest.id)
            and not pending.schema_changes(manifest.id)  # the judge reads the CRD as it is, not as it will be
            and judge.accepts(manifest)
        ):
            compared = (None, normalise(manifest.body))
            forced = wants_force(manifest, force)
            known[manifest.id] = PlannedChange(
                manifest.id, PlanAction.CREATE, manifest, None, None, compared, forced, judged=True
            )
        else:
            todo.append((manifest, current))
    one = logging.in_caller_context(lambda item: _dry_run(item[0], item[1], cluster, pending, force, memo))
    for change in pool.map(one, todo):
        known[change.id] = change
    return [known[m.id] for m in manifests]


def _settled(manifest: Manifest, reader: ListSnapshot, memo: DryRunMemo) -> bool:
    """Unchanged by the memo, decided from a metadata list (``versions_first``): resourceVersion, or generation
    and metadata for workloads."""
    try:
        return memo.unchanged_meta(manifest.id, manifest, reader.metadata(manifest.id))
    except NotFoundError:
        return False  # the kind is not served yet: get() and the dry-run decide


def _dry_run(
    manifest: Manifest,
    current: Json | None,
    cluster: Cluster,
    pending: _PendingParents,
    force: bool,
    memo: DryRunMemo | None,
) -> PlannedChange:
    ref = manifest.id
    forced = wants_force(manifest, force)
    ignore = ignored_pointers(manifest.body)
    try:
        try:

            def request() -> Json:
                return cluster.apply(manifest.body, dry_run=True, force=forced)

            def dry_run() -> Json:
                return when_schema_current(request) if pending.schema_settling(ref) else request()

            # A kind whose CRD this plan creates cannot be served yet; any other may be about to be (served.py).
            result = dry_run() if pending.awaits_parent(ref) else when_served(ref, dry_run, cluster)
        except FieldConflictError as e:
            if not takes_over(e, ignore):
                return _failed(manifest, current, forced, e, conflict=True)
            forced = True  # a person's kubectl edit: drift to take back (ownership module)
            result = cluster.apply(manifest.body, dry_run=True, force=True)
    except InvalidObjectError as e:
        if pending.schema_changes(ref):  # refused by the schema its CRD is about to lose
            return _deferred(manifest, current, forced, ignore)
        if e.immutable and current is not None and manifest.annotations.get(ANNOTATION_RECREATE) == "true":
            return _replacement(manifest, current, cluster, forced)
        return _failed(manifest, current, forced, e)
    except NotFoundError as e:
        if current is None and pending.awaits_parent(ref):
            return _deferred(manifest, None, forced, ignore)
        return _failed(manifest, current, forced, e)
    except TerminalError as e:  # transient errors propagate: the caller retries the whole plan later
        return _failed(manifest, current, forced, e)
    if current is None:
        return PlannedChange(ref, PlanAction.CREATE, manifest, None, result, (None, normalise(result)), forced)
    before, after = normalise(current, ignore), normalise(result, ignore)
    if before == after:
        if memo is not None:
            memo.remember(ref, manifest, current)
        return PlannedChange(ref, PlanAction.UNCHANGED, manifest, current, result, force=forced)
    if memo is not None:
        memo.forget(ref)
    return PlannedChange(ref, PlanAction.UPDATE, manifest, current, result, (before, after), forced)


def _deferred(manifest: Manifest, current: Json | None, forced: bool, ignore: Sequence[str]) -> PlannedChange:
    """A change that cannot be validated before its parent is applied; its diff is against the body as written."""
    action = PlanAction.CREATE if current is None else PlanAction.UPDATE
    before = None if current is None else normalise(current, ignore)
    compared = (before, normalise(manifest.body, ignore))
    return PlannedChange(manifest.id, action, manifest, current, None, compared, forced, deferred=True)


def _replacement(manifest: Manifest, current: Json, cluster: Cluster, forced: bool) -> PlannedChange:
    """A recreate, planned only when the replacement would be accepted: a dry-run create of it under its own name
    passes validation and admission and then finds the name taken (``StaleError``), or is refused for its content.
    Nothing is deleted for a body the server would not take back."""
    try:
        cluster.create(manifest.body, dry_run=True)
    except StaleError:
        compared = (normalise(current), normalise(manifest.body))
        return PlannedChange(manifest.id, PlanAction.UPDATE, manifest, current, None, compared, forced, recreate=True)
    except TerminalError as e:
        return _failed(manifest, current, forced, e)
    # Accepted as new although the name is taken: deleted meanwhile. The apply creates it.
    return PlannedChange(manifest.id, PlanAction.UPDATE, manifest, current, None, None, forced)


def _failed(
    manifest: Manifest, current: Json | None, forced: bool, error: GitsyncError, *, conflict: bool = False
) -> PlannedChange:
    action = PlanAction.CREATE if current is None else PlanAction.UPDATE
    return PlannedChange(
        manifest.id,
        action,
        manifest,
        current,
        None,
        None,
        forced,
        error=str(error),
        retry=retry_of(error),
        conflict=conflict,
    )


def defined_kind(manifest: Manifest) -> tuple[str, str] | None:
    """The (group, kind) a CRD manifest defines; None for anything else."""
    if manifest.id.kind != "CustomResourceDefinition":
        return None
    spec = manifest.body.get("spec") or {}
    return str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", ""))


PARENT_KINDS = frozenset({"Namespace", "CustomResourceDefinition"})
"""Kinds others live in: planned, applied and waited for first."""


class _PendingParents:
    """Namespaces and CRDs this plan creates, so a child whose parent does not exist yet is planned as a create.

    Parents are planned first; a child is excused only when its parent is a create in the same plan, so a typo
    in a namespace or kind still fails its dry-run.
    """

    def __init__(
        self,
        manifests: Iterable[Manifest],
        new_namespaces: Collection[str] = (),
        new_kinds: Collection[tuple[str, str]] = (),
        settling_kinds: Collection[tuple[str, str]] = (),
    ) -> None:
        self._namespaces = {m.id.name for m in manifests if m.id.kind == "Namespace" and not m.id.group}
        self._new_namespaces = frozenset(new_namespaces)
        self._new_kinds = frozenset(new_kinds)
        self._settling = frozenset(settling_kinds)
        self._kinds: dict[tuple[str, str], ObjectId] = {}
        for m in manifests:
            defined = defined_kind(m)
            if defined is not None:
                self._kinds[defined] = m.id
        self.created: set[ObjectId] = set()
        self.changed: set[ObjectId] = set()
        """Parents this plan updates (planned first): a CRD among them changes its custom resources' schema."""

    def schema_changes(self, ref: ObjectId) -> bool:
        """``ref`` is a custom resource whose CRD this plan updates."""
        crd = self._kinds.get((ref.group, ref.kind))
        return crd is not None and crd in self.changed

    def schema_settling(self, ref: ObjectId) -> bool:
        """``ref``'s CRD was changed by the caller a moment ago (``plan``'s ``settling_kinds``)."""
        return (ref.group, ref.kind) in self._settling

    def awaits_parent(self, ref: ObjectId) -> bool:
        crd = self._kinds.get((ref.group, ref.kind))
        if crd is not None and crd in self.created:
            return True
        if (ref.group, ref.kind) in self._new_kinds or ref.namespace in self._new_namespaces:
            return True
        return ref.namespace in self._namespaces and ObjectId("", "Namespace", "", ref.namespace) in self.created
