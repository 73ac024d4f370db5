"""Pod health of a release's new version: the fail-fast gate that needs no metrics system.

Contract: pure, no I/O (pods and the Deployment are passed in, ``now`` too). A pod crash-looping, failing to
pull its image, restarting more than ``max_restarts`` times, or not Ready ``progress_deadline`` seconds after it
was created fails the release now, with the pod and reason as evidence; none of the anchors (Argo Rollouts,
Flagger) look at pods and they wait up to the progress deadline instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gitsync.analysis.run import CheckOutcome, Measurement
from gitsync.analysis.spec import PodHealthPolicy
from gitsync.health import POD_FAILURE_REASONS, pod_ready
from gitsync.model import Json, ObjectId

__all__ = ["PodReport", "inspect_pods"]


@dataclass(frozen=True, slots=True)
class PodReport:
    """What the new version's pods show: counts, and one evidence line per failing pod (empty: none failing)."""

    total: int = 0
    ready: int = 0
    failing: tuple[str, ...] = ()

    @property
    def outcome(self) -> CheckOutcome:
        if self.failing:
            return CheckOutcome.FAILURE
        return CheckOutcome.SUCCESS if self.total and self.ready >= self.total else CheckOutcome.PENDING

    def measurement(self, check: str, at: float) -> Measurement:
        value = {"ready": self.ready, "total": self.total}
        return Measurement(check, self.outcome, at, value, "; ".join(self.failing))


def inspect_pods(
    pods: Iterable[Json], policy: PodHealthPolicy, now: float, deployment: Json | None = None
) -> PodReport:
    total = ready = 0
    failing: list[str] = []
    for condition in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if condition.get("reason") == "ProgressDeadlineExceeded":
            failing.append(f"{ObjectId.of(deployment or {})}: ProgressDeadlineExceeded: {condition.get('message', '')}")
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        total += 1
        status = pod.get("status") or {}
        is_ready = pod_ready(pod)
        ready += is_ready
        reason = _failure(status, policy)
        if reason is None and not is_ready:
            age = now - _timestamp(str(meta.get("creationTimestamp", "")), now)
            if age > policy.progress_deadline:
                reason = f"not Ready {age:.0f}s after creation (deadline {policy.progress_deadline:g}s)"
        if reason is not None:
            failing.append(f"{ObjectId.of(pod)}: {reason}")
    return PodReport(total, ready, tuple(failing))


def _failure(status: Json, policy: PodHealthPolicy) -> str | None:
    if status.get("phase") == "Failed":
        return f"pod Failed: {status.get('reason', '')}".rstrip(": ")
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        restarts = int(container.get("restartCount") or 0)
        if waiting.get("reason") in POD_FAILURE_REASONS:
            return f"container {container.get('name')}: {waiting['reason']} (restarts {restarts})"
        if restarts > policy.max_restarts:
            return f"container {container.get('name')}: {restarts} restarts (limit {policy.max_restarts})"
    return None


def _timestamp(text: str, default: float) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
