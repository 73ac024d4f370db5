"""The decision being drafted within one ``decide`` call, and the transitions every strategy shares.

Contract: pure, no I/O. A ``Draft`` is local to one ``decide`` call and never escapes it: handlers replace its
``state`` (``dataclasses.replace``), append actions and events, and ``done`` freezes it into a ``Decision``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gitsync.analysis.run import CheckVerdict, aggregate, evidence
from gitsync.analysis.spec import AnalysisSpec
from gitsync.events import Reason
from gitsync.strategy.checks import next_due, started
from gitsync.strategy.model import POLL, WATCH, Action, Decision, Deploy, Emit, Observation, Scale, Track
from gitsync.strategy.policy import RolloutPolicy
from gitsync.strategy.state import (
    ACTIVE_PHASES,
    CommandName,
    HistoryEntry,
    Phase,
    RolloutOutcome,
    RolloutState,
    add_history,
)

__all__ = [
    "Draft",
    "Handler",
    "Moves",
    "abort",
    "complete_step",
    "first_deployed",
    "holds_abort",
    "on_stable",
    "pause",
    "retrying",
    "run_analysis",
    "scale_new_down",
    "soonest",
    "start",
    "stay_on_stable",
    "wait_for_human",
]


def soonest(*waits: float | None) -> float | None:
    present = [w for w in waits if w is not None]
    return min(present) if present else None


@dataclass(slots=True)
class Draft:
    """The decision being built (mutable, local to one ``decide`` call)."""

    state: RolloutState
    obs: Observation
    policy: RolloutPolicy
    now: float
    actions: list[Action] = field(default_factory=list)
    requeue: float | None = None
    promoted: bool = False
    """``gitsync rollout promote`` was applied in this call (passes the blue-green gate)."""
    on_change: bool = False

    def done(self, requeue: float | None = None) -> Decision:
        wait = soonest(self.requeue, requeue)
        if self.state.phase in ACTIVE_PHASES:
            wait = WATCH if wait is None else min(wait, WATCH)
        return Decision(self.state, tuple(self.actions), wait, self.on_change and wait is not None)

    def await_change(self) -> Decision:
        """Wait for the cluster (pods Ready or gone, a controller observing a spec): see ``Decision.on_change``."""
        self.on_change = True
        return self.done(POLL)

    def emit(self, reason: Reason, message: str) -> None:
        self.actions.append(Emit(reason, message))

    def finish(self, outcome: RolloutOutcome, reason: str = "", proof: tuple[str, ...] = ()) -> None:
        """Close the running rollout with a history entry."""
        s = self.state
        entry = HistoryEntry(s.target_hash, s.revision, outcome, s.started_at, self.now, reason, proof)
        self.state = add_history(s, entry)

    @property
    def subject(self) -> str:
        """How events name the running rollout: its revision, or its template hash when it has none."""
        return self.state.revision or self.state.target_hash


Handler = Callable[[Draft], Decision]
"""One entry of ``decide.TABLE``: the step for one (phase, strategy)."""


@dataclass(frozen=True, slots=True)
class Moves:
    """What a strategy does where the shared flow (``decide``) needs it to decide for itself."""

    begin: Callable[[Draft, bool], None]
    """Start a rollout of the observed template (``True``: a ``gitsync rollout retry`` of the failed one)."""
    roll_back: Callable[[Draft], bool]
    """An abort: put all traffic back on the stable workload in one step; False (and nothing done but a message
    and an event) when the strategy is past the point where it can."""
    supersede: Callable[[Draft], None]
    """A new template arrived mid-rollout: close this rollout and put traffic where the next one starts from
    (the caller then emits the event and ``begin``s)."""
    promote_full: Callable[[Draft], None]
    """``gitsync rollout promote --full``: skip the remaining steps and analysis."""
    passes_on_promote: Callable[[Draft], bool]
    """Whether ``gitsync rollout promote`` completes the current step (a pause, an analysis)."""
    resumed: Callable[[Draft], Phase]
    """The phase a paused rollout resumes in."""
    committed: Callable[[Draft], bool] = lambda _d: False
    """Past the point where a new template may interrupt it (a canary's pods being handed to the stable
    Deployment): the new template waits until this rollout has finished."""


def pause(d: Draft, reason: str) -> None:
    if d.state.phase is not Phase.PAUSED:
        d.emit(Reason.ROLLOUT_PAUSED, f"{d.subject}: {reason}")
    message = f"paused: {reason}; run gitsync rollout promote to continue or gitsync rollout abort"
    d.state = replace(d.state, phase=Phase.PAUSED, message=message)


def complete_step(d: Draft) -> None:
    s = d.state
    d.state = replace(s, step=s.step + 1, step_started_at=d.now, checks=(), passed=(*s.passed, *s.checks))


def abort(d: Draft, moves: Moves, reason: str, proof: tuple[str, ...]) -> None:
    """Traffic back to stable (``moves.roll_back``), the template remembered as failed, the rollout closed."""
    s = d.state
    if not moves.roll_back(d):
        return
    d.state = replace(
        d.state,
        phase=Phase.ABORTED,
        failed_hash=s.target_hash,
        abort_reason=reason,
        evidence=proof,
        weight=0,
        message=f"aborted: {reason}",
    )
    d.finish(RolloutOutcome.ABORTED, reason, proof)
    detail = f"; {proof[0]}" if proof else ""
    d.emit(Reason.ROLLOUT_ABORTED, f"{s.revision or s.target_hash}: {reason}{detail}")
    d.requeue = POLL
    d.on_change = True


def run_analysis(d: Draft, moves: Moves, spec: AnalysisSpec, what: str) -> bool | None:
    """Drive the step's analysis: True when it passed, None while running or paused, False after an abort."""
    if not d.state.checks and spec.checks:
        d.state = replace(d.state, checks=started(spec, d.now))
        d.requeue = next_due(d.state.checks, d.now)
        return None
    result = aggregate(d.state.checks)
    if result.verdict is CheckVerdict.FAILED and result.deciding is not None:
        abort(d, moves, f"{what} failed: {result.deciding.name}", (evidence(result.deciding),))
        return False
    if result.verdict is CheckVerdict.INCONCLUSIVE and result.deciding is not None:
        pause(d, f"{what} inconclusive: {evidence(result.deciding)}")
        d.requeue = None
        return None
    if result.verdict is CheckVerdict.RUNNING:
        d.requeue = next_due(d.state.checks, d.now)
        return None
    return True


