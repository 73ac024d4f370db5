"""The thin layer that runs one rollout step against the cluster: observe, ``decide``, act, persist.

Contract: I/O only through the ports (``Cluster``, ``StateStore``, ``Clock``, the analysis ``Measurer``); every
decision is ``decide.decide``'s (``handover.retire`` for a rolling app), every read ``observe``'s, every write
``act``'s. Reads go through a ``WorkloadReader``: the agent's watch cache, where a step reads nothing from the API
server and its requests are its writes (the actions, the state when it changed, the inventory when a track comes
or goes); without one, ``health.Listed``. It never sleeps: it returns when to look again, and whether the wait
ends on a change in the cluster (``StepOutcome.on_change``) that the agent's watch wakes it for. The agent calls it
once per reconcile before ``sync_app``, which must skip
``StepOutcome.exclude``: the executor applies those objects itself (the Deployment under canary/blue-green, the
Services it points, under blue-green the app's HPA) and owns its tracks (``<name>-canary``, ``<name>-blue``,
``<name>-green``: ``layout``), which are in the app's inventory but never pruned by sync. A rolling app costs one
state read, and nothing more unless an earlier canary or blue-green left tracks to hand over.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitsync import log as logging
from gitsync.analysis.measure import Measurer
from gitsync.errors import InvalidObjectError
from gitsync.events import EventSink
from gitsync.health import Listed
from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, MANAGER, AppEnv, Json, Manifest, ObjectId
from gitsync.ports import Clock, Cluster, RenderedApp, StateStore, WorkloadReader
from gitsync.strategy.act import Events, Where, hand_replicas_over, keep_inventory, perform
from gitsync.strategy.decide import decide
from gitsync.strategy.handover import retire
from gitsync.strategy.layout import ANNOTATION_TEMPLATE_HASH, Layout, selector_of, spec_hash, template_hash
from gitsync.strategy.model import Observation, Track, WorkloadView, tracks
from gitsync.strategy.observe import live_total, observe, view
from gitsync.strategy.policy import RolloutPolicy, Strategy, parse_policy
from gitsync.strategy.state import ACTIVE_PHASES, Command, Phase, RolloutState, step_label

__all__ = [
    "PART",
    "SETTLED_RECHECK",
    "RolloutExecutor",
    "StepOutcome",
    "advance",
    "as_kept",
    "made_deployments",
    "owned",
    "policy_of",
    "refuse_selector_change",
]

log = logging.get("gitsync.strategy")

PART = "rollout"
"""The state-store part holding ``{"state": ..., "command": ...}``."""


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one ``advance`` did: the phase after it, a one-line message, and when to call again (None: on
    the next change only)."""

    phase: Phase
    message: str
    requeue_after: float | None
    actions: tuple[str, ...] = ()
    exclude: frozenset[ObjectId] = frozenset()
    """What sync must leave alone (``sync_app(..., exclude=outcome.exclude)``): the rendered objects the executor
    applies itself, and its canary and colour Deployments, which are in the inventory but not in the render."""
    serving: frozenset[ObjectId] = frozenset()
    """The live Deployments that run the app now (stable, plus the new version while it rolls out); health
    checks read these in place of the rendered Deployment, which under blue-green exists only as its colours."""
    settled: bool = False
    """Rolling strategy with nothing of an earlier canary or blue-green left: nothing to look at again until
    the app's rollout values change."""
    on_change: bool = False
    """The step waits for the cluster (``Decision.on_change``): a change of the ``serving`` Deployments or their pods
    ends the wait; ``requeue_after`` is the look when nothing watches them."""


def policy_of(rendered: RenderedApp) -> RolloutPolicy:
    """The parsed ``values["rollout"]``; ``PolicyError`` (terminal) naming the field at fault."""
    return parse_policy(rendered.values, source=f"{rendered.app_env}: values")


def owned(rendered: RenderedApp) -> frozenset[ObjectId]:
    """What sync leaves to the executor, ``sync_app(..., exclude=owned(rendered))``: the rendered objects it
    applies itself and its tracks (``Layout.owned``). Empty for the rolling strategy (sync applies the Deployment
    and Kubernetes rolls it)."""
    policy = policy_of(rendered)
    return Layout(rendered, policy).owned() if policy.progressive else frozenset()


