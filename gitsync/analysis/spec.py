"""What a check is: the parsed form of one entry of ``rollout.analysis.checks`` (parsed by ``strategy.policy``).

Contract: pure values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gitsync.analysis.condition import Condition

__all__ = ["AnalysisSpec", "CheckSpec", "CheckType", "PodHealthPolicy"]


class CheckType(StrEnum):
    POD_HEALTH = "podHealth"
    PROMETHEUS = "prometheus"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One named check. A check is measured every ``interval`` seconds, ``count`` times (0: until the rollout
    leaves the phase that runs it); it fails when failures exceed ``failure_limit`` and pauses the rollout when
    inconclusive measurements (no data, provider errors) exceed ``inconclusive_limit``."""

    name: str
    type: CheckType
    interval: float = 5.0
    count: int = 1
    failure_limit: int = 0
    inconclusive_limit: int = 0
    initial_delay: float = 0.0
    query: str = ""
    address: str = ""
    url: str = ""
    json_path: str = ""
    expected_status: tuple[int, ...] = ()
    timeout: float = 5.0
    success_condition: Condition | None = None
    failure_condition: Condition | None = None
    max_restarts: int | None = None
    """podHealth: overrides ``rollout.podHealth.maxRestarts`` for this check."""
    progress_deadline: float | None = None
    """podHealth: overrides ``rollout.podHealth.progressDeadlineSeconds`` for this check."""
    path: str = ""
    """Where the check is declared in the values (``rollout.analysis.checks[1]``), so that a query the provider
    refuses is reported at its field."""


@dataclass(frozen=True, slots=True)
class AnalysisSpec:
    checks: tuple[CheckSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class PodHealthPolicy:
    """The gate on the new version's pods that is always on: crash-looping or image errors fail at once,
    restarts above ``max_restarts`` fail, and pods not Ready ``progress_deadline`` seconds after they were
    created fail."""

    max_restarts: int = 2
    progress_deadline: float = 120.0
