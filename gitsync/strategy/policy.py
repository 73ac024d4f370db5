"""The rollout policy: what ``values["rollout"]`` of an app asks for, parsed once into frozen values.

Contract: pure, no I/O. Every error is a ``PolicyError`` (terminal: the same values can never work) whose message
starts with the values source and the field path, e.g.
``podinfo@staging: values: rollout.canary.steps[1].pause.duration: not a duration: 'soon'``; ``locate`` turns it
into ``apps/podinfo/values.yaml:55: rollout.canary...`` given the text of the values files.
The schema is documented in docs/progressive-delivery.md; defaults are chosen so that a rollout never passes
on missing evidence (no data is inconclusive) and never waits on a deadline for what pods already show.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import yaml

from gitsync.analysis.condition import Condition, ConditionError, parse
from gitsync.analysis.spec import AnalysisSpec, CheckSpec, CheckType, PodHealthPolicy
from gitsync.errors import TerminalError
from gitsync.model import parse_duration

__all__ = [
    "AnalysisSpec",
    "BlueGreenPolicy",
    "CanaryPolicy",
    "CheckSpec",
    "CheckType",
    "PodHealthPolicy",
    "PolicyError",
    "RolloutPolicy",
    "Step",
    "StepKind",
    "Strategy",
    "locate",
    "parse_policy",
]


class PolicyError(TerminalError):
    """``values["rollout"]`` is invalid; fixed only by a new revision.

    ``field`` (``rollout.canary.steps[1].pause.duration``) and ``problem`` are kept apart from the message so a
    caller that can read the values files points at the line with ``locate``."""

    def __init__(self, message: str, *, field: str = "", problem: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem


class Strategy(StrEnum):
    ROLLING = "rolling"
    CANARY = "canary"
    BLUE_GREEN = "blueGreen"


class StepKind(StrEnum):
    SET_WEIGHT = "setWeight"
    PAUSE = "pause"
    ANALYSIS = "analysis"


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    weight: int = 0
    duration: float | None = None
    """Pause length in seconds; None on a pause step means "until ``gitsync rollout promote``"."""
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)

    def describe(self) -> str:
        if self.kind is StepKind.SET_WEIGHT:
            return f"setWeight {self.weight}"
        if self.kind is StepKind.PAUSE:
            return "pause (until promoted)" if self.duration is None else f"pause {self.duration:g}s"
        return "analysis " + ",".join(check.name for check in self.analysis.checks)


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    steps: tuple[Step, ...] = (Step(StepKind.SET_WEIGHT, weight=100),)
    background: AnalysisSpec = field(default_factory=AnalysisSpec)


@dataclass(frozen=True, slots=True)
class BlueGreenPolicy:
    active_service: str = ""
    """Empty: the Service named like the workload's Deployment."""
    preview_service: str = ""
    auto_promotion: bool = True
    auto_promotion_seconds: float = 0.0
    scale_down_delay: float = 30.0
    pre_promotion: AnalysisSpec = field(default_factory=AnalysisSpec)
    post_promotion: AnalysisSpec = field(default_factory=AnalysisSpec)


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    strategy: Strategy = Strategy.ROLLING
    workload: str = ""
    """Name of the Deployment the strategy drives; empty: the one Deployment of the render."""
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    blue_green: BlueGreenPolicy | None = None
    pod_health: PodHealthPolicy = field(default_factory=PodHealthPolicy)

    @property
    def progressive(self) -> bool:
        return self.strategy is not Strategy.ROLLING

    def analyses(self) -> tuple[AnalysisSpec, ...]:
        """Every analysis the rollout may run (the canary's steps and background, or blue-green's two): those of
        ``strategy``, as a chart may carry both blocks and each environment pick one."""
        if self.strategy is Strategy.BLUE_GREEN and self.blue_green is not None:
            return (self.blue_green.pre_promotion, self.blue_green.post_promotion)
        return (*(step.analysis for step in self.canary.steps), self.canary.background)


