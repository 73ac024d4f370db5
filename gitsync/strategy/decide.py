"""The rollout step function: ``decide(state, observation, policy, now) -> Decision``.

Contract: pure, no I/O, no clock. The executor gathers an ``Observation`` (workloads, the new version's pods, the
analysis measurements that were due, a pending human command), calls ``decide`` once, performs the returned
``actions`` in order, persists ``Decision.state`` and looks again after ``requeue_after`` seconds. Every action is
idempotent (apply a template at a replica count, scale, delete, point a Service at a track), so repeating a step
after a crash is harmless.

Canary (no mesh: traffic share = share of Ready pods, see ``replicas``): the stable Deployment keeps its name and
the new template runs as the ``canary`` track. A ``setWeight`` step scales the canary up first and shrinks the stable
only once the canary pods are Ready (scaling back the other way round), so Ready capacity never drops below the
desired replicas. After the last step the stable Deployment gets the new template at full replicas; once it is
rolled, the canary is removed. Blue-green: the new template runs at full replicas in the other colour behind the
preview Service; after pre-promotion analysis and the promotion gate the active Service is switched; after
post-promotion analysis and the scale-down delay the old colour is scaled to zero.

A failed check or failing pods abort: traffic returns to stable in one step (canary scaled to zero and stable to full;
or the active Service switched back), the template is remembered as failed and is not retried until the render
changes or ``gitsync rollout retry``. Inconclusive analysis pauses for a human. A new template during a rollout
supersedes it.

A change of strategy supersedes a rollout too: traffic goes back to the stable workload, and the tracks the new
strategy does not use (the canary, the colours) are *retiring*: they keep serving until the workload the new
strategy serves from is rolled out and Ready, then they are removed (``retire`` when the new strategy is rolling).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gitsync.analysis.pod_health import PodReport
from gitsync.analysis.run import CheckRun, Measurement, Outcome, Verdict, aggregate, evidence, record, start
from gitsync.analysis.spec import AnalysisSpec, CheckSpec
from gitsync.strategy.policy import RolloutPolicy, Step, StepKind, Strategy
from gitsync.strategy.replicas import split
from gitsync.strategy.state import (
    ACTIVE_PHASES,
    Command,
    CommandName,
    HistoryEntry,
    Phase,
    RolloutState,
    add_history,
)

__all__ = [
    "POLL",
    "Action",
    "BlueGreenStep",
    "Clone",
    "Decision",
    "Deploy",
    "Emit",
    "Observation",
    "Remove",
    "Route",
    "Scale",
    "ServiceRole",
    "Track",
    "WorkloadView",
    "checks_due",
    "decide",
    "retire",
    "tracks",
]

POLL = 1.0
"""Seconds between looks while waiting for pods to become Ready or be replaced."""
WATCH = 5.0
"""Longest wait between looks while a rollout is active, so the pod gate sees a crash during a long pause."""


class Track(StrEnum):
    """A workload the executor manages: the stable Deployment, the canary, or a blue-green colour."""

    STABLE = "stable"
    CANARY = "canary"
    BLUE = "blue"
    GREEN = "green"


class ServiceRole(StrEnum):
    ACTIVE = "active"
    PREVIEW = "preview"


class BlueGreenStep:
    """Blue-green progress as step numbers, so status shows one ``step`` for both strategies."""

    PREVIEW = 0
    PRE_ANALYSIS = 1
    GATE = 2
    POST_ANALYSIS = 3
    SCALE_DOWN = 4
    NAMES = ("preview", "prePromotionAnalysis", "promotion", "postPromotionAnalysis", "scaleDownDelay")


@dataclass(frozen=True, slots=True)
class Deploy:
    """Apply the desired (new) template to ``track`` with ``replicas``."""

    track: Track
    replicas: int


@dataclass(frozen=True, slots=True)
class Scale:
    """Set the replicas of ``track``, keeping whatever template it runs; nothing when it does not exist."""

    track: Track
    replicas: int


@dataclass(frozen=True, slots=True)
class Clone:
    """Copy the stable Deployment as it runs (its template, not the render's) to ``track`` with ``replicas``."""

    track: Track
    replicas: int


@dataclass(frozen=True, slots=True)
class Remove:
    track: Track


@dataclass(frozen=True, slots=True)
class Route:
    """Point a Service's selector at ``track``'s pods."""

    service: ServiceRole
    track: Track


@dataclass(frozen=True, slots=True)
class Emit:
    """A Kubernetes Event (and log line) about the rollout."""

    type: str
    reason: str
    message: str


Action = Deploy | Clone | Scale | Remove | Route | Emit


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """What the executor saw of one track's Deployment."""

    exists: bool = False
    replicas: int = 0
    ready: int = 0
    template_hash: str = ""
    spec_hash: str = ""
    rolled: bool = False
    """The controller observed the latest spec and every replica is updated and Ready, with no old pods left."""


@dataclass(frozen=True, slots=True)
class Observation:
    target_hash: str
    """Hash of the rendered pod template: what should run."""
    spec_hash: str
    """Hash of the whole rendered Deployment minus replicas: a change without a template change needs no rollout."""
    total: int
    """Desired replicas from the render."""
    stable: WorkloadView
    new: WorkloadView
    new_pods: PodReport = field(default_factory=PodReport)
    measurements: tuple[Measurement, ...] = ()
    command: Command | None = None
    revision: str = ""
    services_current: bool = True
    """Blue-green: the live Services match the render (ports, labels); False makes a settled rollout re-route."""
    workload: str = ""
    """Name of the rendered Deployment the strategy drives; empty when none is rendered (it left the render)."""


@dataclass(frozen=True, slots=True)
class Decision:
    state: RolloutState
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None


def tracks(state: RolloutState, policy: RolloutPolicy) -> tuple[Track, Track]:
    """(stable track, new track) for the current state: the colours alternate from one rollout to the next."""
    if policy.strategy is Strategy.BLUE_GREEN:
        # Before the first colour exists the stable is the rendered Deployment itself (an app switching to
        # blue-green keeps serving from it until the first switch).
        stable = Track(state.stable_color) if state.stable_color else Track.STABLE
        return stable, Track.GREEN if stable is Track.BLUE else Track.BLUE
    return Track.STABLE, Track.CANARY


def _active_analyses(state: RolloutState, policy: RolloutPolicy) -> tuple[AnalysisSpec, AnalysisSpec]:
    """(step analysis, background analysis) the current phase and step run."""
    none = AnalysisSpec()
    if state.phase not in (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING):
        return none, none
    if policy.strategy is Strategy.BLUE_GREEN and policy.blue_green is not None:
        if state.step == BlueGreenStep.PRE_ANALYSIS:
            return policy.blue_green.pre_promotion, none
        if state.step == BlueGreenStep.POST_ANALYSIS:
            return policy.blue_green.post_promotion, none
        return none, none
    steps = policy.canary.steps
    step = steps[state.step].analysis if state.step < len(steps) else none
    background = policy.canary.background if state.phase is not Phase.PROMOTING else none
    return step, background


def checks_due(state: RolloutState, policy: RolloutPolicy, now: float) -> tuple[CheckSpec, ...]:
    """The checks the executor should measure before calling ``decide``."""
    step, background = _active_analyses(state, policy)
    due: list[CheckSpec] = []
    for spec, runs in ((step, state.checks), (background, state.background)):
        by_name = {run.name: run for run in runs}
        due.extend(c for c in spec.checks if c.name in by_name and by_name[c.name].due(now))
    return tuple(due)


def _record(
    runs: tuple[CheckRun, ...], spec: AnalysisSpec, measurements: Iterable[Measurement]
) -> tuple[CheckRun, ...]:
    specs = {c.name: c for c in spec.checks}
    latest: dict[str, list[Measurement]] = {}
    for m in measurements:
        latest.setdefault(m.check, []).append(m)
    out = []
    for run in runs:
        for m in latest.get(run.name, ()):
            if run.name in specs:
                run = record(run, specs[run.name], m)
        out.append(run)
    return tuple(out)


def _start_runs(spec: AnalysisSpec, now: float) -> tuple[CheckRun, ...]:
    return tuple(start(c, now) for c in spec.checks)


def _next_due(runs: Iterable[CheckRun], now: float) -> float | None:
    times = [max(run.next_at - now, 0.0) for run in runs if run.verdict is Verdict.RUNNING]
    return min(times) if times else None


def _soonest(*waits: float | None) -> float | None:
    present = [w for w in waits if w is not None]
    return min(present) if present else None


@dataclass(slots=True)
class _Step:
    """The decision being built within one ``decide`` call (local, never escapes)."""

    state: RolloutState
    obs: Observation
    policy: RolloutPolicy
    now: float
    actions: list[Action] = field(default_factory=list)
    requeue: float | None = None
    promoted: bool = False
    """``gitsync rollout promote`` was applied in this call (passes the blue-green gate)."""

    def done(self, requeue: float | None = None) -> Decision:
        wait = _soonest(self.requeue, requeue)
        if self.state.phase in ACTIVE_PHASES:
            wait = WATCH if wait is None else min(wait, WATCH)
        return Decision(self.state, tuple(self.actions), wait)

    def update(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(Emit(type_, reason, message))

    def finish(self, outcome: str, reason: str = "", proof: tuple[str, ...] = ()) -> None:
        s = self.state
        entry = HistoryEntry(s.target_hash, s.revision, outcome, s.started_at, self.now, reason, proof)
        self.state = add_history(s, entry)


_TRACKS_OF = {
    Strategy.ROLLING: (),
    Strategy.CANARY: (Track.CANARY,),
    Strategy.BLUE_GREEN: (Track.BLUE, Track.GREEN),
}


def decide(state: RolloutState, obs: Observation, policy: RolloutPolicy, now: float) -> Decision:
    b = _Step(state, obs, policy, now)
    _adopt(b)
    stable_track = tracks(b.state, policy)[0]
    decision = _decide(b)
    return _retire_when_settled(decision, b.obs, stable_track)


def _decide(b: _Step) -> Decision:
    state, obs = b.state, b.obs
    command = obs.command.name if obs.command else None
    if state.phase in ACTIVE_PHASES:
        if obs.target_hash != state.target_hash:
            _supersede(b)
            return b.done(0.0)
        if command is CommandName.ABORT:
            by = obs.command.by if obs.command and obs.command.by else "a user"
            _abort(b, "aborted by gitsync rollout abort", (f"requested by {by}",))
            if b.state.phase is Phase.ABORTED:
                return b.done()
            command = None
        return _advance(b, command)
    return _settled(b, command)


def _previous(state: RolloutState) -> Strategy | None:
    try:
        return Strategy(state.strategy) if state.strategy else None
    except ValueError:
        return None


def _adopt(b: _Step) -> None:
    """Stamp the policy's strategy and workload on the state; a state written under another strategy is handed
    over first (``_switch``). States from before the strategy was recorded are taken to be the current one's."""
    old, new = _previous(b.state), b.policy.strategy
    if old is not None and old is not new:
        _switch(b, old)
    b.update(strategy=new.value, workload=b.obs.workload or b.state.workload)


def _hand_over(b: _Step, reason: str) -> None:
    """A change of strategy: a running rollout ends as superseded and the rollout's own fields start afresh."""
    s = b.state
    if s.phase in ACTIVE_PHASES:
        b.finish("superseded", reason)
    b.update(
        # Healthy stays Healthy; a rollout that ran or was aborted under the old strategy says nothing of the new
        # one (and an Aborted phase would read as "rolled back, settled" while the hand-over is still working).
        phase=Phase.HEALTHY if s.phase is Phase.HEALTHY else Phase.IDLE,
        step=0,
        weight=0,
        checks=(),
        background=(),
        ready_at=0.0,
        switched_at=0.0,
        stable_color="",
        message=reason,
    )


def _switch(b: _Step, old: Strategy) -> None:
    """From one progressive strategy to the other: the stable workload gets its full replicas back, and the old
    strategy's tracks the new one does not use start retiring."""
    s, obs, new = b.state, b.obs, b.policy.strategy
    reason = f"strategy changed from {old.value} to {new.value}"
    _hand_over(b, reason)
    used = {t.value for t in _TRACKS_OF[new]}  # a track still retiring from an earlier switch may serve again
    retiring = sorted({*s.retiring, *(t.value for t in _TRACKS_OF[old])} - used)
    b.update(retiring=tuple(retiring))
    if old is Strategy.CANARY and obs.stable.exists and obs.stable.replicas < obs.total:
        b.actions.append(Scale(Track.STABLE, obs.total))  # the canary's weight had taken replicas from it
    if old is Strategy.BLUE_GREEN and obs.stable.template_hash != s.stable_hash:
        # A plain Deployment left from before blue-green (scaled to zero at its first switch) holds an older
        # template than the active colour: neither a stable to compare a canary with nor one to fall back to.
        b.obs = replace(obs, stable=WorkloadView())
    leftovers = f"; {', '.join(retiring)} removed once the new workload is Ready" if retiring else ""
    b.emit("Normal", "StrategyChanged", f"{reason}{leftovers}")


def _retire_when_settled(decision: Decision, obs: Observation, stable_track: Track) -> Decision:
    """Remove the retiring tracks once the stable workload is rolled out, Ready at full replicas and left alone
    by this decision: until then they keep serving, so a strategy change never drops capacity."""
    touched = any(isinstance(a, Deploy | Scale) and a.track is stable_track for a in decision.actions)
    stable = obs.stable
    if not decision.state.retiring or touched or not (stable.exists and stable.rolled and stable.ready >= obs.total):
        return decision
    actions, state = _removal(decision.state)
    return replace(decision, state=state, actions=(*decision.actions, *actions))


def _removal(state: RolloutState) -> tuple[tuple[Action, ...], RolloutState]:
    """Remove the retiring tracks: the actions (with their event), and the state without them."""
    removed = f"removed the {', '.join(state.retiring)} track(s) of the old strategy"
    actions: tuple[Action, ...] = (
        *(Remove(Track(t)) for t in state.retiring),
        Emit("Normal", "LeftoversRemoved", removed),
    )
    return actions, replace(state, retiring=())


def retire(state: RolloutState, obs: Observation, now: float, present: frozenset[Track]) -> Decision:
    """One step for an app whose strategy is (now) rolling: Kubernetes rolls its Deployment, so the only work is
    handing over from an earlier canary or blue-green whose tracks are still ``present``. The rendered Deployment
    gets the rendered template (the executor applies it while anything retires); once it is rolled out and Ready,
    those tracks are removed. A Deployment that left the render has nothing to wait for: they go at once."""
    b = _Step(state, obs, RolloutPolicy(), now)
    old = _previous(state)
    retiring = tuple(sorted(t.value for t in present))
    leftovers = ", ".join(retiring)
    if old is not Strategy.ROLLING:
        reason = f"strategy changed from {old.value if old is not None else 'canary or blue-green'} to rolling"
        _hand_over(b, reason)
        b.update(strategy=Strategy.ROLLING.value)
        if retiring:
            b.emit("Normal", "StrategyChanged", f"{reason}; {leftovers} removed once the new workload is Ready")
    b.update(workload=obs.workload or b.state.workload, retiring=retiring)
    if not retiring:
        return b.done()
    if obs.workload:
        stable = obs.stable
        if stable.template_hash != obs.target_hash or stable.spec_hash != obs.spec_hash or stable.replicas != obs.total:
            b.actions.append(Deploy(Track.STABLE, obs.total))
            b.update(message=f"rolling update: {obs.workload} takes the rendered template before {leftovers} go")
            return b.done(POLL)
        if not (stable.rolled and stable.ready >= obs.total):
            b.update(message=f"rolling update: {obs.workload} {stable.ready}/{obs.total} Ready; then {leftovers} go")
            return b.done(POLL)
    actions, b.state = _removal(b.state)
    b.actions += actions
    message = f"rolling update: removed the {leftovers} track(s) of the old strategy"
    b.update(phase=Phase.HEALTHY, stable_hash=obs.target_hash, stable_revision=obs.revision, message=message)
    return b.done()


# -- settled phases: Idle, Healthy, Aborted ---------------------------------------------------------------------


def _settled(b: _Step, command: CommandName | None) -> Decision:
    s, obs = b.state, b.obs
    stable_track, new_track = tracks(s, b.policy)
    on_stable = obs.target_hash == s.stable_hash or (
        not s.stable_hash and obs.stable.exists and obs.stable.template_hash == obs.target_hash
    )
    if on_stable:
        if s.phase is not Phase.HEALTHY or not s.stable_hash:
            message = "back on the stable version" if s.phase is Phase.ABORTED else "stable runs the desired version"
            b.update(phase=Phase.HEALTHY, stable_hash=obs.target_hash, message=message, weight=0)
        if obs.stable.spec_hash != obs.spec_hash or obs.stable.replicas != obs.total:
            b.actions.append(Deploy(stable_track, obs.total))  # same template: no rollout, just the new spec
        if b.policy.strategy is Strategy.BLUE_GREEN and not obs.services_current:
            b.actions += [Route(ServiceRole.ACTIVE, stable_track), Route(ServiceRole.PREVIEW, stable_track)]
        _clean_new(b, new_track)
        return b.done()
    if s.phase is Phase.ABORTED and obs.target_hash == s.failed_hash and command is not CommandName.RETRY:
        _restore(b, stable_track, new_track, switched=False)
        return b.done(POLL if obs.stable.ready < obs.total or obs.new.replicas else None)
    if not obs.stable.exists:
        _initial(b, new_track)
        return b.done()
    if b.policy.strategy is Strategy.BLUE_GREEN and stable_track is Track.STABLE:
        return _colour_the_stable(b, new_track)
    _start(b, retry=command is CommandName.RETRY)
    return b.done(0.0)


def _colour_the_stable(b: _Step, colour: Track) -> Decision:
    """Before an app's first blue-green rollout its plain Deployment serves, and the active Service's selector (the
    app's labels) would take in the preview colour's pods too. So the plain Deployment is first copied, as it runs,
    to a colour; once that is Ready the active Service selects it and the plain one is scaled to zero. Then the
    rollout starts with the other colour as the preview."""
    obs = b.obs
    copy = obs.new
    replicas = max(obs.total, obs.stable.replicas)  # an HPA may run more than the render says
    if obs.new_pods.outcome is Outcome.FAILURE and copy.replicas:
        # The running version's own pods fail (the commit that brings blue-green may be its fix): no copy of it
        # can take traffic, so the rollout starts as it did before colouring existed.
        b.emit("Warning", "ColouringSkipped", f"the copy in {colour} is failing: {obs.new_pods.failing[0]}")
        _start(b, retry=False)
        return b.done(0.0)
    if not copy.exists or copy.template_hash != obs.stable.template_hash or copy.replicas != replicas:
        b.actions.append(Clone(colour, replicas))
        b.update(message=f"blue-green: copying the running version to {colour} before the first rollout")
        return b.done(POLL)
    if not (copy.rolled and copy.ready >= replicas):
        b.update(message=f"blue-green: {colour} {copy.ready}/{replicas} Ready before the first rollout")
        return b.done(POLL)
    b.actions += [Route(ServiceRole.ACTIVE, colour), Route(ServiceRole.PREVIEW, colour), Scale(Track.STABLE, 0)]
    b.update(stable_color=colour.value, message=f"blue-green: the running version now serves from {colour}")
    b.emit("Normal", "StableColoured", f"the running version now serves from {colour}; the rollout starts next")
    return b.done(0.0)


def _clean_new(b: _Step, new_track: Track) -> None:
    if b.obs.new.replicas:
        b.actions.append(Scale(new_track, 0))


def _initial(b: _Step, new_track: Track) -> None:
    """Nothing runs yet, so there is nothing to compare a canary with: deploy directly."""
    obs = b.obs
    if b.policy.strategy is Strategy.BLUE_GREEN:
        b.actions += [Deploy(new_track, obs.total), Route(ServiceRole.ACTIVE, new_track)]
        b.actions.append(Route(ServiceRole.PREVIEW, new_track))
        b.update(stable_color=new_track.value)
    else:
        b.actions.append(Deploy(Track.STABLE, obs.total))
    b.update(
        phase=Phase.HEALTHY,
        stable_hash=obs.target_hash,
        stable_revision=obs.revision,
        target_hash=obs.target_hash,
        revision=obs.revision,
        message="first deployment: nothing to compare with, deployed directly",
    )
    b.emit("Normal", "RolloutCompleted", f"{obs.revision or obs.target_hash}: first deployment, no analysis")


def _start(b: _Step, *, retry: bool) -> None:
    obs, policy = b.obs, b.policy
    _, new_track = tracks(b.state, policy)
    b.update(
        phase=Phase.PROGRESSING,
        target_hash=obs.target_hash,
        revision=obs.revision,
        failed_hash="" if retry else b.state.failed_hash,
        step=0,
        step_started_at=b.now,
        started_at=b.now,
        weight=0,
        ready_at=0.0,
        switched_at=0.0,
        checks=(),
        background=_start_runs(policy.canary.background, b.now) if policy.strategy is Strategy.CANARY else (),
        abort_reason="",
        evidence=(),
        warnings=(),
        replicas=obs.total,
        message="retrying" if retry else "rollout started",
    )
    if policy.strategy is Strategy.BLUE_GREEN:
        b.actions += [Deploy(new_track, obs.total), Route(ServiceRole.PREVIEW, new_track)]
    b.emit("Normal", "RolloutStarted", f"{obs.revision or obs.target_hash}: {policy.strategy.value} rollout started")


def _supersede(b: _Step) -> None:
    """A new template arrived mid-rollout: put traffic back on stable (or finish a rollout that is past the point
    of no return) and start again from step 0 with the new template."""
    s, policy = b.state, b.policy
    stable_track, new_track = tracks(s, policy)
    blue_green = policy.strategy is Strategy.BLUE_GREEN
    if s.phase is Phase.PROMOTING and (not blue_green or s.step == BlueGreenStep.SCALE_DOWN):
        # The analysis passed; the stable already takes (canary) or serves (blue-green) this template.
        b.finish("succeeded", "superseded during promotion")
        b.update(stable_hash=s.target_hash, stable_revision=s.revision)
        if blue_green:
            b.update(stable_color=new_track.value)
        else:
            b.actions.append(Scale(Track.CANARY, 0))
    else:
        b.finish("superseded", f"superseded by {b.obs.revision or b.obs.target_hash}")
        if not blue_green:
            _restore(b, stable_track, new_track, switched=False)
        elif s.step >= BlueGreenStep.POST_ANALYSIS:
            b.actions.append(Route(ServiceRole.ACTIVE, stable_track))  # the new colour is redeployed, not scaled
    b.emit("Normal", "RolloutSuperseded", f"{s.revision or s.target_hash}: superseded by a new revision")
    _start(b, retry=False)


def _restore(b: _Step, stable_track: Track, new_track: Track, *, switched: bool) -> None:
    """Traffic back to stable in one step; repeated while aborted, so a half-done restore is finished."""
    obs = b.obs
    if b.policy.strategy is Strategy.BLUE_GREEN:
        if switched:
            b.actions.append(Route(ServiceRole.ACTIVE, stable_track))
        if switched or obs.new.replicas:
            b.actions.append(Route(ServiceRole.PREVIEW, stable_track))
        if obs.stable.replicas < obs.total:
            b.actions.append(Scale(stable_track, obs.total))
        if obs.new.replicas:
            b.actions.append(Scale(new_track, 0))
        return
    if obs.stable.replicas < obs.total:
        b.actions.append(Scale(stable_track, obs.total))
    if obs.new.replicas:
        b.actions.append(Scale(new_track, 0))


def _abort(b: _Step, reason: str, proof: tuple[str, ...]) -> None:
    s = b.state
    stable_track, new_track = tracks(s, b.policy)
    if b.policy.strategy is Strategy.CANARY and s.phase is Phase.PROMOTING:
        message = "abort ignored: the stable Deployment already takes the new template; revert the commit instead"
        b.update(message=message)
        b.emit("Warning", "AbortIgnored", message)
        return
    switched = b.policy.strategy is Strategy.BLUE_GREEN and s.step >= BlueGreenStep.POST_ANALYSIS
    _restore(b, stable_track, new_track, switched=switched)
    b.update(
        phase=Phase.ABORTED,
        failed_hash=s.target_hash,
        abort_reason=reason,
        evidence=proof,
        weight=0,
        message=f"aborted: {reason}",
    )
    b.finish("aborted", reason, proof)
    detail = f"; {proof[0]}" if proof else ""
    b.emit("Warning", "RolloutAborted", f"{s.revision or s.target_hash}: {reason}{detail}")
    b.requeue = POLL


# -- active phases ----------------------------------------------------------------------------------------------


def _advance(b: _Step, command: CommandName | None) -> Decision:
    s, obs, policy = b.state, b.obs, b.policy
    step_spec, background_spec = _active_analyses(s, policy)
    b.update(
        checks=_record(s.checks, step_spec, obs.measurements),
        background=_record(s.background, background_spec, obs.measurements),
    )
    if obs.new_pods.outcome is Outcome.FAILURE and obs.new.replicas:
        _abort(b, "new version's pods are failing", obs.new_pods.failing)
        return b.done()
    background = aggregate(b.state.background)
    if background.verdict is Verdict.FAILED and background.deciding is not None:
        _abort(b, f"background analysis failed: {background.deciding.name}", (evidence(background.deciding),))
        return b.done()
    if command is CommandName.PROMOTE_FULL:
        _promote_full(b)
        return b.done(0.0)
    if command is CommandName.PROMOTE:
        _promote(b, restart_background=background.verdict is Verdict.INCONCLUSIVE, background_spec=background_spec)
    elif background.verdict is Verdict.INCONCLUSIVE and background.deciding is not None:
        _pause(b, f"background analysis inconclusive: {evidence(background.deciding)}")
        return b.done(_next_due(b.state.background, b.now))
    if b.state.phase is Phase.PAUSED:
        return b.done(_next_due((*b.state.checks, *b.state.background), b.now))
    if policy.strategy is Strategy.BLUE_GREEN:
        return _blue_green(b)
    return _canary(b)


def _promote(b: _Step, *, restart_background: bool, background_spec: AnalysisSpec) -> None:
    """``gitsync rollout promote``: resume from a pause and complete the current step if it is one a human can pass
    (a pause, an analysis, the blue-green gate); a setWeight step still finishes by itself."""
    by = b.obs.command.by if b.obs.command and b.obs.command.by else "a user"
    b.promoted = True
    if restart_background:
        b.update(background=_start_runs(background_spec, b.now))
    if b.state.phase is Phase.PAUSED:
        blue_green = b.policy.strategy is Strategy.BLUE_GREEN
        resumed = Phase.PROMOTING if blue_green and b.state.step >= BlueGreenStep.POST_ANALYSIS else Phase.PROGRESSING
        b.update(phase=resumed)
    b.update(message=f"promoted by {by}")
    at_gate = b.policy.strategy is Strategy.BLUE_GREEN and b.state.step == BlueGreenStep.GATE
    if _is_gate(b) and not at_gate:
        _complete_step(b)


def _is_gate(b: _Step) -> bool:
    """Whether the current step waits for a human (and so ``promote`` completes it rather than being ignored)."""
    s, policy = b.state, b.policy
    if policy.strategy is Strategy.BLUE_GREEN:
        return s.step in (BlueGreenStep.PRE_ANALYSIS, BlueGreenStep.GATE, BlueGreenStep.POST_ANALYSIS)
    steps = policy.canary.steps
    return s.phase is not Phase.PROMOTING and s.step < len(steps) and steps[s.step].kind is not StepKind.SET_WEIGHT


def _pause(b: _Step, reason: str) -> None:
    if b.state.phase is not Phase.PAUSED:
        b.emit("Normal", "RolloutPaused", f"{b.state.revision or b.state.target_hash}: {reason}")
    b.update(
        phase=Phase.PAUSED,
        message=f"paused: {reason}; run gitsync rollout promote to continue or gitsync rollout abort",
    )


def _complete_step(b: _Step) -> None:
    b.update(step=b.state.step + 1, step_started_at=b.now, checks=())


def _promote_full(b: _Step) -> None:
    """Skip the remaining steps and analysis: canary -> promote the stable now; blue-green -> switch now."""
    b.update(message="promoted fully by a user", checks=(), background=())
    if b.policy.strategy is Strategy.BLUE_GREEN:
        if b.state.step < BlueGreenStep.POST_ANALYSIS:
            _, new_track = tracks(b.state, b.policy)
            b.actions.append(Route(ServiceRole.ACTIVE, new_track))
            b.update(switched_at=b.now)
        b.update(phase=Phase.PROMOTING, step=BlueGreenStep.SCALE_DOWN, step_started_at=b.now)
        return
    if b.state.phase is not Phase.PROMOTING:
        _enter_promoting(b)


def _enter_promoting(b: _Step) -> None:
    b.update(phase=Phase.PROMOTING, step=len(b.policy.canary.steps), step_started_at=b.now, checks=())
    b.actions.append(Deploy(Track.STABLE, b.obs.total))


def _run_analysis(b: _Step, spec: AnalysisSpec, what: str) -> bool | None:
    """Drive the step's analysis: True when it passed, None while running or paused, False after an abort."""
    if not b.state.checks and spec.checks:
        b.update(checks=_start_runs(spec, b.now))
        b.requeue = _next_due(b.state.checks, b.now)
        return None
    result = aggregate(b.state.checks)
    if result.verdict is Verdict.FAILED and result.deciding is not None:
        _abort(b, f"{what} failed: {result.deciding.name}", (evidence(result.deciding),))
        return False
    if result.verdict is Verdict.INCONCLUSIVE and result.deciding is not None:
        _pause(b, f"{what} inconclusive: {evidence(result.deciding)}")
        b.requeue = None
        return None
    if result.verdict is Verdict.RUNNING:
        b.requeue = _next_due(b.state.checks, b.now)
        return None
    return True


def _canary(b: _Step) -> Decision:
    steps = b.policy.canary.steps
    for _ in range(len(steps) + 1):  # zero-wait steps chain within one call; anything that waits returns
        s, obs = b.state, b.obs
        if s.phase is Phase.PROMOTING:
            stable = obs.stable
            if stable.template_hash != s.target_hash or stable.replicas != obs.total:
                b.actions.append(Deploy(Track.STABLE, obs.total))
                return b.done(POLL)
            if not (stable.rolled and stable.ready >= obs.total):
                b.update(message=f"promoting: stable {stable.ready}/{obs.total} Ready on the new version")
                return b.done(POLL)
            b.actions.append(Remove(Track.CANARY))
            b.finish("succeeded")
            b.update(
                phase=Phase.HEALTHY,
                stable_hash=s.target_hash,
                stable_revision=s.revision,
                weight=0,
                checks=(),
                background=(),
                message="rollout completed",
            )
            b.emit("Normal", "RolloutCompleted", f"{s.revision or s.target_hash}: rollout completed")
            return b.done()
        if s.step >= len(steps):
            _enter_promoting(b)
            return b.done(POLL)
        step = steps[s.step]
        b.update(message=f"step {s.step + 1}/{len(steps)}: {step.describe()}")
        if step.kind is StepKind.SET_WEIGHT:
            if not _set_weight(b, step):
                return b.done(POLL)
        elif step.kind is StepKind.PAUSE:
            if step.duration is None:
                _pause(b, f"step {s.step + 1}/{len(steps)} waits for gitsync rollout promote")
                return b.done()
            remaining = s.step_started_at + step.duration - b.now
            if remaining > 0:
                return b.done(remaining)
        else:
            passed = _run_analysis(b, step.analysis, f"analysis at step {s.step + 1}")
            if not passed:
                return b.done()
        _complete_step(b)
    return b.done(0.0)


def _set_weight(b: _Step, step: Step) -> bool:
    """One action per call towards the split; True once both tracks are at it and Ready."""
    obs = b.obs
    target = split(obs.total, step.weight)
    if target.warning and target.warning not in b.state.warnings:
        b.update(warnings=(*b.state.warnings, target.warning))
        b.emit("Warning", "WeightNotHonoured", target.warning)
    canary, stable = obs.new, obs.stable
    canary_current = canary.template_hash == b.state.target_hash
    growing = target.canary >= canary.replicas or not canary_current
    if growing:
        # Canary first: stable shrinks only when the canary's pods are Ready.
        if not canary_current or canary.replicas != target.canary:
            b.actions.append(Deploy(Track.CANARY, target.canary))
            return False
        if canary.ready < target.canary:
            b.update(message=f"{b.state.message}: canary {canary.ready}/{target.canary} Ready")
            return False
        if stable.replicas != target.stable:
            b.actions.append(Scale(Track.STABLE, target.stable))
            return False
    else:
        # Stable first: the canary shrinks only when the stable pods are back and Ready.
        if stable.replicas < target.stable:
            b.actions.append(Scale(Track.STABLE, target.stable))
            return False
        if stable.ready < target.stable:
            return False
        b.actions.append(Deploy(Track.CANARY, target.canary))
        return False
    b.update(weight=target.realised)
    return True


def _blue_green(b: _Step) -> Decision:
    bg = b.policy.blue_green
    assert bg is not None, "blueGreen strategy without its policy"
    for _ in range(BlueGreenStep.SCALE_DOWN + 2):
        s, obs = b.state, b.obs
        stable_track, new_track = tracks(s, b.policy)
        b.update(message=f"{BlueGreenStep.NAMES[min(s.step, BlueGreenStep.SCALE_DOWN)]}")
        if s.step == BlueGreenStep.PREVIEW:
            if obs.new.template_hash != s.target_hash or obs.new.replicas != obs.total:
                b.actions += [Deploy(new_track, obs.total), Route(ServiceRole.PREVIEW, new_track)]
                return b.done(POLL)
            if not (obs.new.rolled and obs.new.ready >= obs.total):
                b.update(message=f"preview {obs.new.ready}/{obs.total} Ready")
                return b.done(POLL)
            b.update(ready_at=b.now)
        elif s.step == BlueGreenStep.PRE_ANALYSIS:
            if not _run_analysis(b, bg.pre_promotion, "prePromotionAnalysis"):
                return b.done()
        elif s.step == BlueGreenStep.GATE:
            if not b.promoted and bg.auto_promotion_seconds > 0:
                remaining = s.step_started_at + bg.auto_promotion_seconds - b.now
                if remaining > 0:
                    b.update(
                        message=f"switching in {remaining:.0f}s (autoPromotionSeconds) or on gitsync rollout promote"
                    )
                    return b.done(remaining)
            elif not b.promoted and not bg.auto_promotion:
                _pause(b, "autoPromotion is off: waiting for gitsync rollout promote")
                return b.done()
            b.actions.append(Route(ServiceRole.ACTIVE, new_track))
            b.update(phase=Phase.PROMOTING, switched_at=b.now)
            b.emit("Normal", "RolloutSwitched", f"{s.revision or s.target_hash}: active Service now on {new_track}")
        elif s.step == BlueGreenStep.POST_ANALYSIS:
            if not _run_analysis(b, bg.post_promotion, "postPromotionAnalysis"):
                return b.done()
        else:
            remaining = s.switched_at + bg.scale_down_delay - b.now
            if remaining > 0:
                b.update(message=f"old version ({stable_track}) scaled down in {remaining:.0f}s")
                return b.done(remaining)
            b.actions += [Route(ServiceRole.PREVIEW, new_track), Scale(stable_track, 0)]
            b.finish("succeeded")
            b.update(
                phase=Phase.HEALTHY,
                stable_hash=s.target_hash,
                stable_revision=s.revision,
                stable_color=new_track.value,
                checks=(),
                message="rollout completed",
            )
            b.emit("Normal", "RolloutCompleted", f"{s.revision or s.target_hash}: now on {new_track}")
            return b.done()
        _complete_step(b)
        if b.state.step == BlueGreenStep.POST_ANALYSIS and b.state.phase is not Phase.PROMOTING:
            b.update(phase=Phase.PROMOTING, switched_at=b.state.switched_at or b.now)
    return b.done(0.0)
