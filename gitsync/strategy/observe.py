"""Gathering what ``decide`` reads: the tracks' Deployments, the new version's pods, the analysis that is due.

Contract: reads only, through a ``ports.WorkloadReader`` and the analysis ``Measurer``; nothing here writes. With the
agent's watch cache a step reads nothing from the API server; without one (``health.Listed``) it costs two
Deployment GETs, a pod and a ReplicaSet LIST (only while the new version has pods) and, for a settled blue-green
app, a GET per Service and HPA the executor points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from gitsync.analysis.measure import CheckContext, Measurer
from gitsync.analysis.pod_health import PodReport, inspect_pods
from gitsync.errors import TerminalError
from gitsync.health import current_pods, pod_ready
from gitsync.model import AppEnv, Json, ObjectId
from gitsync.ports import RenderedApp, WorkloadReader
from gitsync.strategy.checks import checks_due
from gitsync.strategy.layout import (
    ANNOTATION_SPEC_HASH,
    ANNOTATION_TEMPLATE_HASH,
    Layout,
    digest,
    spec_hash,
    template_hash,
)
from gitsync.strategy.model import Observation, Track, WorkloadView, tracks
from gitsync.strategy.policy import Strategy
from gitsync.strategy.state import ACTIVE_PHASES, Command, RolloutState

__all__ = ["Observed", "live_total", "observe", "view"]


@dataclass(frozen=True, slots=True)
class Observed:
    observation: Observation
    live: Mapping[Track, Json | None]
    """The live Deployments of the stable and the new track (None: absent), for the actions that copy them."""


def observe(
    rendered: RenderedApp,
    layout: Layout,
    state: RolloutState,
    command: Command | None,
    reader: WorkloadReader,
    measurer: Measurer,
    now: float,
) -> Observed:
    """What one canary or blue-green step of ``rendered`` sees, measured at ``now``."""
    policy, key = layout.policy, rendered.app_env
    stable_track, new_track = tracks(state, policy)
    stable_live = reader.get(layout.ref(stable_track))
    new_live = reader.get(layout.ref(new_track))
    for track, live in ((stable_track, stable_live), (new_track, new_live)):
        _refuse_foreign(layout, key, track, live)
    pods = PodReport()
    new_pods: tuple[Json, ...] = ()
    stable = view(stable_live)
    if new_live is not None and int((new_live.get("status") or {}).get("replicas") or 0) > 0:
        namespace = layout.namespace
        listed, replica_sets = reader.pods(namespace), reader.replica_sets(namespace)
        new_pods = tuple(current_pods(new_live, listed, replica_sets))
        pods = inspect_pods(new_pods, policy.pod_health, now, new_live)
        if stable_live is not None:
            # While the new version serves, the stable's Ready count decides when the new version's pods may go
            # (an abort, a new revision): counted from its pods, since a Deployment's status read just after a
            # scale still counts the pods the scale removed.
            ready_pods = sum(1 for pod in current_pods(stable_live, listed, replica_sets) if pod_ready(pod))
            stable = replace(stable, ready=min(stable.ready, ready_pods))
    ctx = CheckContext(
        namespace=layout.namespace,
        app=key.app,
        env=key.env,
        # What the new version's pods are named after: the canary's ReplicaSet, or the colour's Deployment.
        workload=layout.replica_set_ref(template_hash(layout.workload.body)).name
        if new_track is Track.CANARY
        else layout.ref(new_track).name,
        stable=layout.ref(stable_track).name,
        track=new_track.value,
        pods=new_pods,
        deployment=new_live,
        pod_policy=policy.pod_health,
    )
    measurements = tuple(measurer.measure(spec, ctx, now) for spec in checks_due(state, policy, now))
    observation = Observation(
        target_hash=template_hash(layout.workload.body),
        spec_hash=spec_hash(layout.workload.body),
        total=layout.total
        if layout.replicas_rendered
        else live_total(state, stable_live, *served_by(layout, state, reader)),
        stable=stable,
        new=view(new_live),
        new_pods=pods,
        measurements=measurements,
        command=command,
        revision=rendered.revision or "",
        workload=layout.workload.id.name,
    )
    if policy.strategy is Strategy.BLUE_GREEN and state.phase not in ACTIVE_PHASES:
        observation = replace(observation, services_current=services_current(layout, reader))
    return Observed(observation, {stable_track: stable_live, new_track: new_live})


def _refuse_foreign(layout: Layout, key: AppEnv, track: Track, live: Json | None) -> None:
    """A track is found by its name (``<workload>-canary``, ``-blue``, ``-green``); one labelled as another app's
    or another tool's is not ours to scale, retemplate or delete: the rollout stops before any action (terminal,
    fixed by renaming one of the two)."""
    ref = layout.ref(track)
    owner = key.foreign(live) if ref != layout.ref(Track.STABLE) else ""
    if owner:
        raise TerminalError(
            f"{ref}: the {track.value} track of {layout.workload.id.name} has this name, but it belongs to {owner}: "
            "rename one of the two workloads"
        )


def services_current(layout: Layout, reader: WorkloadReader) -> bool:
    """Whether every Service (and HPA) the executor points carries the hash of its rendered body (a render change
    to a port, a label or an HPA's bounds must reach the cluster even though sync leaves these to the executor)."""
    wanted = [(m, layout.service_hash(role)) for role, m in layout.services.items()]
    wanted += [(m, digest(m.body)) for m in layout.autoscalers]
    for manifest, wanted_hash in wanted:
        ref = manifest.id
        live = reader.get(ObjectId(ref.group, ref.kind, ref.namespace or layout.namespace, ref.name))
        annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
        if annotations.get(ANNOTATION_SPEC_HASH) != wanted_hash:
            return False
    return True


def view(live: Json | None) -> WorkloadView:
    """What ``decide`` reads of a live Deployment (None: absent)."""
    if live is None:
        return WorkloadView()
    meta, spec, status = live.get("metadata") or {}, live.get("spec") or {}, live.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    observed = int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    rolled = (
        observed
        and int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("replicas") or 0) == replicas
        and ready >= replicas
    )
    annotations = meta.get("annotations") or {}
    # A Deployment sync applied (rolling) has no hash of ours: the live template's stands in, which no rendered
    # template matches but which tells a copy of it (``Clone``) from a copy of something older.
    hashed = annotations.get(ANNOTATION_TEMPLATE_HASH) or "live:" + template_hash(live)
    return WorkloadView(
        exists=True,
        replicas=replicas,
        ready=ready,
        template_hash=str(hashed),
        spec_hash=str(annotations.get(ANNOTATION_SPEC_HASH, "")),
        rolled=rolled,
        paused=bool(spec.get("paused")),
        observed=observed,
        pods=int(status.get("replicas") or 0),
    )


def live_total(state: RolloutState, *running: Json | None) -> int:
    """The replicas to run when the render leaves them to an HPA: the count the running rollout started with, or
    the most any of the app's ``running`` Deployments runs now (after a change of strategy the plain Deployment
    may be at zero while a colour serves), so the executor never scales the app back to a default of one."""
    if state.phase in ACTIVE_PHASES and state.replicas:
        return state.replicas
    return max(1, *(view(live).replicas for live in running))


def served_by(layout: Layout, state: RolloutState, reader: WorkloadReader) -> tuple[Json | None, ...]:
    """The colour a blue-green state says serves, when the policy is no longer blue-green (one GET, only for a
    chart that leaves replicas to an HPA): its count is the app's."""
    if layout.policy.strategy is Strategy.BLUE_GREEN or not state.stable_color:
        return ()
    return (reader.get(layout.ref(Track(state.stable_color))),)
