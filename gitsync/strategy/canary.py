"""Canary without a mesh: the traffic share is the share of Ready pods (``replicas``).

Contract: pure, no I/O; the handlers ``decide.TABLE`` maps canary phases to. The stable Deployment keeps its name
and the new template runs as the ``canary`` track. The steps are the policy's (``policy.canary.steps``), each run
by the handler for its kind (``STEPS``). A ``setWeight`` step scales the canary up first and shrinks the stable only
once the canary pods are Ready (scaling back the other way round), so Ready capacity never drops below the desired
replicas; a step is complete once its last scale is asked for (pods going away need no waiting).

Promotion starts each new pod once: after the last step the canary is brought to 100% (the stable to zero,
paused), then its ReplicaSet is handed to the stable Deployment in three stages (``FoldStage``), each waiting for
the Deployment controller to have observed the previous one. From the start of that hand-over (``Promoting``) the
rollout is committed: a new template waits for it to end, and an abort is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gitsync.events import Reason
from gitsync.strategy.draft import (
    Draft,
    Moves,
    complete_step,
    first_deployed,
    holds_abort,
    on_stable,
    pause,
    retrying,
    run_analysis,
    scale_new_down,
    start,
    stay_on_stable,
    wait_for_human,
)
from gitsync.strategy.model import Decision, Deploy, Fold, FoldStage, Scale, Track
from gitsync.strategy.policy import Step, StepKind
from gitsync.strategy.replicas import split
from gitsync.strategy.state import CommandName, Phase, RolloutOutcome, step_label

__all__ = ["MOVES", "STEPS", "paused", "progress", "promoting", "settled"]


def settled(d: Draft) -> Decision:
    """Idle, Healthy or Aborted: stay on the stable version, keep an abort rolled back, or start a rollout."""
    obs = d.obs
    if on_stable(d):
        stay_on_stable(d, Track.STABLE)
        if obs.new.replicas and obs.new.ready and not _stable_back(d):
            return d.await_change()  # a canary reverted mid-rollout serves until the stable is back (``_restore``)
        scale_new_down(d, Track.CANARY)
        return d.done()
    if holds_abort(d):
        _restore(d)
        return d.await_change() if obs.stable.ready < obs.total or obs.new.replicas else d.done()
    if not obs.stable.exists:
        d.actions.append(Deploy(Track.STABLE, obs.total))
        first_deployed(d)
        return d.done()
    _begin(d, retrying(d))
    return progress(d)


FULL = Step(StepKind.SET_WEIGHT, weight=100)
"""Where every canary ends before its promotion, whatever its last step: all pods are the canary's."""


def progress(d: Draft) -> Decision:
    """Progressing: run the steps; steps that need no waiting chain within one call, anything that waits returns.
    After the last one the canary is taken to 100% (``FULL``) and the promotion starts in the same call."""
    steps = d.policy.canary.steps
    for _ in range(len(steps) + 1):
        s = d.state
        weighing = s.step >= len(steps) or steps[s.step].kind is StepKind.SET_WEIGHT
        if weighing and any(isinstance(a, Deploy | Scale) for a in d.actions):
            return d.await_change()  # the scale just asked for is not in this call's observation
        if s.step >= len(steps):
            d.state = replace(s, message=f"promoting: {FULL.describe()}")
            waiting = _set_weight(d, FULL)
            if waiting is not None:
                return waiting
            _enter_promoting(d)
            # The stable emptied in this very call: its controller has yet to see it.
            return d.await_change() if any(isinstance(a, Scale) for a in d.actions) else promoting(d)
        step = steps[s.step]
        d.state = replace(s, message=f"{step_label(s.phase, s.step, s.steps)}: {step.describe()}")
        waiting = _hold_weight(d) if step.kind is not StepKind.SET_WEIGHT else None
        if waiting is not None:
            return waiting
        waiting = STEPS[step.kind](d, step)
        if waiting is not None:
            return waiting
        complete_step(d)
    return d.done(0.0)


def paused(d: Draft) -> Decision:
    """Paused (an indefinite pause, inconclusive analysis): nothing moves on until a human says so, but the split
    follows a change of the desired replicas (``_hold_weight``)."""
    waiting = _hold_weight(d)
    return waiting if waiting is not None else wait_for_human(d)