def start(d: Draft, *, retry: bool, background: AnalysisSpec | None = None, actions: tuple[Action, ...] = ()) -> None:
    """Start a rollout at step 0 with the observed template: the strategy's first ``actions`` and its
    ``background`` analysis."""
    obs = d.obs
    d.state = replace(
        d.state,
        phase=Phase.PROGRESSING,
        target_hash=obs.target_hash,
        revision=obs.revision,
        failed_hash="" if retry else d.state.failed_hash,
        step=0,
        step_started_at=d.now,
        started_at=d.now,
        weight=0,
        ready_at=0.0,
        switched_at=0.0,
        promoted_at=0.0,
        full=False,
        checks=(),
        background=started(background, d.now) if background is not None else (),
        passed=(),
        abort_reason="",
        evidence=(),
        warnings=(),
        replicas=obs.total,
        message="retrying" if retry else "rollout started",
    )
    d.actions += actions
    d.emit(Reason.ROLLOUT_STARTED, f"{obs.revision or obs.target_hash}: {d.policy.strategy.value} rollout started")


def on_stable(d: Draft) -> bool:
    """The observed template is what the stable workload runs (or, before anything was recorded, what the live
    stable Deployment runs): nothing to roll out."""
    s, obs = d.state, d.obs
    return obs.target_hash == s.stable_hash or (
        not s.stable_hash and obs.stable.exists and obs.stable.template_hash == obs.target_hash
    )


def stay_on_stable(d: Draft, stable: Track) -> None:
    """Settled on the stable template: Healthy, with a spec change (not a template change) applied in place."""
    s, obs = d.state, d.obs
    if s.phase is not Phase.HEALTHY or not s.stable_hash:
        message = "back on the stable version" if s.phase is Phase.ABORTED else "stable runs the desired version"
        d.state = replace(s, phase=Phase.HEALTHY, stable_hash=obs.target_hash, message=message, weight=0)
    if obs.stable.spec_hash != obs.spec_hash or obs.stable.replicas != obs.total:
        d.actions.append(Deploy(stable, obs.total))  # same template: no rollout, just the new spec


def scale_new_down(d: Draft, new: Track) -> None:
    if d.obs.new.replicas:
        d.actions.append(Scale(new, 0))


def holds_abort(d: Draft) -> bool:
    """Aborted, and the render still wants the failed template without a ``gitsync rollout retry``."""
    command = d.obs.command.name if d.obs.command else None
    s = d.state
    return s.phase is Phase.ABORTED and d.obs.target_hash == s.failed_hash and command is not CommandName.RETRY


def retrying(d: Draft) -> bool:
    return d.obs.command is not None and d.obs.command.name is CommandName.RETRY


def first_deployed(d: Draft) -> None:
    """Nothing ran before, so there was nothing to compare with: the state of a direct deployment."""
    obs = d.obs
    d.state = replace(
        d.state,
        phase=Phase.HEALTHY,
        stable_hash=obs.target_hash,
        stable_revision=obs.revision,
        target_hash=obs.target_hash,
        revision=obs.revision,
        message="first deployment: nothing to compare with, deployed directly",
    )
    d.emit(Reason.ROLLOUT_COMPLETED, f"{obs.revision or obs.target_hash}: first deployment, no analysis")


def wait_for_human(d: Draft) -> Decision:
    """Paused: nothing moves until ``gitsync rollout promote`` or ``abort``; the running checks are still measured."""
    return d.done(next_due((*d.state.checks, *d.state.background), d.now))