def as_kept(
    rendered: RenderedApp, cluster: Cluster, store: StateStore
) -> tuple[tuple[Manifest, ...], frozenset[ObjectId]]:
    """The render as the executor keeps it in the cluster, for ``gitsync diff`` and ``gitsync status``: the
    workload as the stable track runs it (with the executor's annotations; under blue-green the active colour, not
    the plain Deployment at zero), the Services pointed at it and the HPA aimed at it. Diffing the plain render
    instead would show every canary or blue-green app as out of sync. Returns the manifests and what sync must leave
    alone (``sync_app(exclude=...)``): the rendered ids they replace under another name and the executor's other
    tracks, which are inventoried but not rendered. A pending template change still shows, on the stable track it
    will reach."""
    policy = policy_of(rendered)
    if not policy.progressive:
        return rendered.manifests, frozenset()
    layout = Layout(rendered, policy)
    doc, _ = store.load(rendered.app_env, rendered.namespace, PART)
    state = RolloutState.from_json(doc.get("state") or {})
    track = tracks(state, policy)[0]
    replicas = layout.total if layout.replicas_rendered else live_total(state, cluster.get(layout.ref(track)))
    bodies: dict[ObjectId, Json] = {layout.workload.id: layout.body(track, replicas)}
    for role, manifest in layout.services.items():
        bodies[manifest.id] = layout.service_body(role, track) or manifest.body
    for manifest in layout.autoscalers:
        bodies[manifest.id] = layout.autoscaler_body(manifest, track)
    kept = tuple(
        Manifest(ObjectId.of(bodies[m.id]), bodies[m.id], m.source) if m.id in bodies else m for m in rendered.manifests
    )
    moved = {ref for ref, body in bodies.items() if ObjectId.of(body) != ref}
    return kept, frozenset(moved | (layout.track_refs() - {m.id for m in kept}))


def advance(
    rendered: RenderedApp,
    cluster: Cluster,
    store: StateStore,
    clock: Clock,
    *,
    measurer: Measurer | None = None,
    events: Events | None = None,
    policy: RolloutPolicy | None = None,
    reader: WorkloadReader | None = None,
) -> StepOutcome:
    """Run one rollout step for ``rendered``; see the module docstring. ``measurer``: what measures the analysis
    checks (without one only podHealth checks can be measured); ``policy``: ``policy_of(rendered)`` when the
    caller parsed it already; ``reader``: the watch cache (None: ``health.Listed``). Raises ``PolicyError``
    (terminal) for a bad ``values["rollout"]`` and ``TransientError`` when the state or the inventory was written
    concurrently (call again)."""
    policy = policy if policy is not None else policy_of(rendered)
    reader = reader if reader is not None else Listed(cluster)
    key = rendered.app_env
    doc, version = store.load(key, rendered.namespace, PART)
    state = RolloutState.from_json(doc.get("state") or {})
    if not policy.progressive:
        return _rolling(rendered, policy, state, version, cluster, store, clock, events, reader)
    layout = Layout(rendered, policy)
    command = Command.from_json(doc["command"]) if doc.get("command") else None
    now = clock.now()
    seen = observe(rendered, layout, state, command, reader, measurer or Measurer(), now)
    if policy.strategy is Strategy.CANARY and state.phase is not Phase.PROMOTING:  # a hand-over under way ends first
        refuse_selector_change(layout, seen.live.get(Track.STABLE))
    decision = decide(state, seen.observation, policy, now)
    sink = events if events is not None else EventSink(cluster, clock)
    where = Where(key, layout.namespace, layout.workload.id.name)
    performed = [(a, perform(a, layout, where, cluster, seen.live, sink, reader)) for a in decision.actions]
    done = tuple(d for _, d in performed if d)
    present = {layout.ref(track) for track, live in seen.live.items() if live is not None}
    keep_inventory(store, where, rendered.namespace, (a for a, d in performed if d), present & layout.track_refs())
    if decision.state != state or command is not None:
        store.save(key, rendered.namespace, PART, {"state": decision.state.to_json()}, version)
    after_stable, after_new = tracks(decision.state, policy)
    serving = {layout.ref(after_stable)}
    if decision.state.phase in ACTIVE_PHASES:
        serving.add(layout.ref(after_new))
    result = StepOutcome(
        decision.state.phase,
        decision.state.message,
        decision.requeue_after,
        done,
        exclude=layout.owned(),
        serving=frozenset(serving),
        on_change=decision.on_change,
    )
    # a step that did something, or a state that moved, is news; a waiting or settled rollout re-checked by every
    # drift timer is not (it said the same every minute, forever)
    moved = bool(done) or decision.state != state or command is not None
    (log.info if moved else log.debug)(
        "rollout.step",
        app=key.app,
        env=key.env,
        phase=result.phase.value,
        step=step_label(decision.state.phase, decision.state.step, decision.state.steps),
        weight=decision.state.weight,
        actions=list(done),
        requeue_after=result.requeue_after,
        message=result.message,
    )
    return result


