"""What the dashboard shows, as frozen values built from what the agent keeps: pure, no I/O.

Every state is shown twice: as a tone (a colour, ``Tone``) and as words, so the page reads the same to a
colour-blind person and to a screen reader. The inputs are the documents the CLI reads too: the status and
history parts (``gitsync.history``), ``control.describe_rollout`` and the Git ledger's audit rows
(``gitsync.audit``); nothing here holds a rendered value, so no secret can reach a page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gitsync.audit import AuditRow, pull_request
from gitsync.history import Release, Result, Status
from gitsync.ledger import ReleaseOutcome
from gitsync.model import AppEnv, HealthStatus, SyncState
from gitsync.strategy.policy import RolloutPolicy, Step, Strategy
from gitsync.strategy.state import step_label

__all__ = [
    "Cell",
    "CheckView",
    "Forge",
    "Grid",
    "LiveView",
    "Promotion",
    "StepView",
    "Tone",
    "build_cell",
    "build_grid",
    "build_live",
    "charted",
    "ledger_by_release",
    "promotion_chains",
]


class Tone(StrEnum):
    """How a state reads at a glance; the CSS class of its badge (each tone also has its own glyph)."""

    GOOD = "good"
    BUSY = "busy"
    WARN = "warn"
    BAD = "bad"
    IDLE = "idle"


_HEALTH_TONE = {
    HealthStatus.HEALTHY: Tone.GOOD,
    HealthStatus.PROGRESSING: Tone.BUSY,
    HealthStatus.SUSPENDED: Tone.WARN,
    HealthStatus.MISSING: Tone.WARN,
    HealthStatus.DEGRADED: Tone.BAD,
    HealthStatus.UNKNOWN: Tone.IDLE,
}
_RESULT_TONE = {
    Result.SUCCEEDED: Tone.GOOD,
    Result.PROGRESSING: Tone.BUSY,
    Result.PAUSED: Tone.WARN,
    Result.RETRYING: Tone.WARN,
    Result.AWAITING_PROMOTION: Tone.IDLE,
    Result.SUPERSEDED: Tone.IDLE,
    Result.REMOVED: Tone.IDLE,
    Result.ORPHANED: Tone.WARN,
}
_RANK = (Tone.IDLE, Tone.GOOD, Tone.BUSY, Tone.WARN, Tone.BAD)


def health_tone(health: str) -> Tone:
    try:
        return _HEALTH_TONE[HealthStatus(health)]
    except ValueError:
        return Tone.IDLE


def result_tone(result: str) -> Tone:
    """A result not listed (Failed, RolledBack, RenderError, Refused, Blocked) is bad."""
    if not result:
        return Tone.IDLE
    try:
        return _RESULT_TONE.get(Result(result), Tone.BAD)
    except ValueError:
        return Tone.BAD


def sync_tone(sync: str) -> Tone:
    return {SyncState.SYNCED.value: Tone.GOOD, SyncState.OUT_OF_SYNC.value: Tone.WARN}.get(sync, Tone.IDLE)


def worst(*tones: Tone) -> Tone:
    return max(tones, key=_RANK.index)


_FORGE_URL = re.compile(r"(?:https?://(?:[^@/]+@)?|ssh://(?:[^@/]+@)?|[\w.-]+@)([\w.-]+(?::\d+)?)[:/](.+?)(?:\.git)?/?")


@dataclass(frozen=True, slots=True)
class Forge:
    """Where commits and pull requests of the followed repository are seen on the web; links are left out when
    the repository URL names no web forge (a file path, an unknown scheme)."""

    base: str
    gitlab: bool = False

    @classmethod
    def of(cls, url: str) -> Forge | None:
        """``https://host/org/repo(.git)`` or ``git@host:org/repo(.git)``; credentials in the URL are dropped."""
        found = re.fullmatch(
            r"(?:https?://(?:[^@/]+@)?|ssh://(?:[^@/]+@)?|[\w.-]+@)([\w.-]+(?::\d+)?)[:/](.+?)(?:\.git)?/?", url
        )
        if found is None:
            return None
        host, path = found.groups()
        if url.startswith(("ssh://", "git@")) or "@" in url.partition("://")[0]:
            host = host.partition(":")[0]
        return cls(f"https://{host}/{path}", gitlab="gitlab" in host)

    def commit(self, sha: str) -> str:
        return f"{self.base}/-/commit/{sha}" if self.gitlab else f"{self.base}/commit/{sha}"

    def pull(self, number: int) -> str:
        return f"{self.base}/-/merge_requests/{number}" if self.gitlab else f"{self.base}/pull/{number}"


