"""The thin layer that runs one rollout step against the cluster: gather, ``decide``, act, persist.

Contract: I/O only through the ports (``Cluster``, ``StateStore``, ``Clock``, the analysis ports); every
decision is ``decide.decide``'s. One ``advance`` call costs a handful of API requests (load state, GET two
Deployments, LIST the new version's pods, the actions, save state) and never sleeps: it returns when to look
again. The agent calls it once per reconcile before ``sync_app``, which must skip ``StepOutcome.exclude``: the
executor applies those objects itself (the Deployment under canary/blue-green, the Services it points, under
blue-green the app's HPA). A rolling app costs one state read, and nothing more unless an earlier canary or
blue-green left tracks to hand over (``decide.retire``).

Workloads per track (``decide.Track``): canary keeps the rendered Deployment as the stable track and runs
the new template as ``<name>-canary`` whose pods and selector carry ``gitsync.dev/track: canary``; the rendered
Service selects the app's labels and so spans both. Blue-green runs ``<name>-blue`` and ``<name>-green`` (pods
and selectors carry ``gitsync.dev/color``); the active and preview Services get that label in their selectors.
Each Deployment the executor applies carries the hash of its pod template (``gitsync.dev/template-hash``),
which is how a resumed agent knows what runs where, and how its Deployments are told from rendered ones
(``made_deployments``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gitsync import log as logging
from gitsync.analysis.measure import CheckContext, Measurer
from gitsync.analysis.pod_health import PodReport, inspect_pods
from gitsync.errors import GitsyncError
from gitsync.events import EventSink, Reason
from gitsync.health import current_pods
from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, MANAGER, AppEnv, Json, Manifest, ObjectId
from gitsync.plan import SERVER_OWNED_ANNOTATIONS, SERVER_OWNED_METADATA
from gitsync.ports import Clock, Cluster, RenderedApp, StateStore
from gitsync.strategy.decide import (
    Action,
    Clone,
    Deploy,
    Emit,
    Observation,
    Remove,
    Route,
    Scale,
    ServiceRole,
    Track,
    WorkloadView,
    checks_due,
    decide,
    retire,
    tracks,
)
from gitsync.strategy.policy import PolicyError, RolloutPolicy, Strategy, parse_policy
from gitsync.strategy.state import ACTIVE_PHASES, Command, Phase, RolloutState

__all__ = [
    "ANNOTATION_SPEC_HASH",
    "ANNOTATION_TEMPLATE_HASH",
    "LABEL_COLOR",
    "LABEL_TRACK",
    "PART",
    "RolloutDriver",
    "StepOutcome",
    "advance",
    "as_kept",
    "made_deployments",
    "owned",
    "template_hash",
]

log = logging.get("gitsync.strategy")

PART = "rollout"
"""The state-store part holding ``{"state": ..., "command": ...}``."""
LABEL_TRACK = "gitsync.dev/track"
LABEL_COLOR = "gitsync.dev/color"
ANNOTATION_TEMPLATE_HASH = "gitsync.dev/template-hash"
ANNOTATION_SPEC_HASH = "gitsync.dev/spec-hash"


class Events(Protocol):
    def event(self, key: AppEnv, namespace: str, reason: Reason, message: str) -> Json: ...


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one ``advance`` did: the phase after it, a one-line message, and when to call again (None: on
    the next change only)."""

    phase: Phase
    message: str
    requeue_after: float | None
    actions: tuple[str, ...] = ()
    exclude: frozenset[ObjectId] = frozenset()
    """RenderedApp objects the executor applies itself: ``sync_app(..., exclude=outcome.exclude)``."""
    serving: frozenset[ObjectId] = frozenset()
    """The live Deployments that run the app now (stable, plus the new version while it rolls out); health
    checks read these in place of the rendered Deployment, which under blue-green exists only as its colours."""
    settled: bool = False
    """Rolling strategy with nothing of an earlier canary or blue-green left: nothing to look at again until
    the app's rollout values change."""


def template_hash(body: Mapping[str, Any]) -> str:
    """Hash of a Deployment's pod template: what identifies a release of it (a config-only change moves it
    through the renderer's config-hash annotation on the template)."""
    template = (body.get("spec") or {}).get("template") or {}
    return _digest(template)


