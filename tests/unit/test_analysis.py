"""Analysis units: the condition language, judging results (no data is never success), run accounting, pods."""

from __future__ import annotations

import pytest

from gitsync.analysis.condition import ConditionError, parse
from gitsync.analysis.judge import extract_json, judge, judge_http
from gitsync.analysis.pod_health import inspect_pods
from gitsync.analysis.run import CheckOutcome, CheckRun, CheckVerdict, Measurement, aggregate, record, start
from gitsync.analysis.spec import CheckSpec, CheckType, PodHealthPolicy

CONDITIONS = [
    ("result[0] < 0.05", [0.01], True),
    ("result[0] < 0.05", [0.2], False),
    ("result < 1", [0.5], True),
    ("result >= 0.95 and result[1] < 3", [0.99, 2], True),
    ("result >= 0.95 and result[1] < 3", [0.99, 4], False),
    ("result[0] > 10 or result[1] > 10", [1, 11], True),
    ("len(result) >= 2", [1, 2], True),
    ("result == 'ok'", "ok", True),
    ('result != "ok"', "ok", False),
    ("result == true", True, True),
    ("result[0] <= -1.5e-1", [-0.2], True),
]


@pytest.mark.parametrize(("text", "result", "expected"), CONDITIONS)
def test_conditions_evaluate(text: str, result: object, expected: bool) -> None:
    assert parse(text).evaluate(result) is expected


@pytest.mark.parametrize(
    "text",
    ["", "result <", "result[0] < 0.05 and", "__import__('os') == 1", "result[0] << 1", "result[0] < 1 xor 2 > 1"],
)
def test_bad_conditions_are_rejected_with_the_text(text: str) -> None:
    with pytest.raises(ConditionError) as e:
        parse(text)
    assert "condition" in str(e.value)


def prom(success: str | None = None, failure: str | None = None) -> CheckSpec:
    return CheckSpec(
        "errors",
        CheckType.PROMETHEUS,
        query="q",
        address="http://p",
        success_condition=parse(success) if success else None,
        failure_condition=parse(failure) if failure else None,
    )


JUDGE = [
    ("success holds", prom("result[0] < 0.05"), [0.01], CheckOutcome.SUCCESS),
    ("success fails", prom("result[0] < 0.05"), [0.5], CheckOutcome.FAILURE),
    ("no data is inconclusive", prom("result[0] < 0.05"), [], CheckOutcome.INCONCLUSIVE),
    (
        "no data under a failure-only check is still inconclusive",
        prom(failure="result[0] > 0.5"),
        [],
        CheckOutcome.INCONCLUSIVE,
    ),
    ("NaN is inconclusive", prom("result[0] < 0.05"), [float("nan")], CheckOutcome.INCONCLUSIVE),
    ("index out of range is inconclusive", prom("result[1] < 0.05"), [0.01], CheckOutcome.INCONCLUSIVE),
    ("failure condition wins", prom("result[0] < 1", "result[0] > 0.5"), [0.7], CheckOutcome.FAILURE),
    (
        "between both bands is inconclusive",
        prom("result[0] < 0.1", "result[0] > 0.5"),
        [0.3],
        CheckOutcome.INCONCLUSIVE,
    ),
    ("failure-only, not holding, succeeds", prom(failure="result[0] > 0.5"), [0.1], CheckOutcome.SUCCESS),
]


@pytest.mark.parametrize(("spec", "result", "outcome"), [r[1:] for r in JUDGE], ids=[r[0] for r in JUDGE])
def test_judge(spec: CheckSpec, result: object, outcome: CheckOutcome) -> None:
    assert judge(spec, result, 1.0).outcome is outcome


def http(**kw: object) -> CheckSpec:
    return CheckSpec("smoke", CheckType.HTTP, url="http://x", **kw)  # type: ignore[arg-type]


HTTP = [
    ("2xx by default", http(), 204, b"", CheckOutcome.SUCCESS),
    ("5xx fails", http(), 503, b"down", CheckOutcome.FAILURE),
    ("expected status list", http(expected_status=(200,)), 201, b"", CheckOutcome.FAILURE),
    (
        "json field condition",
        http(json_path="$.status", success_condition=parse("result == 'ok'")),
        200,
        b'{"status": "ok"}',
        CheckOutcome.SUCCESS,
    ),
    (
        "json field fails",
        http(json_path="data.rate", success_condition=parse("result < 0.1")),
        200,
        b'{"data": {"rate": 0.4}}',
        CheckOutcome.FAILURE,
    ),
    (
        "missing json field is inconclusive",
        http(json_path="data.rate", success_condition=parse("result < 0.1")),
        200,
        b'{"data": {}}',
        CheckOutcome.INCONCLUSIVE,
    ),
    ("non-json body is inconclusive", http(json_path="a"), 200, b"<html>", CheckOutcome.INCONCLUSIVE),
]