@dataclass(frozen=True, slots=True)
class Cell:
    """One app in one environment, as the grid shows it."""

    key: AppEnv
    namespace: str
    cluster: str
    """The named cluster the environment is applied to (``cluster:`` in env.yaml); "" for the agent's own."""
    sync: str
    health: str
    reason: str
    """The worst object's reason (``Deployment/shop/web: 1/2 Ready``), empty when healthy."""
    result: str
    revision: str
    subject: str
    author: str
    pull_request: int | None
    awaiting: str
    """What awaits promotion into this environment, or what the promote stage last did (one line)."""
    rollout: str
    """``canary Progressing, step 2/4, 50%`` (``state.step_label``); empty without a progressive rollout in flight."""
    error: str
    tone: Tone

    @property
    def short(self) -> str:
        return self.revision[:7]


def build_cell(status: Status, namespace: str, releases: Sequence[Release], rollout: Mapping[str, Any]) -> Cell:
    """``releases`` newest first; the one shown is the release of the running revision, else the newest."""
    release = next((r for r in releases if r.revision == status.release_revision), releases[0] if releases else None)
    phase = str(rollout.get("phase", ""))
    in_flight = phase in ("Progressing", "Paused", "Promoting")
    line = ""
    if in_flight:
        strategy = rollout.get("strategy") or "rollout"
        step = step_label(phase, int(rollout.get("step", 0)), int(rollout.get("steps", 0)))
        line = f"{strategy} {phase}, {step}, {rollout.get('weight', 0)}%"
    elif phase == "Aborted":
        line = f"rolled back: {rollout.get('abortReason', '')}".rstrip(": ")
    awaiting = status.promotion
    if status.result == Result.AWAITING_PROMOTION:
        awaiting = awaiting or "awaits its first promotion"
    tones = (health_tone(status.health), result_tone(status.result), sync_tone(status.sync_state))
    tone = worst(*tones) if status.result else Tone.IDLE
    return Cell(
        key=AppEnv(status.app, status.env),
        namespace=namespace,
        cluster=status.cluster,
        sync=status.sync_state,
        health=status.health,
        reason=status.health_reason,
        result=status.result or "no record",
        revision=status.release_revision or status.last_applied_revision or (release.revision if release else ""),
        subject=release.message if release else "",
        author=release.author.partition(" <")[0] if release else "",
        pull_request=pull_request(release.message) if release else None,
        awaiting=awaiting,
        rollout=line,
        error=status.last_error,
        tone=Tone.BUSY if in_flight and tone is not Tone.BAD else tone,
    )


@dataclass(frozen=True, slots=True)
class Grid:
    envs: tuple[str, ...]
    apps: tuple[str, ...]
    cells: Mapping[AppEnv, Cell]

    def cell(self, app: str, env: str) -> Cell | None:
        return self.cells.get(AppEnv(app, env))

    def counts(self) -> dict[Tone, int]:
        out = dict.fromkeys(Tone, 0)
        for cell in self.cells.values():
            out[cell.tone] += 1
        return out


def build_grid(cells: Sequence[Cell], env_order: Sequence[str] = ()) -> Grid:
    """Environments in ``env_order`` first (upstream before downstream), then by name; apps by name."""
    envs = {c.key.env for c in cells}
    ordered = tuple(e for e in env_order if e in envs) + tuple(sorted(envs - set(env_order)))
    return Grid(ordered, tuple(sorted({c.key.app for c in cells})), {c.key: c for c in cells})


class StepState(StrEnum):
    DONE = "done"
    CURRENT = "current"
    STOPPED = "stopped"
    """Where an aborted rollout stopped."""
    TODO = "todo"


@dataclass(frozen=True, slots=True)
class StepView:
    number: int
    label: str
    state: StepState


