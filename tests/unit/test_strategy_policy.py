"""Parsing values["rollout"]: defaults, the schema, and errors that name the file and field."""

from __future__ import annotations

import pytest

from gitsync.model import parse_duration
from gitsync.strategy.policy import PolicyError, StepKind, Strategy, locate, parse_policy
from gitsync.strategy.replicas import split


def test_absent_rollout_is_rolling() -> None:
    assert parse_policy({}).strategy is Strategy.ROLLING


def test_full_canary_policy() -> None:
    policy = parse_policy(
        {
            "rollout": {
                "strategy": "canary",
                "podHealth": {"maxRestarts": 1, "progressDeadlineSeconds": "30s"},
                "analysis": {
                    "prometheus": {"address": "http://127.0.0.1:9090"},
                    "checks": [
                        {
                            "name": "errors",
                            "type": "prometheus",
                            "query": "q",
                            "interval": "2s",
                            "count": 3,
                            "successCondition": "result[0] < 0.05",
                        }
                    ],
                },
                "canary": {
                    "steps": [
                        {"setWeight": 25},
                        {"pause": {"duration": "1m"}},
                        {"pause": {}},
                        {"analysis": {"checks": ["errors", {"name": "up", "type": "http", "url": "http://x"}]}},
                    ],
                    "analysis": {"checks": ["errors"]},
                },
            }
        },
        "apps/web/values.yaml",
    )
    steps = policy.canary.steps
    assert [s.kind for s in steps] == [StepKind.SET_WEIGHT, StepKind.PAUSE, StepKind.PAUSE, StepKind.ANALYSIS]
    assert (steps[0].weight, steps[1].duration, steps[2].duration) == (25, 60.0, None)
    assert [c.name for c in steps[3].analysis.checks] == ["errors", "up"]
    assert steps[3].analysis.checks[0].address == "http://127.0.0.1:9090"
    assert policy.canary.background.checks[0].interval == 2.0
    assert policy.pod_health.progress_deadline == 30.0


ERRORS = [
    ({"strategy": "linear"}, "rollout.strategy: unknown strategy 'linear'"),
    ({"strategy": "canary", "canary": {"steps": [{"setWeight": 120}]}}, "rollout.canary.steps[0].setWeight"),
    (
        {"strategy": "canary", "canary": {"steps": [{"pause": {"duration": "soon"}}]}},
        "rollout.canary.steps[0].pause.duration: not a duration: 'soon'",
    ),
    (
        {"strategy": "canary", "canary": {"steps": [{"analysis": {"checks": ["nope"]}}]}},
        "rollout.canary.steps[0].analysis.checks[0]: no check named 'nope'",
    ),
    ({"strategy": "canary", "canary": {"steps": [{"setWeight": 5, "pause": {}}]}}, "rollout.canary.steps[0]: a step"),
    (
        {"analysis": {"checks": [{"name": "x", "type": "prometheus", "query": "q", "successCondition": "result < 1"}]}},
        "rollout.analysis.checks[0].address",
    ),
    (
        {
            "analysis": {
                "prometheus": {"address": "http://p"},
                "checks": [{"name": "x", "type": "prometheus", "query": "q", "successCondition": "result <"}],
            }
        },
        "rollout.analysis.checks[0].successCondition: condition",
    ),
    ({"strategy": "blueGreen", "blueGreen": {"autoPromotion": "yes"}}, "rollout.blueGreen.autoPromotion: expected"),
    ({"strategy": "canary", "canary": {"stepz": []}}, "rollout.canary.stepz: unknown field"),
]


@pytest.mark.parametrize(("rollout", "message"), ERRORS)
def test_errors_name_file_and_field(rollout: dict, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy({"rollout": rollout}, "apps/web/values.yaml")
    assert str(e.value).startswith("apps/web/values.yaml: ")
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5m", 90.0), ("1h", 3600.0), (3, 3.0), ("7", 7.0)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


SPLITS = [
    # total, weight -> canary, stable, realised, warns
    (4, 25, 1, 3, 25, False),
    (10, 10, 1, 9, 10, False),
    (2, 10, 1, 1, 50, True),
    (1, 25, 1, 1, 50, True),
    (4, 100, 4, 0, 100, False),
    (4, 0, 0, 4, 0, False),
    (3, 50, 2, 1, 67, True),
]


@pytest.mark.parametrize(("total", "weight", "canary", "stable", "realised", "warns"), SPLITS)
def test_weight_to_replicas(total: int, weight: int, canary: int, stable: int, realised: int, warns: bool) -> None:
    s = split(total, weight)
    assert (s.canary, s.stable, s.realised, bool(s.warning)) == (canary, stable, realised, warns)


CHART = """\
replicas: 1
rollout:
  strategy: canary
  canary:
    steps:
      - setWeight: 25
      - pause: {duration: 10s}
"""

LOCATE = [
    # env overrides, whether the field came from the chart or from the environment, and which line
    pytest.param("", {"rollout": {"strategy": "canari"}}, "apps/web/values.yaml:3: rollout.strategy", id="chart"),
    pytest.param(
        "rollout:\n  strategy: canari\n",
        {"rollout": {"strategy": "canari"}},
        "environments/dev/values/web.yaml:2: rollout.strategy",
        id="env-wins",
    ),
    pytest.param(
        "rollout:\n  canary:\n    steps:\n      - setWeight: 10\n      - pause: {duration: soon}\n",
        {"rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "soon"}}]}}},
        "environments/dev/values/web.yaml:5: rollout.canary.steps[1].pause.duration",
        id="env-list-replaces",
    ),
    pytest.param(
        "rollout:\n  canary:\n    steps:\n      - setWeight: 10\n      - pause: {}\n",
        {"rollout": {"strategy": "canari"}},
        "apps/web/values.yaml:3: rollout.strategy",
        id="chart-field-under-env-map",
    ),
]


@pytest.mark.parametrize(("env_values", "merged", "where"), LOCATE)
def test_errors_point_at_the_values_file_and_line(env_values: str, merged: dict, where: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(merged, "web@dev: values")
    layers = [("apps/web/values.yaml", CHART), ("environments/dev/values/web.yaml", env_values)]
    assert locate(e.value, layers).startswith(f"{where}: ")


def test_an_error_no_file_holds_keeps_its_message() -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy({"rollout": {"strategy": "x"}}, "web@dev: values")
    assert locate(e.value, [("apps/web/values.yaml", "replicas: 1\n")]) == str(e.value)
