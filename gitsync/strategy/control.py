"""Human controls and status: write a command into the rollout state part, and describe a rollout.

Contract: I/O only through ``ports.StateStore``. A command is a request the executor applies at its next step
(the agent's, or the one ``gitsync rollout promote`` runs itself); a newer command replaces an unapplied older one.
"""

from __future__ import annotations

from typing import Any

from gitsync.model import AppEnv, Json
from gitsync.ports import StateStore
from gitsync.strategy.executor import PART
from gitsync.strategy.state import Command, CommandName, RolloutState

__all__ = ["describe_rollout", "request"]


def request(store: StateStore, key: AppEnv, namespace: str, name: CommandName, now: float, by: str = "") -> None:
    """Queue ``name`` for ``key``; ``TransientError`` when the executor wrote at the same moment (try again)."""
    doc, version = store.load(key, namespace, PART)
    store.save(key, namespace, PART, {**doc, "command": Command(name, now, by).to_json()}, version)


def describe_rollout(store: StateStore, key: AppEnv, namespace: str) -> dict[str, Any]:
    """Status for ``gitsync status``: phase, step, weight, revisions, the latest analysis values, why it
    aborted (with evidence), warnings, a pending command and the last history entries. ``{}`` when no
    rollout state exists (rolling strategy, or nothing deployed yet)."""
    doc, _ = store.load(key, namespace, PART)
    if not doc:
        return {}
    state = RolloutState.from_json(doc.get("state") or {})
    analysis: list[Json] = []
    for group, runs in (("step", state.checks), ("background", state.background), ("passed", state.passed)):
        for run in runs:
            last = run.last
            analysis.append(
                {
                    "check": run.name,
                    "group": group,
                    "verdict": run.verdict.value,
                    "measurements": run.taken,
                    "failures": run.failures,
                    "inconclusive": run.inconclusive,
                    "value": last.value if last else None,
                    "outcome": last.outcome.value if last else None,
                    "message": last.message if last else "",
                }
            )
    out: dict[str, Any] = {
        "phase": state.phase.value,
        "step": state.step,
        "steps": state.steps,
        "weight": state.weight,
        "message": state.message,
        "revision": state.revision,
        "stableRevision": state.stable_revision,
        "targetHash": state.target_hash,
        "stableHash": state.stable_hash,
        "analysis": analysis,
        "warnings": list(state.warnings),
        "history": [entry.to_json() for entry in state.history[-5:]],
    }
    if state.strategy:
        out["strategy"] = state.strategy
    if state.retiring:
        out["retiring"] = [f"{state.workload}-{track}" for track in state.retiring]
    if state.stable_color:
        out["activeColor"] = state.stable_color
    if state.abort_reason:
        out["abortReason"] = state.abort_reason
        out["evidence"] = list(state.evidence)
    if state.failed_hash:
        out["failedHash"] = state.failed_hash
    if doc.get("command"):
        out["pendingCommand"] = doc["command"]
    return out
