"""Performing a decision's actions against the cluster, and keeping the executor's tracks in the inventory.

Contract: writes through ``ports.Cluster`` (server-side apply, force, field manager ``gitsync``) and
``ports.StateStore`` (the inventory); every action is idempotent, so a step repeated after a crash is harmless.
The canary and colour Deployments the executor creates join the app's inventory like every applied object (so
removing the app removes them) and leave it when the executor removes them; sync never prunes them, as the executor
lists them in what sync must leave alone (``Layout.owned``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gitsync import inventory as inventories
from gitsync import log as logging
from gitsync.errors import GitsyncError
from gitsync.events import EventType, Reason
from gitsync.model import AppEnv, Json, ObjectId
from gitsync.normalise import SERVER_OWNED_ANNOTATIONS, SERVER_OWNED_METADATA
from gitsync.ports import Cluster, StateStore, WorkloadReader
from gitsync.strategy.layout import (
    ANNOTATION_TEMPLATE_HASH,
    LABEL_TRACK,
    Layout,
    controller_ref,
    selector_of,
    template_hash,
    track_ref,
)
from gitsync.strategy.model import (
    Action,
    Clone,
    Deploy,
    Emit,
    Fold,
    FoldStage,
    Remove,
    Route,
    Scale,
    ServiceRole,
    Track,
)
from gitsync.strategy.observe import view

__all__ = ["HANDOVER_MANAGER", "Events", "Where", "hand_replicas_over", "keep_inventory", "perform"]

log = logging.get("gitsync.strategy")

HANDOVER_MANAGER = "gitsync-handover"


class Events(Protocol):
    def event(self, key: AppEnv, namespace: str, reason: Reason, message: str) -> Json: ...


@dataclass(frozen=True, slots=True)
class Where:
    """Where an app's tracks live: enough to remove one or post an Event without the render's workload."""

    key: AppEnv
    namespace: str
    workload: str
    found: Mapping[Track, tuple[ObjectId, ...]] = field(default_factory=dict)
    """Tracks found by their labels (``made_deployments``), which name them when the workload cannot."""

    def refs(self, track: Track) -> tuple[ObjectId, ...]:
        return self.found.get(track) or (track_ref(self.namespace, self.workload, track),)


def perform(
    action: Action,
    layout: Layout | None,
    where: Where,
    cluster: Cluster,
    live: Mapping[Track, Json | None],
    events: Events,
    reader: WorkloadReader,
) -> str:
    key, namespace = where.key, where.namespace
    if isinstance(action, Remove):
        refs = where.refs(action.track)
        if not where.found.get(action.track):  # named, not found by its labels: a name is no proof of ownership
            refs = tuple(ref for ref in refs if not _foreign(ref, key, reader))
        for ref in refs:
            cluster.delete(ref)
        return "remove " + ", ".join(str(ref) for ref in refs) if refs else ""
    if isinstance(action, Emit):
        # EventSink builds the Event (name, involved object, timestamps, its type from the reason).
        event = events.event(key, namespace, action.reason, action.message)
        try:
            cluster.apply(event)
        except GitsyncError as e:  # events are best effort, as in Kubernetes itself
            log.warning("rollout.event_failed", app=key.app, env=key.env, reason=action.reason, error=str(e))
        level = log.warning if action.type is EventType.WARNING else log.info
        level("rollout.event", app=key.app, env=key.env, reason=action.reason, message=action.message)
        return ""
    assert layout is not None, f"{action!r} needs the rendered workload"
    if isinstance(action, Deploy):
        if action.track is Track.CANARY:
            return _deploy_canary(action, layout, cluster, live, reader)
        wanted = layout.body(action.track, action.replicas)
        current = live.get(action.track)
        if current is not None and _empty(current) and selector_of(current) != selector_of(wanted):
            # A colour at zero (the old one after a scale-down, the new one after an abort) serves nothing: one
            # made under an earlier selector, which is immutable, is made again, so blue-green can roll out a
            # selector change (the switch then points the active Service at the new selector).
            cluster.delete(layout.ref(action.track))
        cluster.apply(wanted, force=True)
        return f"deploy {layout.ref(action.track)} replicas={action.replicas}"
    if isinstance(action, Fold):
        return _fold(action, layout, cluster, live, reader)
    if isinstance(action, Clone):
        stable = live.get(Track.STABLE)
        if stable is None:
            return ""
        copied = scaled(stable, action.replicas)
        # The copy carries the hash of what it copied, so a stale copy is never taken for a current one.
        copied["metadata"].setdefault("annotations", {})[ANNOTATION_TEMPLATE_HASH] = view(stable).template_hash
        # Its pods also carry what the rendered active Service selects, which the commit bringing blue-green may
        # have changed: the Service is routed to the copy next and must find its pods.
        active = layout.service_body(ServiceRole.ACTIVE, action.track) or {}
        pod_labels = copied["spec"].setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        pod_labels.update((active.get("spec") or {}).get("selector") or {})
        cluster.apply(layout.coloured(copied, action.track), force=True)
        return f"clone {layout.ref(Track.STABLE)} -> {layout.ref(action.track)} replicas={action.replicas}"
    if isinstance(action, Scale):
        current = live.get(action.track, None) if action.track in live else reader.get(layout.ref(action.track))
        if current is None:
            return ""
        resized = scaled(current, action.replicas)
        if action.track is Track.STABLE:
            resized["spec"]["paused"] = action.pause
        cluster.apply(resized, force=True)
        paused = ", paused" if action.pause else ""
        return f"scale {layout.ref(action.track)} replicas={action.replicas}{paused}"
    if isinstance(action, Route):
        body = layout.service_body(action.service, action.track)
        if body is None:
            return ""
        cluster.apply(body, force=True)
        done = f"route {ObjectId.of(body)} -> {action.track}"
        if action.service is ServiceRole.ACTIVE:  # the HPA follows the workload that takes the traffic
            for manifest in layout.autoscalers:
                cluster.apply(layout.autoscaler_body(manifest, action.track), force=True)
                done += f", {manifest.id} -> {layout.ref(action.track).name}"
        return done
    raise AssertionError(f"unknown action {action!r}")


def _deploy_canary(
    action: Deploy, layout: Layout, cluster: Cluster, live: Mapping[Track, Json | None], reader: WorkloadReader
) -> str:
    """The paused canary Deployment at ``action.replicas``, and its ReplicaSet (``Layout.replica_set``) when the
    canary is new. A canary left by an earlier rollout (at zero after an abort or a supersede) is deleted first:
    a paused Deployment given a new template would scale its old ReplicaSet up, not make a new one. So is one an
    older agent made with ``gitsync.dev/track`` in its (immutable) selector."""
    ref = layout.ref(Track.CANARY)
    current = live.get(Track.CANARY)
    wanted = layout.body(Track.CANARY, action.replicas)
    if current is not None and (
        view(current).template_hash != template_hash(layout.workload.body)
        or selector_of(current) != selector_of(wanted)
    ):
        cluster.delete(ref)
        current = None
    stable = live.get(Track.STABLE)
    if stable is not None:
        owned_by(wanted, stable)
    canary = cluster.apply(wanted, force=True)
    replica_set = layout.replica_set(canary)
    if current is None or reader.get(ObjectId.of(replica_set)) is None:
        cluster.apply(replica_set, force=True)
    return f"deploy {ref} replicas={action.replicas}"


def _fold(
    action: Fold, layout: Layout, cluster: Cluster, live: Mapping[Track, Json | None], reader: WorkloadReader
) -> str:
    """One stage of handing the canary's ReplicaSet to the stable Deployment (``model.FoldStage``)."""
    stable_ref, canary_ref = layout.ref(Track.STABLE), layout.ref(Track.CANARY)
    stable, canary = live.get(Track.STABLE), live.get(Track.CANARY)
    if stable is None:
        return ""
    if action.stage is FoldStage.HOLD:
        if canary is None:
            return ""
        dropped = [ObjectId.of(rs) for rs in reader.replica_sets(layout.namespace) if _controlled_by(rs, stable)]
        for ref in dropped:
            cluster.delete(ref)
        body = scaled(canary, action.replicas)
        meta = body["metadata"]
        meta.pop("ownerReferences", None)
        (meta.get("labels") or {}).pop(LABEL_TRACK, None)
        meta["name"] = stable_ref.name
        body["spec"]["paused"] = True
        cluster.apply(body, force=True)
        return f"hold {stable_ref} paused with the canary's template, dropped {len(dropped)} empty ReplicaSet(s)"
    if action.stage is FoldStage.ADOPT:
        owned = [rs for rs in reader.replica_sets(layout.namespace) if _controlled_by(rs, canary)]
        for rs in owned:
            meta = rs.get("metadata") or {}
            spec = rs.get("spec") or {}
            cluster.apply(
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": meta.get("name"),
                        "namespace": meta.get("namespace"),
                        "labels": meta.get("labels") or {},
                        "annotations": {
                            k: v for k, v in (meta.get("annotations") or {}).items() if k == ANNOTATION_TEMPLATE_HASH
                        },
                        "ownerReferences": [controller_ref(stable)],
                    },
                    "spec": {"selector": spec.get("selector"), "template": spec.get("template")},
                },
                force=True,
            )
        return f"adopt {', '.join(str(ObjectId.of(rs)) for rs in owned)} into {stable_ref}"
    resumed = scaled(stable, action.replicas)
    resumed["spec"]["paused"] = False
    cluster.apply(resumed, force=True)
    cluster.delete(canary_ref)
    return f"resume {stable_ref}, remove {canary_ref}"