@dataclass(frozen=True, slots=True)
class CheckView:
    name: str
    group: str
    verdict: str
    value: float | None
    shown: str
    """The last value in words: a number, ``2 of 3 pods ready`` (pod health), or ``-`` when none was seen."""
    condition: str
    threshold: float | None
    series: tuple[float, ...]
    message: str

    @property
    def tone(self) -> Tone:
        return {"Successful": Tone.GOOD, "Running": Tone.BUSY, "Inconclusive": Tone.WARN}.get(self.verdict, Tone.BAD)


@dataclass(frozen=True, slots=True)
class LiveView:
    """A rollout as it runs: what the app-env page shows and each server-sent event re-renders."""

    key: AppEnv
    strategy: str
    phase: str
    step: str
    """``step 2/6`` (``state.step_label``); empty when no rollout runs."""
    weight: int
    message: str
    steps: tuple[StepView, ...]
    canary_replicas: int | None
    stable_replicas: int | None
    active_color: str
    checks: tuple[CheckView, ...]
    abort_reason: str
    evidence: tuple[str, ...]
    commands: tuple[str, ...]
    pending: str

    @property
    def tone(self) -> Tone:
        return {
            "Healthy": Tone.GOOD,
            "Progressing": Tone.BUSY,
            "Promoting": Tone.BUSY,
            "Paused": Tone.WARN,
            "Aborted": Tone.BAD,
        }.get(self.phase, Tone.IDLE)


_NUMBER = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def threshold_of(condition: str) -> float | None:
    """The number a condition compares with (``result[0] < 0.05`` -> 0.05), drawn as the chart's line."""
    found = _NUMBER.findall(re.sub(r"\[\s*\d+\s*\]", "", condition))
    return float(found[-1]) if found else None


def charted(value: Any) -> float | None:
    """The number a check's chart draws: the value itself, or the ready pods of a pod-health measurement."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping) and isinstance(value.get("ready"), int):
        return float(value["ready"])
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    if isinstance(value, Mapping) and {"ready", "total"} <= set(value):
        return f"{value['ready']} of {value['total']} pods ready"
    return str(value)


def _conditions(policy: RolloutPolicy | None) -> dict[str, str]:
    if policy is None:
        return {}
    out = {}
    analyses = [*(step.analysis for step in policy.canary.steps), policy.canary.background]
    if policy.blue_green is not None:  # both blocks of a chart: ``analyses()`` gives only the chosen strategy's
        analyses += [policy.blue_green.pre_promotion, policy.blue_green.post_promotion]
    for analysis in analyses:
        for check in analysis.checks:
            condition = check.failure_condition or check.success_condition
            if condition is not None:
                prefix = "fails when " if check.failure_condition is not None else "passes when "
                out[check.name] = prefix + condition.text
            elif check.max_restarts is not None or check.type.value == "podHealth":
                restarts = check.max_restarts if check.max_restarts is not None else policy.pod_health.max_restarts
                out[check.name] = f"pods ready, restarts <= {restarts}"
    return out


def _steps(policy: RolloutPolicy | None, step: int, phase: str) -> tuple[StepView, ...]:
    if policy is None or policy.strategy is not Strategy.CANARY:
        return ()
    finished = phase in ("Healthy", "Promoting")
    here = StepState.STOPPED if phase == "Aborted" else StepState.CURRENT
    steps: Sequence[Step] = policy.canary.steps
    return tuple(
        StepView(
            index + 1,
            s.describe(),
            StepState.DONE if finished or index < step else here if index == step else StepState.TODO,
        )
        for index, s in enumerate(steps)
    )


def commands(key: AppEnv, phase: str, repo: str) -> tuple[str, ...]:
    """The human controls for ``phase``, as the command lines to run (the dashboard changes nothing)."""
    base = f"--repo {repo} --env {key.env} --app {key.app}"
    if phase in ("Progressing", "Paused", "Promoting"):
        return (
            f"gitsync rollout promote {base}",
            f"gitsync rollout promote --full {base}",
            f"gitsync rollout abort {base}",
        )
    if phase == "Aborted":
        return (f"gitsync rollout retry {base}",)
    return ()


def build_live(
    key: AppEnv,
    rollout: Mapping[str, Any],
    policy: RolloutPolicy | None,
    replicas: Mapping[str, int],
    series: Mapping[str, Sequence[float]],
    repo: str,
) -> LiveView:
    """``rollout`` is ``control.describe_rollout``; ``replicas`` the ready replicas per track (``stable``,
    ``canary``, ``blue``, ``green``); ``series`` the values seen per check while the dashboard watched."""
    phase = str(rollout.get("phase", "Idle"))
    step = int(rollout.get("step", 0))
    conditions = _conditions(policy)
    checks = []
    for check in rollout.get("analysis", []):
        value = check.get("value")
        number = charted(value)
        condition = conditions.get(str(check["check"]), "")
        checks.append(
            CheckView(
                name=str(check["check"]),
                group=str(check["group"]),
                verdict=str(check["verdict"]),
                value=number,
                shown=_shown(value),
                condition=condition,
                threshold=threshold_of(condition) if condition and "restarts" not in condition else None,
                series=tuple(series.get(str(check["check"]), ())),
                message=str(check.get("message") or ""),
            )
        )
    strategy = str(rollout.get("strategy") or (policy.strategy.value if policy else ""))
    color = str(rollout.get("activeColor", ""))
    return LiveView(
        key=key,
        strategy=strategy,
        phase=phase,
        step=step_label(phase, step, int(rollout.get("steps", 0))),
        weight=int(rollout.get("weight", 0)),
        message=str(rollout.get("message", "")),
        steps=_steps(policy, step, phase),
        canary_replicas=None if color else replicas.get("canary"),
        stable_replicas=None if color else replicas.get("stable"),
        active_color=color,
        checks=tuple(checks),
        abort_reason=str(rollout.get("abortReason", "")),
        evidence=tuple(str(e) for e in rollout.get("evidence", [])),
        commands=commands(key, phase, repo),
        pending=str((rollout.get("pendingCommand") or {}).get("name", "")),
    )


@dataclass(frozen=True, slots=True)
class Promotion:
    """One version's way through the environments: per environment, how its release there ended."""

    app: str
    version: str
    """The chart tree and promoted values of the release (what a pin names), shortened."""
    subject: str
    stages: tuple[tuple[str, AuditRow | None], ...]

    @property
    def reached(self) -> int:
        return sum(1 for _, row in self.stages if row is not None)


