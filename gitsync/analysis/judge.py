"""Turning a raw result into a measurement outcome with the check's conditions.

Contract: pure, no I/O. The rules, in order:
1. no data (an empty Prometheus vector, a missing JSON field, a NaN, an index out of range) is INCONCLUSIVE;
2. a ``failureCondition`` that holds is a FAILURE;
3. a ``successCondition`` that holds is a SUCCESS; one that does not is a FAILURE when no ``failureCondition``
   is given, and INCONCLUSIVE when both are given (the value is in neither band);
4. with only a ``failureCondition`` that does not hold, SUCCESS.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gitsync.analysis.condition import NoData
from gitsync.analysis.run import CheckOutcome, Measurement
from gitsync.analysis.spec import CheckSpec

__all__ = ["extract_json", "judge", "judge_http"]

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def judge(spec: CheckSpec, result: Any, at: float) -> Measurement:
    """The outcome of ``result`` (a list of numbers, or one JSON value) under ``spec``'s conditions."""
    if result is None or (isinstance(result, list) and not result):
        return Measurement(spec.name, CheckOutcome.INCONCLUSIVE, at, result, "no data")
    try:
        if spec.failure_condition is not None and spec.failure_condition.evaluate(result):
            return Measurement(
                spec.name, CheckOutcome.FAILURE, at, result, f"failureCondition {spec.failure_condition}"
            )
        if spec.success_condition is not None:
            if spec.success_condition.evaluate(result):
                return Measurement(spec.name, CheckOutcome.SUCCESS, at, result, "")
            outcome = CheckOutcome.INCONCLUSIVE if spec.failure_condition is not None else CheckOutcome.FAILURE
            return Measurement(spec.name, outcome, at, result, f"successCondition {spec.success_condition} not met")
    except NoData as e:
        return Measurement(spec.name, CheckOutcome.INCONCLUSIVE, at, result, f"no data: {e}")
    return Measurement(spec.name, CheckOutcome.SUCCESS, at, result, "")


def judge_http(spec: CheckSpec, status: int, body: bytes, at: float) -> Measurement:
    """An HTTP response: the status must be expected (default 2xx); then the JSON field, if any, is judged."""
    expected = spec.expected_status
    if (status not in expected) if expected else not 200 <= status < 300:
        want = ",".join(map(str, expected)) or "2xx"
        return Measurement(spec.name, CheckOutcome.FAILURE, at, status, f"HTTP {status}, expected {want}")
    if not spec.json_path:
        if spec.success_condition is None and spec.failure_condition is None:
            return Measurement(spec.name, CheckOutcome.SUCCESS, at, status, "")
        return judge(spec, status, at)
    try:
        document = json.loads(body)
    except ValueError:
        return Measurement(spec.name, CheckOutcome.INCONCLUSIVE, at, None, "response is not JSON")
    try:
        value = extract_json(document, spec.json_path)
    except KeyError as e:
        return Measurement(spec.name, CheckOutcome.INCONCLUSIVE, at, None, f"no data: {e.args[0]}")
    if spec.success_condition is None and spec.failure_condition is None:
        return Measurement(spec.name, CheckOutcome.SUCCESS, at, value, "")
    return judge(spec, value, at)


def extract_json(document: Any, path: str) -> Any:
    """``status``, ``$.data.errorRate`` or ``items[0].ready``; ``KeyError`` naming the path when absent."""
    current = document
    text = path[2:] if path.startswith("$.") else path.lstrip("$")
    for match in _PATH_PART.finditer(text):
        key, index = match[1], match[2]
        if key is not None and isinstance(current, dict) and key in current:
            current = current[key]
        elif index is not None and isinstance(current, list) and int(index) < len(current):
            current = current[int(index)]
        else:
            raise KeyError(f"{path} not found in the response")
    return current
