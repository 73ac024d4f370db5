"""The persisted rollout state of one app-env (state part ``rollout``), the human command inbox and the history.

Contract: pure values, JSON round-trippable (``to_json``/``from_json``). The document is the whole truth about a
rollout: a new agent that loads it continues at the same step. Its shape, as stored::

    {"state": {...RolloutState...}, "command": {"name": "promote", "at": ..., "by": ...} | absent}

``history`` keeps the last ``HISTORY_LIMIT`` finished rollouts (succeeded, aborted, superseded) with their evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from gitsync.analysis.run import CheckRun
from gitsync.model import Json

__all__ = [
    "HISTORY_LIMIT",
    "Command",
    "CommandName",
    "HistoryEntry",
    "Phase",
    "RolloutOutcome",
    "RolloutState",
    "add_history",
    "step_label",
]

HISTORY_LIMIT = 20


class Phase(StrEnum):
    IDLE = "Idle"
    """No rollout has run under this policy yet."""
    PROGRESSING = "Progressing"
    """Going through the steps (canary) or bringing up and analysing the preview (blue-green)."""
    PAUSED = "Paused"
    """Waiting for a human: an indefinite pause step, inconclusive analysis, or blue-green without autoPromotion."""
    PROMOTING = "Promoting"
    """Canary: the stable Deployment is being rolled to the new template. Blue-green: switched, post-promotion
    analysis and the scale-down delay are running."""
    HEALTHY = "Healthy"
    """The stable workload runs the desired template and nothing else runs."""
    ABORTED = "Aborted"
    """Rolled back to stable; this template is not tried again until a new revision or ``gitsync rollout retry``."""


ACTIVE_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING})


class CommandName(StrEnum):
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Command:
    name: CommandName
    at: float
    by: str = ""

    def to_json(self) -> Json:
        return {"name": self.name.value, "at": self.at, "by": self.by}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Command:
        return cls(CommandName(raw["name"]), float(raw.get("at", 0.0)), str(raw.get("by", "")))


class RolloutOutcome(StrEnum):
    """How a rollout ended (``HistoryEntry.outcome``); the values are the history's wire format."""

    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    """Rolled back: failing pods, failed analysis, or ``gitsync rollout abort``."""
    SUPERSEDED = "superseded"
    """A new template or a change of strategy arrived before it finished."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One finished rollout: what was rolled out, how it ended and why (the evidence a reviewer reads)."""

    target_hash: str
    revision: str
    outcome: RolloutOutcome
    started_at: float
    finished_at: float
    reason: str = ""
    evidence: tuple[str, ...] = ()

    def to_json(self) -> Json:
        return {
            "targetHash": self.target_hash,
            "revision": self.revision,
            "outcome": self.outcome.value,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "reason": self.reason,
            "evidence": list(self.evidence),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> HistoryEntry:
        return cls(
            str(raw["targetHash"]),
            str(raw.get("revision", "")),
            RolloutOutcome(raw["outcome"]),
            float(raw.get("startedAt", 0.0)),
            float(raw.get("finishedAt", 0.0)),
            str(raw.get("reason", "")),
            tuple(raw.get("evidence") or ()),
        )


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: Phase = Phase.IDLE
    stable_hash: str = ""
    """Pod-template hash the stable workload runs."""
    stable_revision: str = ""
    target_hash: str = ""
    """Pod-template hash being rolled out (a config-only change moves it through the config-hash annotation)."""
    revision: str = ""
    failed_hash: str = ""
    """The template of the last aborted rollout: not retried until the render changes or ``gitsync rollout retry``."""
    step: int = 0
    """The current step's 0-based index (the steps completed); people read it through ``step_label``."""
    step_started_at: float = 0.0
    started_at: float = 0.0
    weight: int = 0
    """Canary traffic share realised so far, percent (canary pods / all pods)."""
    message: str = ""
    warnings: tuple[str, ...] = ()
    stable_color: str = ""
    """Blue-green: the colour (``blue``/``green``) the active Service selects."""
    ready_at: float = 0.0
    switched_at: float = 0.0
    promoted_at: float = 0.0
    """Blue-green: when ``gitsync rollout promote`` passed the promotion gate; the switch then waits only for every
    preview pod to be Ready."""
    full: bool = False
    """Blue-green: ``gitsync rollout promote --full`` skips the analyses and the gate; the switch still waits for
    every preview pod to be Ready."""
    checks: tuple[CheckRun, ...] = ()
    """Runs of the current step's analysis (canary analysis step, blue-green pre/post promotion)."""
    background: tuple[CheckRun, ...] = ()
    passed: tuple[CheckRun, ...] = ()
    """Runs of the analyses this rollout completed, kept as its evidence (the release ledger's analysis values)
    until the next rollout starts."""
    abort_reason: str = ""
    evidence: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = field(default=())
    strategy: str = ""
    """The strategy that wrote this state (``policy.Strategy`` value); empty in states written before it was
    recorded, which are taken to be the current policy's."""
    workload: str = ""
    """Name of the rendered Deployment the strategy drives, so its tracks can be named after it left the render."""
    replicas: int = 0
    """Replicas the running rollout works with, fixed at its start: an app whose chart leaves replicas to an HPA
    keeps the count it had, while the canary's own pods come and go."""
    steps: int = 0
    """How many steps the rollout's strategy has (a canary's ``policy.canary.steps``; blue-green's five phases,
    ``model.BlueGreenStep``), kept with ``step`` so status, the dashboard and ``-o json`` say ``step 2/6`` without
    the policy at hand; 0 in states written before it was kept."""
    retiring: tuple[str, ...] = ()
    """Tracks (``canary``, ``blue``, ``green``) an earlier strategy left running, removed once the workload the
    current strategy serves from is rolled out and Ready."""

    def to_json(self) -> Json:
        return {
            "phase": self.phase.value,
            "stableHash": self.stable_hash,
            "stableRevision": self.stable_revision,
            "targetHash": self.target_hash,
            "revision": self.revision,
            "failedHash": self.failed_hash,
            "step": self.step,
            "stepStartedAt": self.step_started_at,
            "startedAt": self.started_at,
            "weight": self.weight,
            "message": self.message,
            "warnings": list(self.warnings),
            "stableColor": self.stable_color,
            "readyAt": self.ready_at,
            "switchedAt": self.switched_at,
            "promotedAt": self.promoted_at,
            "full": self.full,
            "checks": [run.to_json() for run in self.checks],
            "background": [run.to_json() for run in self.background],
            "passed": [run.to_json() for run in self.passed],
            "abortReason": self.abort_reason,
            "evidence": list(self.evidence),
            "history": [entry.to_json() for entry in self.history],
            "strategy": self.strategy,
            "workload": self.workload,
            "retiring": list(self.retiring),
            "replicas": self.replicas,
            "steps": self.steps,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RolloutState:
        if not raw:
            return cls()
        return cls(
            phase=Phase(raw.get("phase", Phase.IDLE.value)),
            stable_hash=str(raw.get("stableHash", "")),
            stable_revision=str(raw.get("stableRevision", "")),
            target_hash=str(raw.get("targetHash", "")),
            revision=str(raw.get("revision", "")),
            failed_hash=str(raw.get("failedHash", "")),
            step=int(raw.get("step", 0)),
            step_started_at=float(raw.get("stepStartedAt", 0.0)),
            started_at=float(raw.get("startedAt", 0.0)),
            weight=int(raw.get("weight", 0)),
            message=str(raw.get("message", "")),
            warnings=tuple(raw.get("warnings") or ()),
            stable_color=str(raw.get("stableColor", "")),
            ready_at=float(raw.get("readyAt", 0.0)),
            switched_at=float(raw.get("switchedAt", 0.0)),
            promoted_at=float(raw.get("promotedAt", 0.0)),
            full=bool(raw.get("full", False)),
            checks=tuple(CheckRun.from_json(r) for r in raw.get("checks") or ()),
            background=tuple(CheckRun.from_json(r) for r in raw.get("background") or ()),
            passed=tuple(CheckRun.from_json(r) for r in raw.get("passed") or ()),
            abort_reason=str(raw.get("abortReason", "")),
            evidence=tuple(raw.get("evidence") or ()),
            history=tuple(HistoryEntry.from_json(e) for e in raw.get("history") or ()),
            strategy=str(raw.get("strategy", "")),
            workload=str(raw.get("workload", "")),
            retiring=tuple(raw.get("retiring") or ()),
            replicas=int(raw.get("replicas", 0)),
            steps=int(raw.get("steps", 0)),
        )


def step_label(phase: str, step: int, steps: int) -> str:
    """How every text a person reads names a rollout's step (status, ``gitsync rollout status``, the dashboard,
    the rollout's messages and so its commit statuses, Events, logs and notifications): ``step 2/6`` is the
    second of six steps, the one running or waiting, counted from 1 as the dashboard lists them; ``all 6 steps
    done`` once the last one completed (a canary going to 100% and promoting). ``step`` is the 0-based index the
    state and ``-o json`` keep (Argo Rollouts' ``currentStepIndex``: the steps completed, which its ``kubectl argo
    rollouts get`` prints as ``Step: 1/6`` where this says ``step 2/6``). Empty when no rollout runs (Idle,
    Healthy); an aborted rollout names the step it stopped at. Without ``steps`` (a state written before the
    count was kept): ``step 2``."""
    if phase in (Phase.IDLE, Phase.HEALTHY):
        return ""
    if not steps:
        return f"step {step + 1}"
    return f"all {steps} steps done" if step >= steps else f"step {step + 1}/{steps}"


def add_history(state: RolloutState, entry: HistoryEntry) -> RolloutState:
    """Append ``entry`` (newest last), keeping the last ``HISTORY_LIMIT``."""
    return replace(state, history=(*state.history, entry)[-HISTORY_LIMIT:])