def _spec_hash(body: Mapping[str, Any]) -> str:
    trimmed = copy.deepcopy(dict(body))
    (trimmed.get("spec") or {}).pop("replicas", None)
    return _digest(trimmed)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _policy(rendered: RenderedApp) -> RolloutPolicy:
    return parse_policy(rendered.values, source=f"{rendered.app_env}: values")


def _workload(rendered: RenderedApp, policy: RolloutPolicy) -> Manifest:
    deployments = [m for m in rendered.manifests if m.id.kind == "Deployment"]
    if policy.workload:
        deployments = [m for m in deployments if m.id.name == policy.workload]
    if len(deployments) != 1:
        found = ", ".join(m.id.name for m in deployments) or "none"
        raise PolicyError(
            f"{rendered.app_env}: values: rollout.workload: {policy.strategy.value} needs exactly one Deployment "
            f"(found: {found}); name it in rollout.workload"
        )
    return deployments[0]


def _services(rendered: RenderedApp, policy: RolloutPolicy) -> dict[ServiceRole, Manifest]:
    bg = policy.blue_green
    if policy.strategy is not Strategy.BLUE_GREEN or bg is None:
        return {}
    by_name = {m.id.name: m for m in rendered.manifests if m.id.kind == "Service"}
    out: dict[ServiceRole, Manifest] = {}
    for role, name, field_name in (
        (ServiceRole.ACTIVE, bg.active_service or _workload(rendered, policy).id.name, "activeService"),
        (ServiceRole.PREVIEW, bg.preview_service, "previewService"),
    ):
        if not name:
            continue
        if name not in by_name:
            raise PolicyError(
                f"{rendered.app_env}: values: rollout.blueGreen.{field_name}: no Service {name!r} rendered"
            )
        out[role] = by_name[name]
    return out


def owned(rendered: RenderedApp) -> frozenset[ObjectId]:
    """The rendered objects the executor applies itself; ``sync_app(..., exclude=owned(rendered))``.
    Empty for the rolling strategy (sync applies the Deployment and Kubernetes rolls it)."""
    policy = _policy(rendered)
    return _Plan(rendered, policy).owned() if policy.progressive else frozenset()


def as_kept(
    rendered: RenderedApp, cluster: Cluster, store: StateStore
) -> tuple[tuple[Manifest, ...], frozenset[ObjectId]]:
    """The render as the executor keeps it in the cluster, for ``gitsync diff`` and ``gitsync status``: the
    workload as the stable track runs it (with the executor's annotations; under blue-green the active colour, not
    the plain Deployment at zero), the Services pointed at it and the HPA aimed at it. Diffing the plain render
    instead would show every canary or blue-green app as out of sync. Returns the manifests and the rendered ids
    they replace under another name (for ``sync_app(exclude=...)``). A pending template change still shows, on the
    stable track it will reach."""
    policy = _policy(rendered)
    if not policy.progressive:
        return rendered.manifests, frozenset()
    plan = _Plan(rendered, policy)
    doc, _ = store.load(rendered.app_env, rendered.namespace, PART)
    state = RolloutState.from_json(doc.get("state") or {})
    track = tracks(state, policy)[0]
    replicas = plan.total if plan.replicas_rendered else _live_total(state, cluster.get(plan.ref(track)))
    bodies: dict[ObjectId, Json] = {plan.workload.id: plan.body(track, replicas)}
    for role, manifest in plan.services.items():
        bodies[manifest.id] = plan.service_body(role, track) or manifest.body
    for manifest in plan.autoscalers:
        bodies[manifest.id] = plan.autoscaler_body(manifest, track)
    kept = tuple(
        Manifest(ObjectId.of(bodies[m.id]), bodies[m.id], m.source) if m.id in bodies else m for m in rendered.manifests
    )
    return kept, frozenset(ref for ref, body in bodies.items() if ObjectId.of(body) != ref)