def ledger_by_release(rows: Sequence[AuditRow]) -> dict[str, AuditRow]:
    """An app-env's ledger rows (newest first) by the revision its history entries name: the newest row of each
    noted commit, and a ``Removed`` row at the commit that removed the app (the history's ``Removed`` entry is
    that commit's), so the release it ended keeps its own line's evidence."""
    found: dict[str, AuditRow] = {}
    for row in rows:
        removed = row.entry.outcome is ReleaseOutcome.REMOVED
        found.setdefault(row.entry.removal_commit if removed else row.commit, row)
    return found


def promotion_chains(rows: Sequence[AuditRow], env_order: Sequence[str]) -> tuple[Promotion, ...]:
    """Group the ledger by app and version (chart and ``lib/`` trees and values hash: a promoted release in prod
    carries the same content as the staging release it came from), newest first; the last row per environment
    wins. A ``Removed`` row is no version (it has no content): it takes no part."""
    groups: dict[tuple[str, str, str, str], dict[str, AuditRow]] = {}
    subjects: dict[tuple[str, str, str, str], str] = {}
    order: list[tuple[str, str, str, str]] = []
    for row in rows:  # newest first
        if row.entry.outcome is ReleaseOutcome.REMOVED:
            continue
        version = (row.entry.app, row.entry.chart_tree, row.entry.values_hash, row.entry.lib_tree)
        if version not in groups:
            groups[version] = {}
            order.append(version)
        groups[version].setdefault(row.entry.env, row)
        if row.promoted_from == "" and row.subject:
            subjects.setdefault(version, row.subject)
    envs = list(env_order) + sorted({r.entry.env for r in rows} - set(env_order))
    return tuple(
        Promotion(
            app=v[0],
            version=(v[1][:7] + "+" + v[2].removeprefix("sha256:")[:7]).strip("+"),
            subject=subjects.get(v, next((r.subject for r in groups[v].values() if r.subject), "")),
            stages=tuple((env, groups[v].get(env)) for env in envs),
        )
        for v in order
    )
