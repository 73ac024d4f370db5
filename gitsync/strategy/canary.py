"""Canary without a mesh: the traffic share is the share of Ready pods (``replicas``).

Contract: pure, no I/O; the handlers ``decide.TABLE`` maps canary phases to. The stable Deployment keeps its name
and the new template runs as the ``canary`` track. The steps are the policy's (``policy.canary.steps``), each run
by the handler for its kind (``STEPS``). A ``setWeight`` step scales the canary up first and shrinks the stable only
once the canary pods are Ready (scaling back the other way round), so Ready capacity never drops below the desired
replicas. After the last step the stable Deployment gets the new template at full replicas (``Promoting``); once it
is rolled, the canary is removed.
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
)
from gitsync.strategy.model import POLL, Decision, Deploy, Remove, Scale, Track
from gitsync.strategy.policy import Step, StepKind
from gitsync.strategy.replicas import split
from gitsync.strategy.state import Phase, RolloutOutcome

__all__ = ["MOVES", "STEPS", "progress", "promoting", "settled"]


def settled(d: Draft) -> Decision:
    """Idle, Healthy or Aborted: stay on the stable version, keep an abort rolled back, or start a rollout."""
    obs = d.obs
    if on_stable(d):
        stay_on_stable(d, Track.STABLE)
        scale_new_down(d, Track.CANARY)
        return d.done()
    if holds_abort(d):
        _restore(d)
        return d.done(POLL if obs.stable.ready < obs.total or obs.new.replicas else None)
    if not obs.stable.exists:
        d.actions.append(Deploy(Track.STABLE, obs.total))
        first_deployed(d)
        return d.done()
    _begin(d, retrying(d))
    return d.done(0.0)


def progress(d: Draft) -> Decision:
    """Progressing: run the steps; steps that need no waiting chain within one call, anything that waits returns."""
    steps = d.policy.canary.steps
    for _ in range(len(steps) + 1):
        s = d.state
        if s.step >= len(steps):
            _enter_promoting(d)
            return d.done(POLL)
        step = steps[s.step]
        d.state = replace(s, message=f"step {s.step + 1}/{len(steps)}: {step.describe()}")
        waiting = STEPS[step.kind](d, step)
        if waiting is not None:
            return waiting
        complete_step(d)
    return d.done(0.0)


def promoting(d: Draft) -> Decision:
    """Promoting: the stable Deployment takes the new template at full replicas; once rolled, the canary goes."""
    s, obs = d.state, d.obs
    stable = obs.stable
    if stable.template_hash != s.target_hash or stable.replicas != obs.total:
        d.actions.append(Deploy(Track.STABLE, obs.total))
        return d.done(POLL)
    if not (stable.rolled and stable.ready >= obs.total):
        d.state = replace(s, message=f"promoting: stable {stable.ready}/{obs.total} Ready on the new version")
        return d.done(POLL)
    d.actions.append(Remove(Track.CANARY))
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
    """One action per call towards the split; complete once both tracks are at it and Ready."""
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
        if not canary_current or canary.replicas != target.canary:
            d.actions.append(Deploy(Track.CANARY, target.canary))
            return d.done(POLL)
        if canary.ready < target.canary:
            d.state = replace(d.state, message=f"{d.state.message}: canary {canary.ready}/{target.canary} Ready")
            return d.done(POLL)
        if stable.replicas != target.stable:
            d.actions.append(Scale(Track.STABLE, target.stable))
            return d.done(POLL)
    else:
        # Stable first: the canary shrinks only when the stable pods are back and Ready.
        if stable.replicas < target.stable:
            d.actions.append(Scale(Track.STABLE, target.stable))
            return d.done(POLL)
        if stable.ready < target.stable:
            return d.done(POLL)
        d.actions.append(Deploy(Track.CANARY, target.canary))
        return d.done(POLL)
    d.state = replace(d.state, weight=target.realised)
    return None


def _pause(d: Draft, step: Step) -> Decision | None:
    s, steps = d.state, d.policy.canary.steps
    if step.duration is None:
        pause(d, f"step {s.step + 1}/{len(steps)} waits for gitsync rollout promote")
        return d.done()
    remaining = s.step_started_at + step.duration - d.now
    return d.done(remaining) if remaining > 0 else None


def _analysis(d: Draft, step: Step) -> Decision | None:
    passed = run_analysis(d, MOVES, step.analysis, f"analysis at step {d.state.step + 1}")
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
    d.actions.append(Deploy(Track.STABLE, d.obs.total))


def _restore(d: Draft) -> None:
    """Traffic back to stable in one step; repeated while aborted, so a half-done restore is finished."""
    obs = d.obs
    if obs.stable.replicas < obs.total:
        d.actions.append(Scale(Track.STABLE, obs.total))
    if obs.new.replicas:
        d.actions.append(Scale(Track.CANARY, 0))


def _roll_back(d: Draft) -> bool:
    if d.state.phase is Phase.PROMOTING:
        message = "abort ignored: the stable Deployment already takes the new template; revert the commit instead"
        d.state = replace(d.state, message=message)
        d.emit(Reason.ABORT_IGNORED, message)
        return False
    _restore(d)
    return True


def _supersede(d: Draft) -> None:
    """Promoting means the analysis passed and the stable already takes this template: it succeeded. Otherwise
    traffic goes back to stable."""
    s = d.state
    if s.phase is Phase.PROMOTING:
        d.finish(RolloutOutcome.SUCCEEDED, "superseded during promotion")
        d.state = replace(d.state, stable_hash=s.target_hash, stable_revision=s.revision)
        d.actions.append(Scale(Track.CANARY, 0))
    else:
        d.finish(RolloutOutcome.SUPERSEDED, f"superseded by {d.obs.revision or d.obs.target_hash}")
        _restore(d)


def _begin(d: Draft, retry: bool) -> None:
    start(d, retry=retry, background=d.policy.canary.background)


def _promote_full(d: Draft) -> None:
    if d.state.phase is not Phase.PROMOTING:
        _enter_promoting(d)


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
)