class _Plan:
    """The names and bodies of the tracks of one rendered workload."""

    def __init__(self, rendered: RenderedApp, policy: RolloutPolicy, workload: Manifest | None = None) -> None:
        self.rendered = rendered
        self.policy = policy
        self.workload = workload or _workload(rendered, policy)
        self.services = _services(rendered, policy)
        self.autoscalers = _autoscalers(rendered, self.workload) if policy.strategy is Strategy.BLUE_GREEN else ()
        self.namespace = self.workload.id.namespace or rendered.namespace
        spec = self.workload.body.get("spec") or {}
        self.total = int(spec.get("replicas", 1))
        self.replicas_rendered = "replicas" in spec
        """False when the chart leaves replicas to an HPA (Helm's ``if not .Values.autoscaling.enabled``)."""
        self.selector: dict[str, str] = dict((spec.get("selector") or {}).get("matchLabels") or {})

    def owned(self) -> frozenset[ObjectId]:
        return frozenset({self.workload.id, *(m.id for m in self.services.values()), *(m.id for m in self.autoscalers)})

    def track_label(self, track: Track) -> tuple[str, str] | None:
        if track is Track.CANARY:
            return LABEL_TRACK, track.value
        if track in (Track.BLUE, Track.GREEN):
            return LABEL_COLOR, track.value
        return None

    def ref(self, track: Track) -> ObjectId:
        return _track_ref(self.namespace, self.workload.id.name, track)

    def selector_of(self, track: Track) -> str:
        labels = dict(self.selector)
        extra = self.track_label(track)
        if extra:
            labels[extra[0]] = extra[1]
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

    def body(self, track: Track, replicas: int) -> Json:
        """The rendered Deployment as ``track`` runs it."""
        body = copy.deepcopy(self.workload.body)
        annotations = body.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[ANNOTATION_TEMPLATE_HASH] = template_hash(self.workload.body)
        annotations[ANNOTATION_SPEC_HASH] = _spec_hash(self.workload.body)
        body.setdefault("spec", {})["replicas"] = replicas
        return self.coloured(body, track)

    def coloured(self, body: Json, track: Track) -> Json:
        """``body`` (a Deployment of this workload) named and labelled as ``track``'s; changed in place."""
        meta = body.setdefault("metadata", {})
        meta["name"] = self.ref(track).name
        meta["namespace"] = self.namespace
        spec = body.setdefault("spec", {})
        extra = self.track_label(track)
        if extra:
            key, value = extra
            spec.setdefault("selector", {}).setdefault("matchLabels", {})[key] = value
            spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})[key] = value
            meta.setdefault("labels", {})[key] = value
        return body

    def service_hash(self, role: ServiceRole) -> str:
        return _digest(self.services[role].body)

    def service_body(self, role: ServiceRole, track: Track) -> Json | None:
        manifest = self.services.get(role)
        if manifest is None:
            return None
        body = copy.deepcopy(manifest.body)
        meta = body.setdefault("metadata", {})
        meta["namespace"] = manifest.id.namespace or self.namespace
        meta.setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = self.service_hash(role)
        selector = dict((body.setdefault("spec", {}).get("selector")) or self.selector)
        extra = self.track_label(track)
        if extra:
            selector[extra[0]] = extra[1]
        body["spec"]["selector"] = selector
        return body

    def autoscaler_body(self, manifest: Manifest, track: Track) -> Json:
        """A rendered HPA of the workload, aimed at ``track``'s Deployment (under blue-green the rendered one is
        at zero, and an HPA does not scale a Deployment at zero)."""
        body = copy.deepcopy(manifest.body)
        meta = body.setdefault("metadata", {})
        meta["namespace"] = manifest.id.namespace or self.namespace
        meta.setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = _digest(manifest.body)
        body.setdefault("spec", {}).setdefault("scaleTargetRef", {})["name"] = self.ref(track).name
        return body