def _empty(deployment: Json) -> bool:
    """Scaled to zero: whatever pods it still has are going, and no Service the executor points selects them."""
    return not int((deployment.get("spec") or {}).get("replicas", 1))


def _foreign(ref: ObjectId, key: AppEnv, reader: WorkloadReader) -> bool:
    """Whether ``ref`` is labelled as another app's or tool's (kept, and said so in the log)."""
    owner = key.foreign(reader.get(ref))
    if owner:
        log.warning("rollout.track_not_ours", app=key.app, env=key.env, object=str(ref), owner=owner)
    return bool(owner)


def _owners(obj: Json) -> list[Json]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def _controlled_by(obj: Json, owner: Json | None) -> bool:
    uid = ((owner or {}).get("metadata") or {}).get("uid")
    return bool(uid) and any(ref.get("uid") == uid and ref.get("controller") for ref in _owners(obj))


def owned_by(body: Json, owner: Json) -> None:
    """Make the canary Deployment a dependent of the stable one, as Argo Rollouts' ReplicaSets are of their
    Rollout: when the stable Deployment is deleted (pruned because it left the render, or by hand) mid-rollout or
    after an abort, Kubernetes' garbage collector removes the canary and its pods too, instead of leaving them
    serving behind the app's Service."""
    meta = owner.get("metadata") or {}
    body.setdefault("metadata", {})["ownerReferences"] = [
        {
            "apiVersion": str(owner.get("apiVersion") or "apps/v1"),
            "kind": "Deployment",
            "name": str(meta.get("name", "")),
            "uid": str(meta.get("uid", "")),
        }
    ]