def promoting(d: Draft) -> Decision:
    """Promoting: the canary's ReplicaSet, at full replicas, becomes the stable Deployment's (``FoldStage``); no
    pod is started or stopped. Each stage waits until the Deployment controller has observed the one before, so
    it never acts on a spec half-way through the hand-over."""
    s, obs = d.state, d.obs
    stable, canary = obs.stable, obs.new
    total = obs.total
    if stable.template_hash != s.target_hash:
        if not canary.exists:  # the canary was deleted under the rollout: the stable rolls to the new template
            d.actions.append(Deploy(Track.STABLE, total))
            return _promoted(d)
        if not stable.paused or stable.replicas:
            d.actions.append(Scale(Track.STABLE, 0, pause=True))
            return d.await_change()
        if not stable.observed:
            d.state = replace(s, message="promoting: waiting for the stable Deployment's controller to pause")
            return d.await_change()
        d.actions.append(Fold(FoldStage.HOLD, total))
        d.state = replace(s, message="promoting: the stable Deployment takes the canary's template")
        return d.await_change()
    if stable.paused and not (stable.observed and stable.pods >= total):
        if stable.observed and canary.pods:
            d.actions.append(Fold(FoldStage.ADOPT, total))
            d.state = replace(s, message="promoting: the stable Deployment adopts the canary's pods")
        return d.await_change()
    d.actions.append(Fold(FoldStage.RELEASE, total))
    return _promoted(d)


def _promoted(d: Draft) -> Decision:
    s = d.state
    d.finish(RolloutOutcome.SUCCEEDED)
    d.state = replace(
        d.state,
        phase=Phase.HEALTHY,
        stable_hash=s.target_hash,
        stable_revision=s.revision,
        weight=0,
        checks=(),
        background=(),
        message="rollout completed",
    )
    d.emit(Reason.ROLLOUT_COMPLETED, f"{s.revision or s.target_hash}: rollout completed")
    return d.done()


# -- the steps: each returns the decision while it waits, None once it is complete ---------------------------------


def _set_weight(d: Draft, step: Step) -> Decision | None:
    """Towards the split, waiting only for pods to become Ready; complete once the last scale is asked for, since
    pods going away leave the capacity the other track already has Ready."""
    obs = d.obs
    target = split(obs.total, step.weight)
    if target.warning and target.warning not in d.state.warnings:
        d.state = replace(d.state, warnings=(*d.state.warnings, target.warning))
        d.emit(Reason.WEIGHT_NOT_HONOURED, target.warning)
    canary, stable = obs.new, obs.stable
    canary_current = canary.template_hash == d.state.target_hash
    growing = target.canary >= canary.replicas or not canary_current
    if growing:
        # Canary first: stable shrinks only when the canary's pods are Ready.
        if not canary_current and canary.ready and not _stable_back(d):
            # A superseded canary still serving: the stable is back at full strength before it is replaced.
            if stable.replicas < obs.total or stable.paused:
                d.actions.append(Scale(Track.STABLE, obs.total))
            d.state = replace(d.state, message=f"{d.state.message}: stable {stable.ready}/{obs.total} Ready first")
            return d.await_change()
        if not canary_current or canary.replicas != target.canary:
            d.actions.append(Deploy(Track.CANARY, target.canary))
            d.state = replace(d.state, message=f"{d.state.message}: canary 0/{target.canary} Ready")
            return d.await_change()
        if canary.ready < target.canary:
            d.state = replace(d.state, message=f"{d.state.message}: canary {canary.ready}/{target.canary} Ready")
            return d.await_change()
        if stable.replicas != target.stable or (target.stable == 0 and not stable.paused):
            # At 100% the stable is paused as it empties: promotion hands the canary's pods to it (``promoting``).
            d.actions.append(Scale(Track.STABLE, target.stable, pause=target.stable == 0))
    else:
        # Stable first: the canary shrinks only when the stable pods are back and Ready.
        if stable.replicas < target.stable or stable.paused:
            d.actions.append(Scale(Track.STABLE, target.stable))
            return d.await_change()
        if stable.ready < target.stable:
            return d.await_change()
        d.actions.append(Deploy(Track.CANARY, target.canary))
    d.state = replace(d.state, weight=target.realised)
    return None


def _hold_weight(d: Draft) -> Decision | None:
    """Between setWeight steps (a pause, an analysis, waiting for a human) the tracks keep the weight reached at
    the desired replicas: a commit that only scales the app is applied at once, as Argo Rollouts scales a paused
    canary, not at the next setWeight (which may be behind an indefinite pause). None when the split holds."""
    steps, obs = d.policy.canary.steps, d.obs
    weight = next((steps[i].weight for i in range(d.state.step - 1, -1, -1) if steps[i].kind is StepKind.SET_WEIGHT), 0)
    target = split(obs.total, weight)
    if not weight or any(isinstance(a, Deploy | Scale) for a in d.actions):  # a setWeight just done: not observed yet
        return None
    if (obs.new.replicas, obs.stable.replicas) == (target.canary, target.stable):
        if d.state.replicas != obs.total:
            d.state = replace(d.state, replicas=obs.total)  # the rollout's count from now on
        return None
    if obs.total == d.state.replicas:
        return None  # Git asks for what the rollout started with: a count changed by others (an HPA) stands

    message = d.state.message
    waiting = _set_weight(d, Step(StepKind.SET_WEIGHT, weight=weight))
    d.state = replace(d.state, message=message if waiting is None else d.state.message)
    return waiting


