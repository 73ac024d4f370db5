"""Analysis bookkeeping: measurements, the per-check run that counts them, and the verdict over many runs.

Contract: pure, no I/O; every value is JSON round-trippable because runs live in the persisted rollout state.
Semantics follow Argo Rollouts' AnalysisRun, tightened where it matters for safety:
- a check is measured every ``interval`` seconds, ``count`` times (0: until its phase ends, never "successful");
- it FAILS when failures exceed ``failure_limit`` (default 0: the first failure);
- it is INCONCLUSIVE when inconclusive measurements (no data, provider errors after ``ERROR_LIMIT`` in a row)
  exceed ``inconclusive_limit``; inconclusive pauses the rollout for a human, it never counts as success;
- PENDING measurements (pods not Ready yet, within their deadline) are not counted at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from gitsync.analysis.spec import CheckSpec
from gitsync.model import Json

__all__ = [
    "ERROR_LIMIT",
    "Aggregate",
    "CheckOutcome",
    "CheckRun",
    "CheckVerdict",
    "Measurement",
    "aggregate",
    "evidence",
    "record",
    "start",
]

ERROR_LIMIT = 4
"""Consecutive provider errors (Prometheus down, HTTP connection refused) tolerated before a check becomes
inconclusive: an outage of the metrics system pauses a rollout, it neither passes nor aborts it."""


class CheckOutcome(StrEnum):
    """How one measurement of one check came out (``Measurement.outcome``); persisted in the rollout state."""

    SUCCESS = "success"
    FAILURE = "failure"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    PENDING = "pending"


class CheckVerdict(StrEnum):
    """Where a check's run stands after its measurements so far (``CheckRun.verdict``), and the worst over many
    runs (``aggregate``); persisted in the rollout state."""

    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


_VERDICT_RANK = {
    CheckVerdict.SUCCESSFUL: 0,
    CheckVerdict.RUNNING: 1,
    CheckVerdict.INCONCLUSIVE: 2,
    CheckVerdict.FAILED: 3,
}


@dataclass(frozen=True, slots=True)
class Measurement:
    """One observation of one check: its outcome, the value seen (the evidence) and why."""

    check: str
    outcome: CheckOutcome
    at: float
    value: Any = None
    message: str = ""

    def to_json(self) -> Json:
        return {
            "check": self.check,
            "outcome": self.outcome.value,
            "at": self.at,
            "value": self.value,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Measurement:
        return cls(
            str(raw["check"]),
            CheckOutcome(raw["outcome"]),
            float(raw["at"]),
            raw.get("value"),
            str(raw.get("message", "")),
        )


@dataclass(frozen=True, slots=True)
class CheckRun:
    name: str
    next_at: float
    taken: int = 0
    successes: int = 0
    failures: int = 0
    inconclusive: int = 0
    consecutive_errors: int = 0
    verdict: CheckVerdict = CheckVerdict.RUNNING
    last: Measurement | None = None

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "nextAt": self.next_at,
            "taken": self.taken,
            "successes": self.successes,
            "failures": self.failures,
            "inconclusive": self.inconclusive,
            "consecutiveErrors": self.consecutive_errors,
            "verdict": self.verdict.value,
            "last": self.last.to_json() if self.last else None,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CheckRun:
        last = raw.get("last")
        return cls(
            name=str(raw["name"]),
            next_at=float(raw["nextAt"]),
            taken=int(raw.get("taken", 0)),
            successes=int(raw.get("successes", 0)),
            failures=int(raw.get("failures", 0)),
            inconclusive=int(raw.get("inconclusive", 0)),
            consecutive_errors=int(raw.get("consecutiveErrors", 0)),
            verdict=CheckVerdict(raw.get("verdict", CheckVerdict.RUNNING.value)),
            last=Measurement.from_json(last) if last else None,
        )

    def due(self, now: float) -> bool:
        return self.verdict is CheckVerdict.RUNNING and now >= self.next_at


def start(spec: CheckSpec, now: float) -> CheckRun:
    return CheckRun(spec.name, next_at=now + spec.initial_delay)


def record(run: CheckRun, spec: CheckSpec, m: Measurement) -> CheckRun:
    """Count one measurement and settle the verdict. Measurements for a finished run are ignored."""
    if run.verdict is not CheckVerdict.RUNNING:
        return run
    next_at = m.at + spec.interval
    if m.outcome is CheckOutcome.PENDING:
        return replace(run, next_at=next_at, last=m)
    if m.outcome is CheckOutcome.ERROR:
        errors = run.consecutive_errors + 1
        inconclusive = run.inconclusive + (1 if errors > ERROR_LIMIT else 0)
        run = replace(run, next_at=next_at, consecutive_errors=errors, inconclusive=inconclusive, last=m)
    else:
        run = replace(
            run,
            next_at=next_at,
            taken=run.taken + 1,
            successes=run.successes + (m.outcome is CheckOutcome.SUCCESS),
            failures=run.failures + (m.outcome is CheckOutcome.FAILURE),
            inconclusive=run.inconclusive + (m.outcome is CheckOutcome.INCONCLUSIVE),
            consecutive_errors=0,
            last=m,
        )
    if run.failures > spec.failure_limit:
        return replace(run, verdict=CheckVerdict.FAILED)
    if run.inconclusive > spec.inconclusive_limit:
        return replace(run, verdict=CheckVerdict.INCONCLUSIVE)
    if spec.count and run.taken >= spec.count:
        return replace(run, verdict=CheckVerdict.SUCCESSFUL)
    return run


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The verdict over a set of runs; ``deciding`` is the run that determined it (for evidence), if any."""

    verdict: CheckVerdict
    deciding: CheckRun | None = None


def aggregate(runs: Iterable[CheckRun]) -> Aggregate:
    """Worst verdict wins: Failed > Inconclusive > Running > Successful; no runs at all is Successful."""
    worst = Aggregate(CheckVerdict.SUCCESSFUL)
    for run in runs:
        if _VERDICT_RANK[run.verdict] > _VERDICT_RANK[worst.verdict]:
            worst = Aggregate(run.verdict, run)
    return worst


def evidence(run: CheckRun) -> str:
    """One line a human can act on: which check, what it saw, how often."""
    last = run.last
    seen = f"value={last.value!r}" if last is not None else "no measurement"
    why = f": {last.message}" if last is not None and last.message else ""
    return (
        f"check {run.name!r} {run.verdict.value.lower()} after {run.taken} measurements "
        f"({run.failures} failed, {run.inconclusive} inconclusive); last {seen}{why}"
    )