def refuse_selector_change(layout: Layout, stable: Json | None) -> None:
    """A canary ends by giving its template to the stable Deployment, whose ``spec.selector`` is immutable: a
    render that changes it could run every step and then never promote (stuck in ``Promoting``, where abort is
    refused and a new revision waits). So it is refused before anything is applied, as sync refuses a rolling
    Deployment's (``InvalidObjectError``, terminal: the app waits for a commit that restores the selector)."""
    if stable is None:
        return
    live, wanted = selector_of(stable), selector_of(layout.workload.body)
    if live != wanted:
        rendered_at = f" ({layout.workload.source})" if layout.workload.source else ""  # the template's file:line
        raise InvalidObjectError(
            f"{layout.ref(Track.STABLE)}: field is immutable: spec.selector: the canary's template would be promoted "
            f"to this Deployment, whose selector is {_labels(live)}, not the rendered {_labels(wanted)}{rendered_at};"
            " keep the selector, or give the Deployment a new name",
            fields=("spec.selector",),
            immutable=True,
        )


def _labels(selector: Json) -> str:
    match = selector.get("matchLabels") or {}
    rest = " + matchExpressions" if selector.get("matchExpressions") else ""
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(match.items())) + "}" + rest


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
    reader: WorkloadReader,
) -> StepOutcome:
    """The rolling strategy: nothing to do unless an earlier canary or blue-green left tracks (``handover.retire``).
    While they retire the executor applies the Deployment itself (excluded from sync), so it can tell when the
    rendered template is rolled out."""
    key = rendered.app_env
    if not version or (state.strategy == Strategy.ROLLING.value and not state.retiring):
        return StepOutcome(Phase.HEALTHY, _ROLLING, None, settled=True)
    deployments = {m.id.name: m for m in rendered.manifests if m.id.kind == "Deployment"}
    name = state.workload or policy.workload or (next(iter(deployments)) if len(deployments) == 1 else "")
    namespace = (deployments[name].id.namespace if name in deployments else "") or rendered.namespace
    found = made_tracks(cluster, key, namespace, keep={*deployments, name})
    refs = {track: tuple(ObjectId.of(live) for live in bodies) for track, bodies in found.items()}
    if not name and found:  # a state from before workloads were recorded: the tracks' names tell
        name = next(iter(refs.values()))[0].name.rsplit("-", 1)[0]
    workload = deployments.get(name)
    layout = Layout(rendered, policy, workload) if workload is not None else None
    stable_live = cluster.get(layout.ref(Track.STABLE)) if layout is not None else None
    body = layout.workload.body if layout is not None else {}
    running = [live for bodies in found.values() for live in bodies]
    observation = Observation(
        target_hash=template_hash(body) if layout is not None else "",
        spec_hash=spec_hash(body) if layout is not None else "",
        # Without replicas in the render (an HPA scales it) the live count stands: the hand-over keeps it.
        total=layout.total
        if layout is not None and layout.replicas_rendered
        else live_total(state, stable_live, *running),
        stable=view(stable_live),
        new=WorkloadView(),
        revision=rendered.revision or "",
        workload=name if layout is not None else "",
    )
    decision = retire(state, observation, clock.now(), frozenset(found))
    sink = events if events is not None else EventSink(cluster, clock)
    where = Where(key, namespace, name, refs)
    live = {Track.STABLE: stable_live}
    performed = [(a, perform(a, layout, where, cluster, live, sink, reader)) for a in decision.actions]
    done = tuple(d for _, d in performed if d)
    keep_inventory(store, where, rendered.namespace, (a for a, d in performed if d))
    if decision.state != state:
        store.save(key, rendered.namespace, PART, {"state": decision.state.to_json()}, version)
    (log.info if done or decision.state != state else log.debug)(
        "rollout.step",
        app=key.app,
        env=key.env,
        phase=decision.state.phase.value,
        actions=list(done),
        requeue_after=decision.requeue_after,
        message=decision.state.message,
    )
    if not decision.state.retiring:
        if layout is not None and not layout.replicas_rendered and stable_live is not None:
            hand_replicas_over(cluster, stable_live)
        return StepOutcome(decision.state.phase, decision.state.message, None, done, settled=True)
    assert layout is not None  # without a rendered workload everything retires at once
    return StepOutcome(
        decision.state.phase,
        decision.state.message,
        decision.requeue_after,
        done,
        exclude=frozenset({layout.workload.id, *(ref for track in found for ref in where.refs(track))}),
        serving=frozenset({layout.ref(Track.STABLE)}),
        on_change=decision.on_change,
    )