def _pause(d: Draft, step: Step) -> Decision | None:
    s = d.state
    if step.duration is None:
        pause(d, f"{step_label(s.phase, s.step, s.steps)} waits for gitsync rollout promote")
        return d.done()
    remaining = s.step_started_at + step.duration - d.now
    return d.done(remaining) if remaining > 0 else None


def _analysis(d: Draft, step: Step) -> Decision | None:
    s = d.state
    passed = run_analysis(d, MOVES, step.analysis, f"analysis at {step_label(s.phase, s.step, s.steps)}")
    return None if passed else d.done()


STEPS: dict[StepKind, Callable[[Draft, Step], Decision | None]] = {
    StepKind.SET_WEIGHT: _set_weight,
    StepKind.PAUSE: _pause,
    StepKind.ANALYSIS: _analysis,
}
"""The handler of each kind of canary step."""


# -- the moves the shared flow asks of the strategy ----------------------------------------------------------------


def _enter_promoting(d: Draft) -> None:
    steps = len(d.policy.canary.steps)
    d.state = replace(d.state, phase=Phase.PROMOTING, step=steps, step_started_at=d.now, checks=())


def _restore(d: Draft, *, at_once: bool = False) -> None:
    """Traffic back to stable; repeated while aborted, so a half-done restore is finished. The stable grows first
    and the canary's Ready pods go only once the stable's are Ready, so Ready capacity never drops below the
    desired replicas (a human's abort, a new revision); ``at_once`` (failing pods, failed analysis) takes the
    canary out in the same step, capacity or not: it is what the evidence says is broken."""
    obs = d.obs
    if obs.stable.replicas < obs.total:
        d.actions.append(Scale(Track.STABLE, obs.total))
    if obs.new.replicas and (at_once or not obs.new.ready or _stable_back(d)):
        d.actions.append(Scale(Track.CANARY, 0))


def _stable_back(d: Draft) -> bool:
    """The stable runs the desired replicas, all Ready, as its controller counted them after the latest scale (a
    count read before the controller saw a scale-down still holds the pods it removed)."""
    stable = d.obs.stable
    return stable.replicas >= d.obs.total and stable.rolled and stable.ready >= d.obs.total


def _roll_back(d: Draft) -> bool:
    if d.state.phase is Phase.PROMOTING:
        message = "abort ignored: the canary's pods are being handed to the stable Deployment; revert the commit"
        d.state = replace(d.state, message=message)
        d.emit(Reason.ABORT_IGNORED, message)
        return False
    # a human's abort keeps capacity; failing pods or failed analysis take the canary out at once
    _restore(d, at_once=d.obs.command is None or d.obs.command.name is not CommandName.ABORT)
    return True


def _supersede(d: Draft) -> None:
    """Traffic goes back to stable (a promoting canary is never superseded: ``committed``)."""
    d.finish(RolloutOutcome.SUPERSEDED, f"superseded by {d.obs.revision or d.obs.target_hash}")
    _restore(d)


def _begin(d: Draft, retry: bool) -> None:
    start(d, retry=retry, background=d.policy.canary.background)


def _promote_full(d: Draft) -> None:
    """Skip the remaining steps: the canary goes to 100% and is promoted (``progress``)."""
    if d.state.phase is not Phase.PROMOTING:
        d.state = replace(d.state, phase=Phase.PROGRESSING, step=len(d.policy.canary.steps), step_started_at=d.now)


def _passes_on_promote(d: Draft) -> bool:
    """A pause or an analysis step completes on ``gitsync rollout promote``; a setWeight step finishes by itself."""
    s, steps = d.state, d.policy.canary.steps
    return s.phase is not Phase.PROMOTING and s.step < len(steps) and steps[s.step].kind is not StepKind.SET_WEIGHT


MOVES = Moves(
    begin=_begin,
    roll_back=_roll_back,
    supersede=_supersede,
    promote_full=_promote_full,
    passes_on_promote=_passes_on_promote,
    resumed=lambda d: Phase.PROGRESSING,
    committed=lambda d: d.state.phase is Phase.PROMOTING,
)
