"""Blue-green: the new template runs at full replicas in the other colour behind the preview Service.

Contract: pure, no I/O; the handlers ``decide.TABLE`` maps blue-green phases to. The steps are fixed (``STEPS``,
numbered by ``BlueGreenStep``): bring up the preview, pre-promotion analysis, the promotion gate (switch the active
Service), post-promotion analysis, and after the scale-down delay the old colour scaled to zero. An app that turns
blue-green first copies its running plain Deployment to a colour (``_colour_the_stable``), at once whether or not
its template changed, so the active Service never takes in the preview's pods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gitsync.analysis.run import CheckOutcome
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
from gitsync.strategy.model import (
    BlueGreenStep,
    Clone,
    Decision,
    Deploy,
    Route,
    Scale,
    ServiceRole,
    Track,
    tracks,
)
from gitsync.strategy.policy import BlueGreenPolicy
from gitsync.strategy.state import Phase, RolloutOutcome

__all__ = ["MOVES", "STEPS", "paused", "progress", "settled"]


def settled(d: Draft) -> Decision:
    """Idle, Healthy or Aborted: stay on the active colour, keep an abort rolled back, or start a rollout."""
    obs = d.obs
    stable, new = tracks(d.state, d.policy)
    if on_stable(d):
        stay_on_stable(d, stable)
        if not obs.services_current:
            d.actions += [Route(ServiceRole.ACTIVE, stable), Route(ServiceRole.PREVIEW, stable)]
        if stable is Track.STABLE and obs.stable.exists and obs.new_pods.outcome is not CheckOutcome.FAILURE:
            # A switch to blue-green with the template unchanged takes effect now, not at the next template change.
            return _colour_the_stable(d, new)
        if obs.new.replicas and obs.services_current:  # a preview reverted mid-rollout: the preview Service too
            d.actions.append(Route(ServiceRole.PREVIEW, stable))
        scale_new_down(d, new)
        return d.done()
    if holds_abort(d):
        _restore(d, switched=False)
        return d.await_change() if obs.stable.ready < obs.total or obs.new.replicas else d.done()
    if not obs.stable.exists:
        d.actions += [Deploy(new, obs.total), Route(ServiceRole.ACTIVE, new), Route(ServiceRole.PREVIEW, new)]
        d.state = replace(d.state, stable_color=new.value)
        first_deployed(d)
        return d.done()
    if stable is Track.STABLE:
        return _colour_the_stable(d, new)
    _begin(d, retrying(d))
    return d.done(0.0)


def paused(d: Draft) -> Decision:
    """Paused (the gate without autoPromotion, inconclusive analysis): nothing moves on until a human says so, but
    both colours follow a change of the desired replicas (``_follow_scale``)."""
    _follow_scale(d)
    return wait_for_human(d)


def progress(d: Draft) -> Decision:
    """Progressing or Promoting: run the steps; steps that need no waiting chain within one call."""
    bg = d.policy.blue_green
    assert bg is not None, "blueGreen strategy without its policy"
    _follow_scale(d)
    for _ in range(len(STEPS) + 1):
        s = d.state
        step = BlueGreenStep(min(s.step, BlueGreenStep.SCALE_DOWN))
        d.state = replace(s, message=str(step))
        waiting = STEPS[step](d, bg)
        if waiting is not None:
            return waiting
        complete_step(d)
        if d.state.step == BlueGreenStep.POST_ANALYSIS and d.state.phase is not Phase.PROMOTING:
            d.state = replace(d.state, phase=Phase.PROMOTING, switched_at=d.state.switched_at or d.now)
    return d.done(0.0)


def _follow_scale(d: Draft) -> None:
    """A commit that only changes the replicas reaches both colours at once, as Argo Rollouts scales the active and
    the preview ReplicaSets: before the switch the active colour serves (and a preview left at the old count would
    hold the switch for good); after it the new colour serves and the old one only waits to be scaled down. An
    HPA's count (no replicas in the render) is the rollout's own."""
    s, obs = d.state, d.obs
    if obs.total == s.replicas:
        return
    stable, new = tracks(s, d.policy)
    if s.step < BlueGreenStep.POST_ANALYSIS and obs.stable.replicas != obs.total:
        d.actions.append(Scale(stable, obs.total))
    if obs.new.replicas and obs.new.replicas != obs.total:
        d.actions.append(Scale(new, obs.total))
    d.state = replace(s, replicas=obs.total)


# -- the steps: each returns the decision while it waits, None once it is complete ---------------------------------


def _preview(d: Draft, bg: BlueGreenPolicy) -> Decision | None:
    obs, new = d.obs, tracks(d.state, d.policy)[1]
    if obs.new.template_hash != d.state.target_hash or obs.new.replicas != obs.total:
        d.actions += [Deploy(new, obs.total), Route(ServiceRole.PREVIEW, new)]
        return d.await_change()
    if not (obs.new.rolled and obs.new.ready >= obs.total):
        d.state = replace(d.state, message=f"preview {obs.new.ready}/{obs.total} Ready")
        return d.await_change()
    d.state = replace(d.state, ready_at=d.now)
    return None


def _pre_analysis(d: Draft, bg: BlueGreenPolicy) -> Decision | None:
    return None if d.state.full or run_analysis(d, MOVES, bg.pre_promotion, "prePromotionAnalysis") else d.done()


def _gate(d: Draft, bg: BlueGreenPolicy) -> Decision | None:
    if d.promoted:
        d.state = replace(d.state, promoted_at=d.now)
    s, new = d.state, tracks(d.state, d.policy)[1]
    promoted = bool(s.promoted_at) or s.full
    if not promoted and bg.auto_promotion_seconds > 0:
        remaining = s.step_started_at + bg.auto_promotion_seconds - d.now
        if remaining > 0:
            message = f"switching in {remaining:.0f}s (autoPromotionSeconds) or on gitsync rollout promote"
            d.state = replace(s, message=message)
            return d.done(remaining)
    elif not promoted and not bg.auto_promotion:
        pause(d, "autoPromotion is off: waiting for gitsync rollout promote")
        return d.done()
    obs = d.obs
    if not (obs.new.rolled and obs.new.ready >= obs.total):
        # Ready when the preview came up, but a pod may have gone since (evicted, restarted, a failing probe): the
        # active Service is switched only to a colour whose every pod is Ready, as Argo Rollouts switches only to
        # a fully available ReplicaSet.
        d.state = replace(d.state, message=f"switch waits for the preview: {obs.new.ready}/{obs.total} Ready")
        return d.await_change()
    d.actions.append(Route(ServiceRole.ACTIVE, new))
    d.state = replace(d.state, phase=Phase.PROMOTING, switched_at=d.now)
    d.emit(Reason.ROLLOUT_SWITCHED, f"{s.revision or s.target_hash}: active Service now on {new}")
    return None


def _post_analysis(d: Draft, bg: BlueGreenPolicy) -> Decision | None:
    return None if d.state.full or run_analysis(d, MOVES, bg.post_promotion, "postPromotionAnalysis") else d.done()


def _scale_down(d: Draft, bg: BlueGreenPolicy) -> Decision | None:
    s = d.state
    stable, new = tracks(s, d.policy)
    remaining = s.switched_at + bg.scale_down_delay - d.now
    if remaining > 0:
        d.state = replace(s, message=f"old version ({stable}) scaled down in {remaining:.0f}s")
        return d.done(remaining)
    d.actions += [Route(ServiceRole.PREVIEW, new), Scale(stable, 0)]
    d.finish(RolloutOutcome.SUCCEEDED)
    d.state = replace(
        d.state,
        phase=Phase.HEALTHY,
        stable_hash=s.target_hash,
        stable_revision=s.revision,
        stable_color=new.value,
        checks=(),
        message="rollout completed",
    )
    d.emit(Reason.ROLLOUT_COMPLETED, f"{s.revision or s.target_hash}: now on {new}")
    return d.done()


STEPS: dict[BlueGreenStep, Callable[[Draft, BlueGreenPolicy], Decision | None]] = {
    BlueGreenStep.PREVIEW: _preview,
    BlueGreenStep.PRE_ANALYSIS: _pre_analysis,
    BlueGreenStep.GATE: _gate,
    BlueGreenStep.POST_ANALYSIS: _post_analysis,
    BlueGreenStep.SCALE_DOWN: _scale_down,
}
"""The handler of each blue-green step, in order."""


def _colour_the_stable(d: Draft, colour: Track) -> Decision:
    """Until an app that turned blue-green is coloured its plain Deployment serves, and the active Service's
    selector (the app's labels) would take in the preview colour's pods too. So the plain Deployment is first
    copied, as it runs, to a colour; once that is Ready the active Service selects it and the plain one is scaled
    to zero. Then a rollout, if the template changed, starts with the other colour as the preview."""
    obs = d.obs
    copy = obs.new
    replicas = max(obs.total, obs.stable.replicas)  # an HPA may run more than the render says
    if obs.new_pods.outcome is CheckOutcome.FAILURE and copy.replicas:
        # The running version's own pods fail (the commit that brings blue-green may be its fix): no copy of it
        # can take traffic, so the rollout starts as it did before colouring existed.
        d.emit(Reason.COLOURING_SKIPPED, f"the copy in {colour} is failing: {obs.new_pods.failing[0]}")
        _begin(d, False)
        return d.done(0.0)
    if not copy.exists or copy.template_hash != obs.stable.template_hash or copy.replicas != replicas:
        d.actions.append(Clone(colour, replicas))
        message = f"blue-green: copying the running version to {colour} before the first rollout"
        d.state = replace(d.state, message=message)
        return d.await_change()
    if not (copy.rolled and copy.ready >= replicas):
        d.state = replace(
            d.state, message=f"blue-green: {colour} {copy.ready}/{replicas} Ready before the first rollout"
        )
        return d.await_change()
    d.actions += [Route(ServiceRole.ACTIVE, colour), Route(ServiceRole.PREVIEW, colour), Scale(Track.STABLE, 0)]
    d.state = replace(
        d.state, stable_color=colour.value, message=f"blue-green: the running version now serves from {colour}"
    )
    then = "" if on_stable(d) else "; the rollout starts next"
    d.emit(Reason.STABLE_COLOURED, f"the running version now serves from {colour}{then}")
    return d.done(0.0)


# -- the moves the shared flow asks of the strategy ----------------------------------------------------------------


def _restore(d: Draft, *, switched: bool) -> None:
    """Traffic back to the stable colour in one step; repeated while aborted, so a half-done restore is finished."""
    obs = d.obs
    stable, new = tracks(d.state, d.policy)
    if switched:
        d.actions.append(Route(ServiceRole.ACTIVE, stable))
    if switched or obs.new.replicas:
        d.actions.append(Route(ServiceRole.PREVIEW, stable))
    if obs.stable.replicas < obs.total:
        d.actions.append(Scale(stable, obs.total))
    if obs.new.replicas:
        d.actions.append(Scale(new, 0))


def _roll_back(d: Draft) -> bool:
    _restore(d, switched=d.state.step >= BlueGreenStep.POST_ANALYSIS)
    return True


def _supersede(d: Draft) -> None:
    """Past the scale-down delay the new colour serves and passed its analysis: it succeeded. Otherwise traffic
    goes back to the stable colour (the new colour is redeployed by the next rollout, not scaled)."""
    s = d.state
    stable, new = tracks(s, d.policy)
    if s.phase is Phase.PROMOTING and s.step == BlueGreenStep.SCALE_DOWN:
        d.finish(RolloutOutcome.SUCCEEDED, "superseded during promotion")
        d.state = replace(d.state, stable_hash=s.target_hash, stable_revision=s.revision, stable_color=new.value)
    else:
        d.finish(RolloutOutcome.SUPERSEDED, f"superseded by {d.obs.revision or d.obs.target_hash}")
        if s.step >= BlueGreenStep.POST_ANALYSIS:
            d.actions.append(Route(ServiceRole.ACTIVE, stable))


def _begin(d: Draft, retry: bool) -> None:
    new = tracks(d.state, d.policy)[1]
    start(d, retry=retry, actions=(Deploy(new, d.obs.total), Route(ServiceRole.PREVIEW, new)))


def _promote_full(d: Draft) -> None:
    """Skip the analyses and the gate: switch as soon as every preview pod is Ready (``_gate``; at once when they
    are), then the scale-down. Switching to a preview still coming up would send the active Service's traffic to
    pods that are not Ready."""
    s = d.state
    if s.step < BlueGreenStep.POST_ANALYSIS:
        d.state = replace(s, phase=Phase.PROGRESSING, full=True)
    else:
        d.state = replace(s, phase=Phase.PROMOTING, step=BlueGreenStep.SCALE_DOWN, step_started_at=d.now, full=True)


def _passes_on_promote(d: Draft) -> bool:
    """The analyses complete on ``gitsync rollout promote``; the gate is passed by the switch itself
    (``Draft.promoted``)."""
    return d.state.step in (BlueGreenStep.PRE_ANALYSIS, BlueGreenStep.POST_ANALYSIS)


def _resumed(d: Draft) -> Phase:
    return Phase.PROMOTING if d.state.step >= BlueGreenStep.POST_ANALYSIS else Phase.PROGRESSING


MOVES = Moves(
    begin=_begin,
    roll_back=_roll_back,
    supersede=_supersede,
    promote_full=_promote_full,
    passes_on_promote=_passes_on_promote,
    resumed=_resumed,
)
