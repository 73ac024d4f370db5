"""A change of strategy: the running rollout ends, traffic goes back to the stable workload, and the tracks the new
strategy does not use (the canary, the colours) retire.

Contract: pure, no I/O. Retiring tracks keep serving until the workload the new strategy serves from is rolled out
and Ready, then they are removed, so a strategy change never drops capacity. ``retire`` is the whole step for an
app whose strategy is (now) rolling; ``adopt`` and ``retire_when_settled`` wrap every canary or blue-green step.
"""

from __future__ import annotations

from dataclasses import replace

from gitsync.events import Reason
from gitsync.strategy.draft import Draft
from gitsync.strategy.model import (
    TRACKS_OF,
    Action,
    Decision,
    Deploy,
    Emit,
    Observation,
    Remove,
    Scale,
    Track,
    WorkloadView,
)
from gitsync.strategy.policy import RolloutPolicy, Strategy
from gitsync.strategy.state import ACTIVE_PHASES, Phase, RolloutOutcome, RolloutState

__all__ = ["adopt", "retire", "retire_when_settled"]


def previous(state: RolloutState) -> Strategy | None:
    """The strategy that wrote ``state``; None when it was written before strategies were recorded."""
    try:
        return Strategy(state.strategy) if state.strategy else None
    except ValueError:
        return None


def adopt(d: Draft) -> None:
    """Stamp the policy's strategy and workload on the state; a state written under another strategy is handed
    over first (``_switch``). States from before the strategy was recorded are taken to be the current one's."""
    old, new = previous(d.state), d.policy.strategy
    if old is not None and old is not new:
        _switch(d, old)
    d.state = replace(d.state, strategy=new.value, workload=d.obs.workload or d.state.workload)


def _hand_over(d: Draft, reason: str) -> None:
    """A change of strategy: a running rollout ends as superseded and the rollout's own fields start afresh."""
    s = d.state
    if s.phase in ACTIVE_PHASES:
        d.finish(RolloutOutcome.SUPERSEDED, reason)
    d.state = replace(
        d.state,
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


def _switch(d: Draft, old: Strategy) -> None:
    """From one progressive strategy to the other: the stable workload gets its full replicas back, and the old
    strategy's tracks the new one does not use start retiring."""
    s, obs, new = d.state, d.obs, d.policy.strategy
    reason = f"strategy changed from {old.value} to {new.value}"
    _hand_over(d, reason)
    used = {t.value for t in TRACKS_OF[new]}  # a track still retiring from an earlier switch may serve again
    retiring = sorted({*s.retiring, *(t.value for t in TRACKS_OF[old])} - used)
    d.state = replace(d.state, retiring=tuple(retiring))
    if old is Strategy.CANARY and obs.stable.exists and obs.stable.replicas < obs.total:
        d.actions.append(Scale(Track.STABLE, obs.total))  # the canary's weight had taken replicas from it
    if old is Strategy.BLUE_GREEN and obs.stable.template_hash != s.stable_hash:
        # A plain Deployment left from before blue-green (scaled to zero at its first switch) holds an older
        # template than the active colour: neither a stable to compare a canary with nor one to fall back to.
        d.obs = replace(obs, stable=WorkloadView())
    leftovers = f"; {', '.join(retiring)} removed once the new workload is Ready" if retiring else ""
    d.emit(Reason.STRATEGY_CHANGED, f"{reason}{leftovers}")


def retire_when_settled(decision: Decision, obs: Observation, stable_track: Track) -> Decision:
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
        Emit(Reason.LEFTOVERS_REMOVED, removed),
    )
    return actions, replace(state, retiring=())


def retire(state: RolloutState, obs: Observation, now: float, present: frozenset[Track]) -> Decision:
    """One step for an app whose strategy is (now) rolling: Kubernetes rolls its Deployment, so the only work is
    handing over from an earlier canary or blue-green whose tracks are still ``present``. The rendered Deployment
    gets the rendered template (the executor applies it while anything retires); once it is rolled out and Ready,
    those tracks are removed. A Deployment that left the render has nothing to wait for: they go at once."""
    d = Draft(state, obs, RolloutPolicy(), now)
    old = previous(state)
    retiring = tuple(sorted(t.value for t in present))
    leftovers = ", ".join(retiring)
    if old is not Strategy.ROLLING:
        reason = f"strategy changed from {old.value if old is not None else 'canary or blue-green'} to rolling"
        _hand_over(d, reason)
        d.state = replace(d.state, strategy=Strategy.ROLLING.value)
        if retiring:
            d.emit(Reason.STRATEGY_CHANGED, f"{reason}; {leftovers} removed once the new workload is Ready")
    d.state = replace(d.state, workload=obs.workload or d.state.workload, retiring=retiring)
    if not retiring:
        return d.done()
    if obs.workload:
        stable = obs.stable
        if stable.template_hash != obs.target_hash or stable.spec_hash != obs.spec_hash or stable.replicas != obs.total:
            d.actions.append(Deploy(Track.STABLE, obs.total))
            message = f"rolling update: {obs.workload} takes the rendered template before {leftovers} go"
            d.state = replace(d.state, message=message)
            return d.await_change()
        if not (stable.rolled and stable.ready >= obs.total):
            message = f"rolling update: {obs.workload} {stable.ready}/{obs.total} Ready; then {leftovers} go"
            d.state = replace(d.state, message=message)
            return d.await_change()
    actions, d.state = _removal(d.state)
    d.actions += actions
    message = f"rolling update: removed the {leftovers} track(s) of the old strategy"
    d.state = replace(
        d.state, phase=Phase.HEALTHY, stable_hash=obs.target_hash, stable_revision=obs.revision, message=message
    )
    return d.done()