def scaled(live: Json, replicas: int) -> Json:
    """The live Deployment as an apply body with new replicas: same template, nothing server-owned."""
    body = copy.deepcopy(live)
    body.pop("status", None)
    meta = body.get("metadata") or {}
    for name in SERVER_OWNED_METADATA:
        meta.pop(name, None)
    for name in SERVER_OWNED_ANNOTATIONS:
        (meta.get("annotations") or {}).pop(name, None)
    body.setdefault("spec", {})["replicas"] = replicas
    return body


def hand_replicas_over(cluster: Cluster, live: Json) -> None:
    """Give the Deployment back to sync without losing its replica count. The executor applied ``replicas`` as
    field manager ``gitsync``; sync (the same manager) applies a render without them, and a field its only owner
    drops is reset to the default of one. So another manager first co-owns the current count, as the Kubernetes
    docs describe for handing replicas to an HPA, which then takes it over."""
    meta = live.get("metadata") or {}
    body: Json = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": {"replicas": view(live).replicas},
    }
    cluster.apply(body, force=True, manager=HANDOVER_MANAGER)


def keep_inventory(
    store: StateStore, where: Where, namespace: str, performed: Iterable[Action], present: Iterable[ObjectId] = ()
) -> None:
    """Keep the tracks a step touched in the app's inventory (stored in ``namespace``): the ones it applied, copied
    to or scaled, and the ``present`` ones it found (adopting tracks made before they were inventoried), join it;
    the ones it removed leave it. ``performed``: the actions that did something. No request unless a track was
    touched; then one read, and a write only when the inventory changes (``TransientError`` on a concurrent
    write: the step is repeated)."""
    made: set[ObjectId] = set()
    removed: set[ObjectId] = set()
    for action in performed:
        if isinstance(action, Deploy | Clone | Scale) and action.track is not Track.STABLE:
            made.update(where.refs(action.track))
        elif isinstance(action, Remove):
            removed.update(where.refs(action.track))
        elif isinstance(action, Fold) and action.stage is FoldStage.RELEASE:
            removed.update(where.refs(Track.CANARY))
    if not made and not removed:
        return
    before = inventories.load(store, where.key, namespace)
    after = before.adding({*made, *present} - removed).removing(removed)
    if after.objects != before.objects:
        inventories.save(store, where.key, namespace, after, before)