class _Reader:
    """Walks the raw values, keeping the field path so every error names the exact field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> PolicyError:
        return PolicyError(f"{self.source}: {path}: {message}", field=path, problem=message)

    def mapping(self, raw: Any, path: str) -> Mapping[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise self.fail(path, f"expected a mapping, got {type(raw).__name__}")
        return raw

    def known(self, raw: Mapping[str, Any], path: str, allowed: set[str]) -> None:
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise self.fail(f"{path}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def duration(self, raw: Any, path: str, default: float) -> float:
        if raw is None:
            return default
        try:
            return parse_duration(raw)
        except ValueError as e:
            raise self.fail(path, str(e)) from None

    def integer(self, raw: Any, path: str, default: int, minimum: int = 0) -> int:
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
            raise self.fail(path, f"expected an integer >= {minimum}, got {raw!r}")
        return raw

    def string(self, raw: Any, path: str, default: str = "") -> str:
        if raw is None:
            return default
        if not isinstance(raw, str):
            raise self.fail(path, f"expected a string, got {raw!r}")
        return raw

    def condition(self, raw: Any, path: str) -> Condition | None:
        if raw is None:
            return None
        try:
            return parse(self.string(raw, path))
        except ConditionError as e:
            raise self.fail(path, str(e)) from None


_CHECK_FIELDS = {
    "name",
    "type",
    "interval",
    "count",
    "failureLimit",
    "inconclusiveLimit",
    "initialDelay",
    "query",
    "address",
    "url",
    "jsonPath",
    "expectedStatus",
    "timeout",
    "successCondition",
    "failureCondition",
    "maxRestarts",
    "progressDeadlineSeconds",
}


@dataclass(frozen=True, slots=True)
class _Defaults:
    """``rollout.analysis``-level defaults for every check (``interval``, ``count``, ``failureLimit``...)."""

    address: str = ""
    interval: float = 5.0
    count: int = 1
    failure_limit: int = 0
    inconclusive_limit: int = 0


def _check(r: _Reader, raw: Any, path: str, defaults: _Defaults) -> CheckSpec:
    spec = r.mapping(raw, path)
    r.known(spec, path, _CHECK_FIELDS)
    name = r.string(spec.get("name"), f"{path}.name", str(spec.get("type") or ""))
    if not name:
        raise r.fail(f"{path}.name", "a check needs a name (or at least a type)")
    try:
        kind = CheckType(spec.get("type", ""))
    except ValueError:
        allowed = ", ".join(t.value for t in CheckType)
        raise r.fail(f"{path}.type", f"unknown check type {spec.get('type')!r} (allowed: {allowed})") from None
    status_raw = spec.get("expectedStatus")
    statuses: tuple[int, ...] = ()
    if status_raw is not None:
        items = status_raw if isinstance(status_raw, list) else [status_raw]
        if not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in items):
            raise r.fail(f"{path}.expectedStatus", f"expected HTTP status codes, got {status_raw!r}")
        statuses = tuple(items)
    check = CheckSpec(
        name=name,
        type=kind,
        interval=r.duration(spec.get("interval"), f"{path}.interval", defaults.interval),
        count=r.integer(spec.get("count"), f"{path}.count", defaults.count),
        failure_limit=r.integer(spec.get("failureLimit"), f"{path}.failureLimit", defaults.failure_limit),
        inconclusive_limit=r.integer(
            spec.get("inconclusiveLimit"), f"{path}.inconclusiveLimit", defaults.inconclusive_limit
        ),
        initial_delay=r.duration(spec.get("initialDelay"), f"{path}.initialDelay", 0.0),
        query=r.string(spec.get("query"), f"{path}.query"),
        address=r.string(spec.get("address"), f"{path}.address", defaults.address),
        url=r.string(spec.get("url"), f"{path}.url"),
        json_path=r.string(spec.get("jsonPath"), f"{path}.jsonPath"),
        expected_status=statuses,
        timeout=r.duration(spec.get("timeout"), f"{path}.timeout", 5.0),
        success_condition=r.condition(spec.get("successCondition"), f"{path}.successCondition"),
        failure_condition=r.condition(spec.get("failureCondition"), f"{path}.failureCondition"),
        max_restarts=None
        if spec.get("maxRestarts") is None
        else r.integer(spec.get("maxRestarts"), f"{path}.maxRestarts", 0),
        progress_deadline=None
        if spec.get("progressDeadlineSeconds") is None
        else r.duration(spec.get("progressDeadlineSeconds"), f"{path}.progressDeadlineSeconds", 0.0),
        path=path,
    )
    if kind is CheckType.PROMETHEUS:
        if not check.query:
            raise r.fail(f"{path}.query", "a prometheus check needs a query")
        if not check.address:
            raise r.fail(f"{path}.address", "no Prometheus address (set rollout.analysis.prometheus.address)")
        if check.success_condition is None and check.failure_condition is None:
            raise r.fail(path, "a prometheus check needs successCondition and/or failureCondition")
    if kind is CheckType.HTTP and not check.url:
        raise r.fail(f"{path}.url", "an http check needs a url")
    return check


def _analysis(r: _Reader, raw: Any, path: str, catalog: Mapping[str, CheckSpec], defaults: _Defaults) -> AnalysisSpec:
    """``{checks: [name | inline check, ...]}``; a name refers to ``rollout.analysis.checks``."""
    spec = r.mapping(raw, path)
    r.known(spec, path, {"checks"})
    items = spec.get("checks") or []
    if not isinstance(items, list):
        raise r.fail(f"{path}.checks", "expected a list of check names or checks")
    checks: list[CheckSpec] = []
    for i, item in enumerate(items):
        item_path = f"{path}.checks[{i}]"
        if isinstance(item, str):
            if item not in catalog:
                known = ", ".join(sorted(catalog)) or "none defined"
                raise r.fail(item_path, f"no check named {item!r} in rollout.analysis.checks ({known})")
            checks.append(catalog[item])
        else:
            checks.append(_check(r, item, item_path, defaults))
    names = [c.name for c in checks]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise r.fail(f"{path}.checks", f"check {duplicate!r} listed twice")
    return AnalysisSpec(tuple(checks))


def _steps(r: _Reader, raw: Any, path: str, catalog: Mapping[str, CheckSpec], defaults: _Defaults) -> tuple[Step, ...]:
    if raw is None:
        return CanaryPolicy().steps
    if not isinstance(raw, list) or not raw:
        raise r.fail(path, "expected a non-empty list of steps")
    steps: list[Step] = []
    for i, item in enumerate(raw):
        step_path = f"{path}[{i}]"
        spec = r.mapping(item, step_path)
        if len(spec) != 1:
            raise r.fail(step_path, "a step has exactly one of setWeight, pause, analysis")
        ((key, value),) = spec.items()
        if key == "setWeight":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise r.fail(f"{step_path}.setWeight", f"expected a percentage 0..100, got {value!r}")
            steps.append(Step(StepKind.SET_WEIGHT, weight=value))
        elif key == "pause":
            pause = r.mapping(value, f"{step_path}.pause")
            r.known(pause, f"{step_path}.pause", {"duration"})
            duration = pause.get("duration")
            steps.append(
                Step(
                    StepKind.PAUSE,
                    duration=None if duration is None else r.duration(duration, f"{step_path}.pause.duration", 0),
                )
            )
        elif key == "analysis":
            analysis = _analysis(r, value, f"{step_path}.analysis", catalog, defaults)
            if not analysis.checks:
                raise r.fail(f"{step_path}.analysis.checks", "an analysis step needs at least one check")
            if any(check.count == 0 for check in analysis.checks):
                raise r.fail(f"{step_path}.analysis", "a check in an analysis step needs count >= 1 to end")
            steps.append(Step(StepKind.ANALYSIS, analysis=analysis))
        else:
            raise r.fail(f"{step_path}.{key}", "unknown step (allowed: setWeight, pause, analysis)")
    return tuple(steps)


def parse_policy(values: Mapping[str, Any], source: str = "values") -> RolloutPolicy:
    """The policy in ``values["rollout"]``; absent means a plain rolling update (sync applies the Deployment)."""
    r = _Reader(source)
    root = r.mapping(values.get("rollout"), "rollout")
    r.known(root, "rollout", {"strategy", "workload", "podHealth", "analysis", "canary", "blueGreen"})
    try:
        strategy = Strategy(root.get("strategy", Strategy.ROLLING.value))
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise r.fail("rollout.strategy", f"unknown strategy {root.get('strategy')!r} (allowed: {allowed})") from None

    analysis_root = r.mapping(root.get("analysis"), "rollout.analysis")
    r.known(
        analysis_root,
        "rollout.analysis",
        {"prometheus", "checks", "interval", "count", "failureLimit", "inconclusiveLimit"},
    )
    prometheus = r.mapping(analysis_root.get("prometheus"), "rollout.analysis.prometheus")
    r.known(prometheus, "rollout.analysis.prometheus", {"address"})
    defaults = _Defaults(
        address=r.string(prometheus.get("address"), "rollout.analysis.prometheus.address"),
        interval=r.duration(analysis_root.get("interval"), "rollout.analysis.interval", 5.0),
        count=r.integer(analysis_root.get("count"), "rollout.analysis.count", 1),
        failure_limit=r.integer(analysis_root.get("failureLimit"), "rollout.analysis.failureLimit", 0),
        inconclusive_limit=r.integer(analysis_root.get("inconclusiveLimit"), "rollout.analysis.inconclusiveLimit", 0),
    )
    catalog: dict[str, CheckSpec] = {}
    raw_checks = analysis_root.get("checks") or []
    if not isinstance(raw_checks, list):
        raise r.fail("rollout.analysis.checks", "expected a list of checks")
    for i, raw in enumerate(raw_checks):
        check = _check(r, raw, f"rollout.analysis.checks[{i}]", defaults)
        if check.name in catalog:
            raise r.fail(f"rollout.analysis.checks[{i}].name", f"check {check.name!r} defined twice")
        catalog[check.name] = check

    pod_raw = r.mapping(root.get("podHealth"), "rollout.podHealth")
    r.known(pod_raw, "rollout.podHealth", {"maxRestarts", "progressDeadlineSeconds"})
    pod_health = PodHealthPolicy(
        max_restarts=r.integer(pod_raw.get("maxRestarts"), "rollout.podHealth.maxRestarts", 2),
        progress_deadline=r.duration(
            pod_raw.get("progressDeadlineSeconds"), "rollout.podHealth.progressDeadlineSeconds", 120.0
        ),
    )

    canary = CanaryPolicy()
    if strategy is Strategy.CANARY or root.get("canary") is not None:
        spec = r.mapping(root.get("canary"), "rollout.canary")
        r.known(spec, "rollout.canary", {"steps", "analysis"})
        canary = CanaryPolicy(
            steps=_steps(r, spec.get("steps"), "rollout.canary.steps", catalog, defaults),
            background=_analysis(r, spec.get("analysis"), "rollout.canary.analysis", catalog, defaults),
        )

    blue_green = None
    if strategy is Strategy.BLUE_GREEN or root.get("blueGreen") is not None:
        path = "rollout.blueGreen"
        spec = r.mapping(root.get("blueGreen"), path)
        r.known(
            spec,
            path,
            {
                "activeService",
                "previewService",
                "autoPromotion",
                "autoPromotionSeconds",
                "scaleDownDelaySeconds",
                "prePromotionAnalysis",
                "postPromotionAnalysis",
            },
        )
        active = r.string(spec.get("activeService"), f"{path}.activeService")
        auto = spec.get("autoPromotion", True)
        if not isinstance(auto, bool):
            raise r.fail(f"{path}.autoPromotion", f"expected true or false, got {auto!r}")
        blue_green = BlueGreenPolicy(
            active_service=active,
            preview_service=r.string(spec.get("previewService"), f"{path}.previewService"),
            auto_promotion=auto,
            auto_promotion_seconds=r.duration(spec.get("autoPromotionSeconds"), f"{path}.autoPromotionSeconds", 0.0),
            scale_down_delay=r.duration(spec.get("scaleDownDelaySeconds"), f"{path}.scaleDownDelaySeconds", 30.0),
            pre_promotion=_analysis(
                r, spec.get("prePromotionAnalysis"), f"{path}.prePromotionAnalysis", catalog, defaults
            ),
            post_promotion=_analysis(
                r, spec.get("postPromotionAnalysis"), f"{path}.postPromotionAnalysis", catalog, defaults
            ),
        )
        for phase_name, analysis in (("pre", blue_green.pre_promotion), ("post", blue_green.post_promotion)):
            if any(check.count == 0 for check in analysis.checks):
                raise r.fail(f"{path}.{phase_name}PromotionAnalysis", "checks here need count >= 1 to end")

    return RolloutPolicy(
        strategy=strategy,
        workload=r.string(root.get("workload"), "rollout.workload"),
        canary=canary,
        blue_green=blue_green,
        pod_health=pod_health,
    )


_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def locate(error: PolicyError, layers: Sequence[tuple[str, str]]) -> str:
    """``error`` as ``path:line: field: problem``, pointing into the values file the field came from.

    ``layers`` are ``(path, YAML text)`` of the values files in merge order (chart, then environment). The field
    comes from the last layer that holds its whole path (lists replace, so a layer holding a list owns what is
    below it); for a field that is missing (a required one), the layer reaching deepest, later ones first. Falls
    back to the message itself when no layer holds even ``rollout``.
    """
    keys: list[str | int] = [m[1] if m[1] else int(m[2]) for m in _FIELD_PART.finditer(error.field)]
    best: tuple[int, str, int] | None = None
    for path, text in reversed(layers):
        depth, line = _deepest(text, keys)
        if depth and (best is None or depth > best[0]):
            best = (depth, path, line)
        if depth == len(keys):
            break
    if best is None or not error.field:
        return str(error)
    return f"{best[1]}:{best[2]}: {error.field}: {error.problem}"


def _deepest(text: str, keys: Sequence[str | int]) -> tuple[int, int]:
    """How many of ``keys`` the YAML ``text`` holds, and the 1-based line of the last one found."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 0, 0
    depth, line = 0, 0
    for key in keys:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next(((k, v) for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            item = node.value[key]
            child = (item, item)
        if child is None:
            break
        depth, line, node = depth + 1, child[0].start_mark.line + 1, child[1]
    return depth, line