def made_deployments(cluster: Cluster, key: AppEnv, namespace: str) -> tuple[Json, ...]:
    """The Deployments the executor made for ``key`` in ``namespace`` (stable, canary, colours), listed."""
    selector = f"{LABEL_APP}={key.app},{LABEL_ENV}={key.env},{LABEL_MANAGED_BY}={MANAGER}"
    return tuple(live for live in cluster.list("apps", "Deployment", namespace, selector).items if made_for(live, key))


def made_for(live: Json, key: AppEnv) -> bool:
    """Whether the executor made the Deployment ``live`` for ``key``: labelled as the app's and carrying the
    template hash, which a rendered Deployment applied by sync does not."""
    return key.owns(live) and ANNOTATION_TEMPLATE_HASH in ((live.get("metadata") or {}).get("annotations") or {})


def made_tracks(cluster: Cluster, key: AppEnv, namespace: str, keep: set[str]) -> dict[Track, tuple[Json, ...]]:
    """The canary and colour Deployments of ``key`` that exist, by track; ``keep`` (rendered and stable
    workloads) are never tracks."""
    out: dict[Track, list[Json]] = {}
    for live in made_deployments(cluster, key, namespace):
        name = str((live.get("metadata") or {}).get("name", ""))
        track = next((t for t in (Track.CANARY, Track.BLUE, Track.GREEN) if name.endswith(f"-{t.value}")), None)
        if track is not None and name not in keep:
            out.setdefault(track, []).append(live)
    return {track: tuple(bodies) for track, bodies in out.items()}


class _At:
    """A clock frozen at the reconcile's start, so one reconcile sees one "now"."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


class RolloutExecutor:
    """The agent's seam (``runtime.agent.RolloutDriver``): one ``advance`` per reconcile, before the sync.
    Composed with the ports it needs (``measurer`` built on the Prometheus and HTTP adapters, ``events``)."""

    def __init__(
        self,
        cluster: Cluster,
        store: StateStore,
        *,
        measurer: Measurer | None = None,
        events: Events | None = None,
        reader: WorkloadReader | None = None,
    ) -> None:
        """``reader``: the agent's watch cache, where steps read Deployments, Pods and ReplicaSets (None: the API
        server, ``health.Listed``, once per step)."""
        self._cluster = cluster
        self._store = store
        self._reader = reader
        self._measurer = measurer
        self._events = events
        self._settled: dict[AppEnv, float] = {}
        """Rolling apps whose state held nothing to hand over, and when it was read: their reconciles cost no
        request here until their rollout values turn progressive, leadership changes hands (another agent may have
        run a canary meanwhile), or ``SETTLED_RECHECK`` passes (a `gitsync sync` from a laptop)."""

    def advance_rollout(self, rendered: RenderedApp, *, now: float) -> StepOutcome:
        key = rendered.app_env
        policy = policy_of(rendered)  # once per render: ``advance`` takes it as parsed
        read_at = self._settled.get(key)
        if read_at is not None and now - read_at < SETTLED_RECHECK and not policy.progressive:
            return StepOutcome(Phase.HEALTHY, _ROLLING, None, settled=True)
        outcome = advance(
            rendered,
            self._cluster,
            self._store,
            _At(now),
            measurer=self._measurer,
            events=self._events,
            policy=policy,
            reader=self._reader,
        )
        if outcome.settled:
            self._settled[key] = now
        else:
            self._settled.pop(key, None)
        return outcome

    def reset(self) -> None:
        """Forget what was read: called when this agent becomes the leader."""
        self._settled.clear()