@pytest.mark.parametrize(("spec", "status", "body", "outcome"), [r[1:] for r in HTTP], ids=[r[0] for r in HTTP])
def test_judge_http(spec: CheckSpec, status: int, body: bytes, outcome: CheckOutcome) -> None:
    assert judge_http(spec, status, body, 1.0).outcome is outcome


def test_extract_json_paths() -> None:
    doc = {"items": [{"ready": True}], "a": {"b": 3}}
    assert extract_json(doc, "$.items[0].ready") is True
    assert extract_json(doc, "a.b") == 3
    with pytest.raises(KeyError):
        extract_json(doc, "items[3]")


def run_with(spec: CheckSpec, *outcomes: CheckOutcome) -> CheckRun:
    run = start(spec, 0.0)
    for i, outcome in enumerate(outcomes):
        run = record(run, spec, Measurement(spec.name, outcome, float(i)))
    return run


RUNS = [
    ("count successes -> successful", CheckSpec("c", CheckType.HTTP, count=2), ("success", "success"), "Successful"),
    ("one success of two -> running", CheckSpec("c", CheckType.HTTP, count=2), ("success",), "Running"),
    ("failure over limit -> failed", CheckSpec("c", CheckType.HTTP, count=3), ("success", "failure"), "Failed"),
    (
        "failure within limit",
        CheckSpec("c", CheckType.HTTP, count=3, failure_limit=1),
        ("failure", "success"),
        "Running",
    ),
    ("inconclusive -> inconclusive", CheckSpec("c", CheckType.HTTP, count=3), ("inconclusive",), "Inconclusive"),
    ("pending is not counted", CheckSpec("c", CheckType.HTTP, count=1), ("pending", "pending"), "Running"),
    ("errors tolerated up to the limit", CheckSpec("c", CheckType.HTTP, count=1), ("error",) * 4, "Running"),
    ("too many errors -> inconclusive", CheckSpec("c", CheckType.HTTP, count=1), ("error",) * 5, "Inconclusive"),
    ("count 0 never ends by itself", CheckSpec("c", CheckType.HTTP, count=0), ("success",) * 5, "Running"),
]


@pytest.mark.parametrize(("spec", "outcomes", "verdict"), [r[1:] for r in RUNS], ids=[r[0] for r in RUNS])
def test_run_accounting(spec: CheckSpec, outcomes: tuple[str, ...], verdict: str) -> None:
    assert run_with(spec, *(CheckOutcome(o) for o in outcomes)).verdict.value == verdict


def test_run_waits_interval_between_measurements() -> None:
    spec = CheckSpec("c", CheckType.HTTP, count=3, interval=2.0, initial_delay=1.0)
    run = start(spec, 10.0)
    assert not run.due(10.5) and run.due(11.0)
    run = record(run, spec, Measurement("c", CheckOutcome.SUCCESS, 11.0))
    assert not run.due(12.9) and run.due(13.0)


def test_aggregate_worst_wins() -> None:
    ok = CheckRun("a", 0, verdict=CheckVerdict.SUCCESSFUL)
    maybe = CheckRun("b", 0, verdict=CheckVerdict.INCONCLUSIVE)
    bad = CheckRun("c", 0, verdict=CheckVerdict.FAILED)
    assert aggregate([]).verdict is CheckVerdict.SUCCESSFUL
    assert aggregate([ok, maybe]).deciding == maybe
    assert aggregate([ok, bad, maybe]).deciding == bad


def pod(name: str, ready: bool, *, waiting: str = "", restarts: int = 0, created: str = "1970-01-01T00:16:40Z") -> dict:
    container = {"name": "app", "restartCount": restarts, "state": {"waiting": {"reason": waiting}} if waiting else {}}
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "status": {"conditions": [{"type": "Ready", "status": str(ready)}], "containerStatuses": [container]},
    }


def test_pod_health_fails_fast_on_crashloop_and_restarts() -> None:
    policy = PodHealthPolicy(max_restarts=2, progress_deadline=60)
    report = inspect_pods([pod("a", True), pod("b", False, waiting="CrashLoopBackOff", restarts=1)], policy, 1001.0)
    assert (
        report.outcome is CheckOutcome.FAILURE
        and "Pod/ns/b" in report.failing[0]
        and "CrashLoopBackOff" in report.failing[0]
    )
    assert inspect_pods([pod("a", True, restarts=3)], policy, 1001.0).outcome is CheckOutcome.FAILURE


def test_pod_health_pending_until_ready_then_deadline() -> None:
    policy = PodHealthPolicy(max_restarts=2, progress_deadline=60)
    assert inspect_pods([pod("a", False)], policy, 1010.0).outcome is CheckOutcome.PENDING  # created at 1000
    assert inspect_pods([pod("a", True)], policy, 1010.0).outcome is CheckOutcome.SUCCESS
    late = inspect_pods([pod("a", False)], policy, 1100.0)
    assert late.outcome is CheckOutcome.FAILURE and "deadline" in late.failing[0]
