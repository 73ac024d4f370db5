"""Kubernetes Events about an app-env: what ``kubectl get events`` and ``kubectl describe`` show operators.

Each event is a core/v1 Event in the environment's namespace whose ``involvedObject`` is the app-env's status
ConfigMap (``gitsync.<app>.<env>.status``), so ``kubectl describe configmap gitsync.podinfo.staging.status`` lists the
sync history of that app. Writing an event never fails a reconcile: errors are logged and dropped (events are
best-effort by design in Kubernetes too). Messages are one line and never carry secret values.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from enum import StrEnum

from gitsync import log as logging
from gitsync.errors import GitsyncError
from gitsync.history import STATUS_PART
from gitsync.model import MANAGER, AppEnv, Json
from gitsync.ports import Clock, Cluster

__all__ = ["EventSink", "EventType", "Reason"]

log = logging.get("gitsync.events")
_MAX_MESSAGE = 1024


class EventType(StrEnum):
    """A Kubernetes Event's ``type``: what ``kubectl get events --field-selector type=Warning`` filters on."""

    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(StrEnum):
    """Every Event reason gitsync writes, the agent's and the rollout executor's: one vocabulary, part of the
    wire format (alerts match on them). Each reason has one ``type``."""

    SYNC_SUCCEEDED = "SyncSucceeded"
    SYNC_FAILED = "SyncFailed"
    RENDER_FAILED = "RenderFailed"
    SIGNATURE_REFUSED = "SignatureRefused"
    DEGRADED = "Degraded"
    RECOVERED = "Recovered"
    DRIFT_DETECTED = "DriftDetected"
    APP_REMOVED = "AppRemoved"
    """The app left its environment's ``env.yaml`` and its objects were pruned."""

    ROLLOUT_STARTED = "RolloutStarted"
    ROLLOUT_PAUSED = "RolloutPaused"
    """Waiting for ``gitsync rollout promote`` (a pause step, inconclusive analysis, blue-green without
    autoPromotion)."""
    ROLLOUT_SWITCHED = "RolloutSwitched"
    """Blue-green: the active Service now selects the new colour."""
    ROLLOUT_COMPLETED = "RolloutCompleted"
    ROLLOUT_SUPERSEDED = "RolloutSuperseded"
    """A new template arrived mid-rollout; the rollout starts again with it."""
    ROLLOUT_ABORTED = "RolloutAborted"
    """Traffic is back on the stable version; the template is not retried until the render changes."""
    ABORT_IGNORED = "AbortIgnored"
    """``gitsync rollout abort`` after the stable Deployment took the new template: revert the commit instead."""
    WEIGHT_NOT_HONOURED = "WeightNotHonoured"
    """Too few replicas to realise a ``setWeight`` exactly."""
    STRATEGY_CHANGED = "StrategyChanged"
    LEFTOVERS_REMOVED = "LeftoversRemoved"
    """The tracks of an earlier strategy were removed once the new workload was Ready."""
    STABLE_COLOURED = "StableColoured"
    """Before the first blue-green rollout, the running version now serves from a colour."""
    COLOURING_SKIPPED = "ColouringSkipped"
    """The running version's copy failed, so the first blue-green rollout starts without it."""

    PROMOTED = "Promoted"
    """A promotion commit pinned an upstream release in this environment (or opened its review branch)."""
    PROMOTION_BLOCKED = "PromotionBlocked"
    """The pin is not verified by the upstream environment's ledger: nothing of it is applied."""
    PROMOTION_FAILED = "PromotionFailed"
    """A promotion or rollback commit could not be written (no write access, the remote refused it)."""
    ROLLBACK_WRITTEN = "RollbackWritten"
    """A commit put the previous verified pin back after the rollout aborted."""

    @property
    def type(self) -> EventType:
        return EventType.WARNING if self in _WARNINGS else EventType.NORMAL


_WARNINGS = frozenset(
    {
        Reason.SYNC_FAILED,
        Reason.RENDER_FAILED,
        Reason.SIGNATURE_REFUSED,
        Reason.DEGRADED,
        Reason.DRIFT_DETECTED,
        Reason.ROLLOUT_ABORTED,
        Reason.ABORT_IGNORED,
        Reason.WEIGHT_NOT_HONOURED,
        Reason.COLOURING_SKIPPED,
        Reason.PROMOTION_BLOCKED,
        Reason.PROMOTION_FAILED,
    }
)


class EventSink:
    def __init__(self, cluster: Cluster, clock: Clock, instance: str = "") -> None:
        self._cluster = cluster
        self._clock = clock
        self._instance = instance
        self._counter = itertools.count()

    def emit(self, key: AppEnv, namespace: str, reason: Reason, message: str) -> None:
        """Record one event about ``key`` (best effort)."""
        try:
            self._cluster.apply(self.event(key, namespace, reason, message))
        except GitsyncError as e:
            log.warning("event.failed", app=key.app, env=key.env, reason=str(reason), error=str(e))

    def event(self, key: AppEnv, namespace: str, reason: Reason, message: str) -> Json:
        now = self._clock.now()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Unique per event (time in ns plus a counter): events are records, not state to update.
        name = f"{MANAGER}-{key.app}.{int(now * 1e9):x}{next(self._counter):x}"
        text = " ".join(message.split())
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": key.state_name(STATUS_PART),
                "namespace": namespace,
            },
            "reason": str(reason),
            "message": f"{key}: {text}"[:_MAX_MESSAGE],
            "type": reason.type.value,
            "source": {"component": MANAGER},
            "reportingComponent": MANAGER,
            "reportingInstance": self._instance or MANAGER,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