def _autoscalers(rendered: RenderedApp, workload: Manifest) -> tuple[Manifest, ...]:
    """The rendered HorizontalPodAutoscalers that scale ``workload``."""
    namespace = workload.id.namespace or rendered.namespace
    return tuple(
        m
        for m in rendered.manifests
        if m.id.kind == "HorizontalPodAutoscaler"
        and (m.id.namespace or rendered.namespace) == namespace
        and ((m.body.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == "Deployment"
        and ((m.body.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == workload.id.name
    )


def _track_ref(namespace: str, workload: str, track: Track) -> ObjectId:
    return ObjectId("apps", "Deployment", namespace, workload if track is Track.STABLE else f"{workload}-{track.value}")


def _services_current(plan: _Plan, cluster: Cluster) -> bool:
    """Whether every Service (and HPA) the executor points carries the hash of its rendered body (a render change
    to a port, a label or an HPA's bounds must reach the cluster even though sync leaves these to the executor)."""
    wanted = [(m, plan.service_hash(role)) for role, m in plan.services.items()]
    wanted += [(m, _digest(m.body)) for m in plan.autoscalers]
    for manifest, digest in wanted:
        ref = manifest.id
        live = cluster.get(ObjectId(ref.group, ref.kind, ref.namespace or plan.namespace, ref.name))
        annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
        if annotations.get(ANNOTATION_SPEC_HASH) != digest:
            return False
    return True


def _view(live: Json | None) -> WorkloadView:
    if live is None:
        return WorkloadView()
    meta, spec, status = live.get("metadata") or {}, live.get("spec") or {}, live.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    rolled = (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
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
    )


def advance(
    rendered: RenderedApp,
    cluster: Cluster,
    store: StateStore,
    clock: Clock,
    *,
    measurer: Measurer | None = None,
    events: Events | None = None,
) -> StepOutcome:
    """Run one rollout step for ``rendered``; see the module docstring. Raises ``PolicyError`` (terminal) for a
    bad ``values["rollout"]`` and ``TransientError`` when the state was written concurrently (call again)."""
    policy = _policy(rendered)
    key = rendered.app_env
    doc, version = store.load(key, rendered.namespace, PART)
    state = RolloutState.from_json(doc.get("state") or {})
    if not policy.progressive:
        return _rolling(rendered, policy, state, version, cluster, store, clock, events)
    plan = _Plan(rendered, policy)
    command = Command.from_json(doc["command"]) if doc.get("command") else None
    now = clock.now()

    stable_track, new_track = tracks(state, policy)
    stable_live = cluster.get(plan.ref(stable_track))
    new_live = cluster.get(plan.ref(new_track))
    pods = PodReport()
    new_pods: tuple[Json, ...] = ()
    if new_live is not None and int((new_live.get("status") or {}).get("replicas") or 0) > 0:
        listed = cluster.list("", "Pod", plan.namespace, plan.selector_of(new_track)).items
        new_pods = tuple(current_pods(new_live, listed))
        pods = inspect_pods(new_pods, policy.pod_health, now, new_live)
    ctx = CheckContext(
        namespace=plan.namespace,
        app=key.app,
        env=key.env,
        workload=plan.ref(new_track).name,
        stable=plan.ref(stable_track).name,
        track=new_track.value,
        pods=new_pods,
        deployment=new_live,
        pod_policy=policy.pod_health,
    )
    due = checks_due(state, policy, now)
    if due and measurer is None:
        measurer = Measurer()
    measurements = tuple(measurer.measure(spec, ctx, now) for spec in due) if measurer else ()
    observation = Observation(
        target_hash=template_hash(plan.workload.body),
        spec_hash=_spec_hash(plan.workload.body),
        total=plan.total
        if plan.replicas_rendered
        else _live_total(state, stable_live, *_served_by(plan, state, cluster)),
        stable=_view(stable_live),
        new=_view(new_live),
        new_pods=pods,
        measurements=measurements,
        command=command,
        revision=rendered.revision or "",
        workload=plan.workload.id.name,
    )
    if policy.strategy is Strategy.BLUE_GREEN and state.phase not in ACTIVE_PHASES:
        observation = replace(observation, services_current=_services_current(plan, cluster))
    decision = decide(state, observation, policy, now)
    sink = events if events is not None else EventSink(cluster, clock)
    live = {stable_track: stable_live, new_track: new_live}
    where = _Where(key, plan.namespace, plan.workload.id.name)
    done = tuple(d for d in (_perform(a, plan, where, cluster, live, sink) for a in decision.actions) if d)
    if decision.state != state or command is not None:
        store.save(key, rendered.namespace, PART, {"state": decision.state.to_json()}, version)
    after_stable, after_new = tracks(decision.state, policy)
    serving = {plan.ref(after_stable)}
    if decision.state.phase in ACTIVE_PHASES:
        serving.add(plan.ref(after_new))
    result = StepOutcome(
        decision.state.phase,
        decision.state.message,
        decision.requeue_after,
        done,
        exclude=plan.owned(),
        serving=frozenset(serving),
    )
    log.info(
        "rollout.step",
        app=key.app,
        env=key.env,
        phase=result.phase.value,
        step=decision.state.step,
        weight=decision.state.weight,
        actions=list(done),
        requeue_after=result.requeue_after,
        message=result.message,
    )
    return result


_ROLLING = "rolling update: Kubernetes rolls the Deployment"
SETTLED_RECHECK = 600.0
"""Seconds the agent trusts that a rolling app has nothing of an earlier strategy to hand over."""


def _rolling(
    rendered: RenderedApp,
    policy: RolloutPolicy,
    state: RolloutState,
    version: str,
    cluster: Cluster,
    store: StateStore,
    clock: Clock,
    events: Events | None,
) -> StepOutcome:
    """The rolling strategy: nothing to do unless an earlier canary or blue-green left tracks (``decide.retire``).
    While they retire the executor applies the Deployment itself (excluded from sync), so it can tell when the
    rendered template is rolled out."""
    key = rendered.app_env
    if not version or (state.strategy == Strategy.ROLLING.value and not state.retiring):
        return StepOutcome(Phase.HEALTHY, _ROLLING, None, settled=True)
    deployments = {m.id.name: m for m in rendered.manifests if m.id.kind == "Deployment"}
    name = state.workload or policy.workload or (next(iter(deployments)) if len(deployments) == 1 else "")
    namespace = (deployments[name].id.namespace if name in deployments else "") or rendered.namespace
    found = _made_tracks(cluster, key, namespace, keep={*deployments, name})
    refs = {track: tuple(ObjectId.of(live) for live in bodies) for track, bodies in found.items()}
    if not name and found:  # a state from before workloads were recorded: the tracks' names tell
        name = next(iter(refs.values()))[0].name.rsplit("-", 1)[0]
    workload = deployments.get(name)
    plan = _Plan(rendered, policy, workload) if workload is not None else None
    stable_live = cluster.get(plan.ref(Track.STABLE)) if plan is not None else None
    body = plan.workload.body if plan is not None else {}
    running = [live for bodies in found.values() for live in bodies]
    observation = Observation(
        target_hash=template_hash(body) if plan is not None else "",
        spec_hash=_spec_hash(body) if plan is not None else "",
        # Without replicas in the render (an HPA scales it) the live count stands: the hand-over keeps it.
        total=plan.total if plan is not None and plan.replicas_rendered else _live_total(state, stable_live, *running),
        stable=_view(stable_live),
        new=WorkloadView(),
        revision=rendered.revision or "",
        workload=name if plan is not None else "",
    )
    decision = retire(state, observation, clock.now(), frozenset(found))
    sink = events if events is not None else EventSink(cluster, clock)
    where = _Where(key, namespace, name, refs)
    live = {Track.STABLE: stable_live}
    done = tuple(d for d in (_perform(a, plan, where, cluster, live, sink) for a in decision.actions) if d)
    if decision.state != state:
        store.save(key, rendered.namespace, PART, {"state": decision.state.to_json()}, version)
    log.info(
        "rollout.step",
        app=key.app,
        env=key.env,
        phase=decision.state.phase.value,
        actions=list(done),
        requeue_after=decision.requeue_after,
        message=decision.state.message,
    )
    if not decision.state.retiring:
        if plan is not None and not plan.replicas_rendered and stable_live is not None:
            _hand_replicas_over(cluster, stable_live)
        return StepOutcome(decision.state.phase, decision.state.message, None, done, settled=True)
    assert plan is not None  # without a rendered workload everything retires at once
    return StepOutcome(
        decision.state.phase,
        decision.state.message,
        decision.requeue_after,
        done,
        exclude=frozenset({plan.workload.id}),
        serving=frozenset({plan.ref(Track.STABLE)}),
    )


def made_deployments(cluster: Cluster, key: AppEnv, namespace: str) -> tuple[Json, ...]:
    """The Deployments the executor made for ``key`` in ``namespace`` (stable, canary, colours): labelled as the
    app's and carrying the template hash, which a rendered Deployment applied by sync does not."""
    selector = f"{LABEL_APP}={key.app},{LABEL_ENV}={key.env},{LABEL_MANAGED_BY}={MANAGER}"
    return tuple(
        live
        for live in cluster.list("apps", "Deployment", namespace, selector).items
        if ANNOTATION_TEMPLATE_HASH in ((live.get("metadata") or {}).get("annotations") or {})
    )


def _made_tracks(cluster: Cluster, key: AppEnv, namespace: str, keep: set[str]) -> dict[Track, tuple[Json, ...]]:
    """The canary and colour Deployments of ``key`` that exist, by track; ``keep`` (rendered and stable
    workloads) are never tracks."""
    out: dict[Track, list[Json]] = {}
    for live in made_deployments(cluster, key, namespace):
        name = str((live.get("metadata") or {}).get("name", ""))
        track = next((t for t in (Track.CANARY, Track.BLUE, Track.GREEN) if name.endswith(f"-{t.value}")), None)
        if track is not None and name not in keep:
            out.setdefault(track, []).append(live)
    return {track: tuple(bodies) for track, bodies in out.items()}


@dataclass(frozen=True, slots=True)
class _Where:
    """Where an app's tracks live: enough to remove one or post an Event without the render's workload."""

    key: AppEnv
    namespace: str
    workload: str
    found: Mapping[Track, tuple[ObjectId, ...]] = field(default_factory=dict)
    """Tracks found by their labels (``made_deployments``), which name them when the workload cannot."""

    def refs(self, track: Track) -> tuple[ObjectId, ...]:
        return self.found.get(track) or (_track_ref(self.namespace, self.workload, track),)


def _live_total(state: RolloutState, *running: Json | None) -> int:
    """The replicas to run when the render leaves them to an HPA: the count the running rollout started with, or
    the most any of the app's ``running`` Deployments runs now (after a change of strategy the plain Deployment
    may be at zero while a colour serves), so the executor never scales the app back to a default of one."""
    if state.phase in ACTIVE_PHASES and state.replicas:
        return state.replicas
    return max(1, *(_view(live).replicas for live in running))


HANDOVER_MANAGER = "gitsync-handover"


def _hand_replicas_over(cluster: Cluster, live: Json) -> None:
    """Give the Deployment back to sync without losing its replica count. The executor applied ``replicas`` as
    field manager ``gitsync``; sync (the same manager) applies a render without them, and a field its only owner
    drops is reset to the default of one. So another manager first co-owns the current count, as the Kubernetes
    docs describe for handing replicas to an HPA, which then takes it over."""
    meta = live.get("metadata") or {}
    body: Json = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": {"replicas": _view(live).replicas},
    }
    cluster.apply(body, force=True, manager=HANDOVER_MANAGER)


def _served_by(plan: _Plan, state: RolloutState, cluster: Cluster) -> tuple[Json | None, ...]:
    """The colour a blue-green state says serves, when the policy is no longer blue-green (one GET, only for a
    chart that leaves replicas to an HPA): its count is the app's."""
    if plan.policy.strategy is Strategy.BLUE_GREEN or not state.stable_color:
        return ()
    return (cluster.get(plan.ref(Track(state.stable_color))),)


def _perform(
    action: Action,
    plan: _Plan | None,
    where: _Where,
    cluster: Cluster,
    live: Mapping[Track, Json | None],
    events: Events,
) -> str:
    key, namespace = where.key, where.namespace
    if isinstance(action, Remove):
        for ref in where.refs(action.track):
            cluster.delete(ref)
        return "remove " + ", ".join(str(ref) for ref in where.refs(action.track))
    if isinstance(action, Emit):
        # EventSink builds the Event (name, involved object, timestamps); the rollout supplies reason and type.
        event = events.event(key, namespace, Reason.DEGRADED, action.message)
        event["reason"], event["type"] = action.reason, action.type
        try:
            cluster.apply(event)
        except GitsyncError as e:  # events are best effort, as in Kubernetes itself
            log.warning("rollout.event_failed", app=key.app, env=key.env, reason=action.reason, error=str(e))
        level = log.warning if action.type == "Warning" else log.info
        level("rollout.event", app=key.app, env=key.env, reason=action.reason, message=action.message)
        return ""
    assert plan is not None, f"{action!r} needs the rendered workload"
    if isinstance(action, Deploy):
        workload = plan.body(action.track, action.replicas)
        stable = live.get(Track.STABLE)
        if action.track is Track.CANARY and stable is not None:
            _owned_by(workload, stable)
        cluster.apply(workload, force=True)
        return f"deploy {plan.ref(action.track)} replicas={action.replicas}"
    if isinstance(action, Clone):
        stable = live.get(Track.STABLE)
        if stable is None:
            return ""
        copied = _scaled(stable, action.replicas)
        # The copy carries the hash of what it copied, so a stale copy is never taken for a current one.
        copied["metadata"].setdefault("annotations", {})[ANNOTATION_TEMPLATE_HASH] = _view(stable).template_hash
        # Its pods also carry what the rendered active Service selects, which the commit bringing blue-green may
        # have changed: the Service is routed to the copy next and must find its pods.
        active = plan.service_body(ServiceRole.ACTIVE, action.track) or {}
        pod_labels = copied["spec"].setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        pod_labels.update((active.get("spec") or {}).get("selector") or {})
        cluster.apply(plan.coloured(copied, action.track), force=True)
        return f"clone {plan.ref(Track.STABLE)} -> {plan.ref(action.track)} replicas={action.replicas}"
    if isinstance(action, Scale):
        current = live.get(action.track, None) if action.track in live else cluster.get(plan.ref(action.track))
        if current is None:
            return ""
        cluster.apply(_scaled(current, action.replicas), force=True)
        return f"scale {plan.ref(action.track)} replicas={action.replicas}"
    if isinstance(action, Route):
        body = plan.service_body(action.service, action.track)
        if body is None:
            return ""
        cluster.apply(body, force=True)
        done = f"route {ObjectId.of(body)} -> {action.track}"
        if action.service is ServiceRole.ACTIVE:  # the HPA follows the workload that takes the traffic
            for manifest in plan.autoscalers:
                cluster.apply(plan.autoscaler_body(manifest, action.track), force=True)
                done += f", {manifest.id} -> {plan.ref(action.track).name}"
        return done
    raise AssertionError(f"unknown action {action!r}")


def _owned_by(body: Json, owner: Json) -> None:
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


def _scaled(live: Json, replicas: int) -> Json:
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


class _At:
    """A clock frozen at the reconcile's start, so one reconcile sees one "now"."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


class RolloutDriver:
    """The agent's seam (``runtime.agent.RolloutDriver``): one ``advance`` per reconcile, before the sync."""

    def __init__(
        self, cluster: Cluster, store: StateStore, *, measurer: Measurer | None = None, events: Events | None = None
    ) -> None:
        self._cluster = cluster
        self._store = store
        self._measurer = measurer
        self._events = events
        self._settled: dict[AppEnv, float] = {}
        """Rolling apps whose state held nothing to hand over, and when it was read: their reconciles cost no
        request here until their rollout values turn progressive, leadership changes hands (another agent may have
        run a canary meanwhile), or ``SETTLED_RECHECK`` passes (a `gitsync sync` from a laptop)."""

    def advance_rollout(self, rendered: RenderedApp, *, now: float) -> StepOutcome:
        key = rendered.app_env
        read_at = self._settled.get(key)
        if read_at is not None and now - read_at < SETTLED_RECHECK and not _policy(rendered).progressive:
            return StepOutcome(Phase.HEALTHY, _ROLLING, None, settled=True)
        outcome = advance(rendered, self._cluster, self._store, _At(now), measurer=self._measurer, events=self._events)
        if outcome.settled:
            self._settled[key] = now
        else:
            self._settled.pop(key, None)
        return outcome

    def reset(self) -> None:
        """Forget what was read: called when this agent becomes the leader."""
        self._settled.clear()
