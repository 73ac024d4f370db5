"""The analysis a rollout runs at its current phase and step: which checks, which are due, their bookkeeping.

Contract: pure, no I/O. The executor measures ``checks_due`` before calling ``decide``; ``decide`` folds the
measurements into the runs kept in the state (``recorded``).
"""

from __future__ import annotations

from collections.abc import Iterable

from gitsync.analysis.run import CheckRun, CheckVerdict, Measurement, record, start
from gitsync.analysis.spec import AnalysisSpec, CheckSpec
from gitsync.strategy.model import BlueGreenStep
from gitsync.strategy.policy import RolloutPolicy, Strategy
from gitsync.strategy.state import Phase, RolloutState

__all__ = ["active_analyses", "checks_due", "next_due", "recorded", "started"]


def active_analyses(state: RolloutState, policy: RolloutPolicy) -> tuple[AnalysisSpec, AnalysisSpec]:
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
    step, background = active_analyses(state, policy)
    due: list[CheckSpec] = []
    for spec, runs in ((step, state.checks), (background, state.background)):
        by_name = {run.name: run for run in runs}
        due.extend(c for c in spec.checks if c.name in by_name and by_name[c.name].due(now))
    return tuple(due)


def recorded(
    runs: tuple[CheckRun, ...], spec: AnalysisSpec, measurements: Iterable[Measurement]
) -> tuple[CheckRun, ...]:
    """``runs`` with the ``measurements`` of their checks counted."""
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


def started(spec: AnalysisSpec, now: float) -> tuple[CheckRun, ...]:
    return tuple(start(c, now) for c in spec.checks)


def next_due(runs: Iterable[CheckRun], now: float) -> float | None:
    times = [max(run.next_at - now, 0.0) for run in runs if run.verdict is CheckVerdict.RUNNING]
    return min(times) if times else None
