"""The rollout step function: ``decide(state, observation, policy, now) -> Decision``.

Contract: pure, no I/O, no clock. The executor gathers an ``Observation`` (workloads, the new version's pods, the
analysis measurements that were due, a pending human command), calls ``decide`` once, performs the returned
``actions`` in order, persists ``Decision.state`` and looks again after ``requeue_after`` seconds.

Where a step is chosen: ``TABLE`` maps (phase, strategy) to the handler that takes the step: ``canary`` and
``bluegreen`` hold each strategy's steps, ``handover`` a change of strategy, ``draft`` the transitions both share.
Before the table, an active rollout goes through what applies whatever its step (``_interrupt``): a new template
supersedes it; ``gitsync rollout abort``, failing pods of the new version or failed background analysis abort it
(traffic back to stable in one step, the template not retried until the render changes or ``gitsync rollout
retry``); ``gitsync rollout promote`` resumes it; inconclusive analysis pauses it for a human.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gitsync.analysis.run import CheckOutcome, CheckVerdict, aggregate, evidence
from gitsync.analysis.spec import AnalysisSpec
from gitsync.events import Reason
from gitsync.strategy import bluegreen, canary
from gitsync.strategy.checks import active_analyses, next_due, recorded, started
from gitsync.strategy.draft import Draft, Handler, Moves, abort, complete_step, on_stable, pause
from gitsync.strategy.handover import adopt, retire_when_settled
from gitsync.strategy.model import BlueGreenStep, Decision, Observation, tracks
from gitsync.strategy.policy import RolloutPolicy, Strategy
from gitsync.strategy.state import ACTIVE_PHASES, CommandName, Phase, RolloutState

__all__ = ["MOVES", "TABLE", "decide", "step_count"]

TABLE: Mapping[tuple[Phase, Strategy], Handler] = {
    (Phase.IDLE, Strategy.CANARY): canary.settled,
    (Phase.HEALTHY, Strategy.CANARY): canary.settled,
    (Phase.ABORTED, Strategy.CANARY): canary.settled,
    (Phase.PROGRESSING, Strategy.CANARY): canary.progress,
    (Phase.PAUSED, Strategy.CANARY): canary.paused,
    (Phase.PROMOTING, Strategy.CANARY): canary.promoting,
    (Phase.IDLE, Strategy.BLUE_GREEN): bluegreen.settled,
    (Phase.HEALTHY, Strategy.BLUE_GREEN): bluegreen.settled,
    (Phase.ABORTED, Strategy.BLUE_GREEN): bluegreen.settled,
    (Phase.PROGRESSING, Strategy.BLUE_GREEN): bluegreen.progress,
    (Phase.PAUSED, Strategy.BLUE_GREEN): bluegreen.paused,
    (Phase.PROMOTING, Strategy.BLUE_GREEN): bluegreen.progress,
}
"""Who takes the step, by the phase (after ``_interrupt``) and the strategy. The rolling strategy has no rollout
to step through: its apps go through ``handover.retire``."""

MOVES: Mapping[Strategy, Moves] = {Strategy.CANARY: canary.MOVES, Strategy.BLUE_GREEN: bluegreen.MOVES}
"""What each progressive strategy does where the shared flow needs it to decide."""


def decide(state: RolloutState, obs: Observation, policy: RolloutPolicy, now: float) -> Decision:
    """One step of a canary or blue-green rollout; see the module docstring."""
    d = Draft(replace(state, steps=step_count(policy)), obs, policy, now)
    adopt(d)
    stable_track = tracks(d.state, policy)[0]
    moves = MOVES[policy.strategy]
    decision = _interrupt(d, moves) if d.state.phase in ACTIVE_PHASES else None
    if decision is None:
        decision = TABLE[(d.state.phase, policy.strategy)](d)
    return retire_when_settled(decision, d.obs, stable_track)


def step_count(policy: RolloutPolicy) -> int:
    """How many steps ``policy``'s rollout goes through (``RolloutState.steps``, the ``6`` of ``step 2/6``)."""
    return len(BlueGreenStep) if policy.strategy is Strategy.BLUE_GREEN else len(policy.canary.steps)


def _interrupt(d: Draft, moves: Moves) -> Decision | None:
    """What happens to an active rollout whatever its step: the decision when it ends the step here, None when the
    table's handler goes on (its phase possibly changed by ``gitsync rollout promote``)."""
    state, obs = d.state, d.obs
    command = obs.command.name if obs.command else None
    by = obs.command.by if obs.command and obs.command.by else "a user"
    if obs.target_hash != state.target_hash and not moves.committed(d):
        moves.supersede(d)
        d.emit(Reason.ROLLOUT_SUPERSEDED, f"{state.revision or state.target_hash}: superseded by a new revision")
        if on_stable(d):
            # A revert to what the stable runs: nothing to roll out (as Argo Rollouts skips the steps of an update
            # back to the stable ReplicaSet). The settled handler takes the new version's pods away next.
            d.state = replace(
                d.state,
                phase=Phase.HEALTHY,
                target_hash=obs.target_hash,
                revision=obs.revision,
                weight=0,
                checks=(),
                background=(),
                message="back on the stable version: the new revision runs what the stable runs",
            )
        else:
            moves.begin(d, False)
        return d.done(0.0)
    if command is CommandName.ABORT:
        abort(d, moves, "aborted by gitsync rollout abort", (f"requested by {by}",))
        if d.state.phase is Phase.ABORTED:
            return d.done()
        command = None
    step_spec, background_spec = active_analyses(d.state, d.policy)
    d.state = replace(
        d.state,
        checks=recorded(d.state.checks, step_spec, obs.measurements),
        background=recorded(d.state.background, background_spec, obs.measurements),
    )
    if obs.new_pods.outcome is CheckOutcome.FAILURE and obs.new.replicas:
        abort(d, moves, "new version's pods are failing", obs.new_pods.failing)
        return d.done()
    background = aggregate(d.state.background)
    if background.verdict is CheckVerdict.FAILED and background.deciding is not None:
        abort(d, moves, f"background analysis failed: {background.deciding.name}", (evidence(background.deciding),))
        return d.done()
    if command is CommandName.PROMOTE_FULL:
        d.state = replace(d.state, message="promoted fully by a user", checks=(), background=())
        moves.promote_full(d)
        return d.done(0.0)
    if command is CommandName.PROMOTE:
        restart = background_spec if background.verdict is CheckVerdict.INCONCLUSIVE else None
        _promote(d, moves, by, restart)
    elif background.verdict is CheckVerdict.INCONCLUSIVE and background.deciding is not None:
        pause(d, f"background analysis inconclusive: {evidence(background.deciding)}")
        return d.done(next_due(d.state.background, d.now))
    return None


def _promote(d: Draft, moves: Moves, by: str, restart_background: AnalysisSpec | None) -> None:
    """``gitsync rollout promote``: resume from a pause and complete the current step if it is one a human can pass
    (a pause, an analysis, the blue-green gate); a setWeight step still finishes by itself. An inconclusive
    background analysis starts over."""
    d.promoted = True
    if restart_background is not None:
        d.state = replace(d.state, background=started(restart_background, d.now))
    if d.state.phase is Phase.PAUSED:
        d.state = replace(d.state, phase=moves.resumed(d))
    d.state = replace(d.state, message=f"promoted by {by}")
    if moves.passes_on_promote(d):
        complete_step(d)
