"""Which notifications a reconcile result amounts to: the ``Notice`` vocabulary and the one table mapping a
``ReconcileResult`` (and the status before it) to notices. Pure, no I/O.

A notice is about a *change*: each row compares the result with ``ReconcileResult.previous`` (the status the
reconcile started from), so a failure retried for an hour, a release re-checked by the drift timer or a canary
waiting between steps says nothing new.

The idempotency key of a notice hashes the app-env, the notice, the revision and digest, and the ``updatedAt`` of the
status before it. The status is written last of all sinks, so a reconcile done again after a kill (or after a failed
status write) starts from the same status and derives the same keys, while the next genuine change (a second drift
repair at the same revision) starts from a newer status and gets a new key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gitsync.history import Result, Status
from gitsync.model import HealthStatus, SyncState
from gitsync.promotion import PromotionAction
from gitsync.result import Kind, ReconcileResult

__all__ = ["Notice", "Notification", "notices"]


class Notice(StrEnum):
    """Every notification gitsync sends; the values are the wire format (``event`` in the body, ``events:`` in
    agent.yaml)."""

    SYNC_FAILED = "sync-failed"
    """A revision could not be deployed (render error, refused signature, apply failure); the last release runs."""
    DRIFT_FOUND = "drift-found"
    """Self-heal is off and the cluster no longer matches Git."""
    DRIFT_HEALED = "drift-healed"
    """Self-heal took back fields someone changed in the cluster."""
    ROLLOUT_STARTED = "rollout-started"
    """A new release did not finish in the reconcile that applied it: a canary or blue-green began, or pods roll."""
    ROLLOUT_PAUSED = "rollout-paused"
    """A rollout waits for a human (``gitsync rollout promote``): a pause step, inconclusive analysis."""
    ROLLOUT_ABORTED = "rollout-aborted"
    """A rollout was rolled back to the stable version (failed analysis, ``gitsync rollout abort``)."""
    SUCCEEDED = "succeeded"
    """A release is deployed and healthy (a new one, or the running one after a failure or a rollout)."""
    PROMOTION_PROPOSED = "promotion-proposed"
    """Pull-request mode: a promotion commit is on its review branch."""
    PROMOTION_MERGED = "promotion-merged"
    """A promotion commit is on the tracked branch (auto mode writes it there directly)."""
    ROLLBACK_WRITTEN = "rollback-written"
    """A commit put the previous verified pin back after a rollout aborted in a pinned environment."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One notice about one app-env, as every receiver gets it (formatted per receiver)."""

    notice: Notice
    key: str
    """The idempotency key: the same for the same change, however often it is derived."""
    app: str
    env: str
    namespace: str
    revision: str
    outcome: str
    message: str
    at: float
    """When the reconcile that found it finished (epoch seconds)."""

    def to_json(self) -> dict[str, str | float]:
        return {
            "event": self.notice.value,
            "key": self.key,
            "app": self.app,
            "env": self.env,
            "namespace": self.namespace,
            "revision": self.revision,
            "outcome": self.outcome,
            "message": self.message,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Notification:
        """Read back what ``to_json`` wrote (the outbox); ``ValueError`` or ``KeyError`` when it is not that."""
        return cls(
            notice=Notice(str(data["event"])),
            key=str(data["key"]),
            app=str(data["app"]),
            env=str(data["env"]),
            namespace=str(data["namespace"]),
            revision=str(data["revision"]),
            outcome=str(data["outcome"]),
            message=str(data["message"]),
            at=float(str(data["at"])),
        )


_ACTIVE = (Result.PROGRESSING.value, Result.PAUSED.value)
_FAILED = (Result.FAILED, Result.RETRYING, Result.RENDER_ERROR, Result.REFUSED)

Row = tuple[Notice, Callable[[ReconcileResult, Status], bool], Callable[[ReconcileResult], str]]


def _release(r: ReconcileResult, outcome: Result) -> bool:
    return r.kind is Kind.RELEASE and r.outcome is outcome


def _new(r: ReconcileResult, before: Status) -> bool:
    """A render that differs from the one running (not a commit that leaves the app as it is)."""
    return r.digest != before.last_applied_digest


def _promotion(r: ReconcileResult, action: PromotionAction) -> bool:
    return r.promotion is not None and r.promotion.written and r.promotion.action is action


def _short(r: ReconcileResult) -> str:
    return r.revision[:12]


def _step(r: ReconcileResult) -> str:
    step = r.promotion
    return f"{step.message}: commit {step.commit[:12]}" if step is not None else ""


def _summary(r: ReconcileResult) -> str:
    return r.sync.summary() if r.sync is not None else ""


TABLE: tuple[Row, ...] = (
    (
        Notice.SYNC_FAILED,
        lambda r, b: (
            r.kind is Kind.FAILED
            and r.outcome in _FAILED
            and (b.result, b.last_attempted_revision) != (str(r.outcome), r.revision)
        ),
        lambda r: f"{_short(r)} failed: {r.error}",
    ),
    (
        Notice.DRIFT_FOUND,
        lambda r, b: (
            r.kind is Kind.DRIFT_CHECKED
            and r.sync is not None
            and r.sync.plan.has_changes
            and b.sync_state != SyncState.OUT_OF_SYNC.value
        ),
        lambda r: f"out of sync with {_short(r)}: {r.sync.plan.summary() if r.sync is not None else ''}",
    ),
    (Notice.DRIFT_HEALED, lambda r, b: r.repaired, lambda r: f"repaired: {_summary(r)}"),
    (
        Notice.ROLLOUT_STARTED,
        lambda r, b: r.kind is Kind.RELEASE and str(r.outcome) in _ACTIVE and (_new(r, b) or b.result not in _ACTIVE),
        lambda r: f"{_short(r)} rolling out: {(r.rollout.message if r.rollout is not None else '') or _summary(r)}",
    ),
    (
        Notice.ROLLOUT_PAUSED,
        lambda r, b: _release(r, Result.PAUSED) and (_new(r, b) or b.result != Result.PAUSED.value),
        lambda r: f"{_short(r)} waits for `gitsync rollout promote`: {r.error}",
    ),
    (
        Notice.ROLLOUT_ABORTED,
        lambda r, b: _release(r, Result.ROLLED_BACK) and (_new(r, b) or b.result != Result.ROLLED_BACK.value),
        lambda r: f"{_short(r)} rolled back: {r.error}",
    ),
    (
        Notice.SUCCEEDED,
        lambda r, b: (
            _release(r, Result.SUCCEEDED)
            and r.health is not None
            and r.health.status is HealthStatus.HEALTHY
            and (b.result, b.health, b.last_applied_digest)
            != (Result.SUCCEEDED.value, HealthStatus.HEALTHY.value, r.digest)
        ),
        lambda r: f"{_short(r)} deployed and healthy: {_summary(r)}",
    ),
    (Notice.PROMOTION_PROPOSED, lambda r, b: _promotion(r, PromotionAction.PROPOSED), _step),
    (Notice.PROMOTION_MERGED, lambda r, b: _promotion(r, PromotionAction.PROMOTED), _step),
    (Notice.ROLLBACK_WRITTEN, lambda r, b: _promotion(r, PromotionAction.ROLLED_BACK), _step),
)
"""The one mapping from a result to notices: (notice, when, what it says). A result can match several rows (a
canary that starts and pauses at its first step)."""


def notices(r: ReconcileResult) -> tuple[Notification, ...]:
    """The notifications ``r`` amounts to; none for a dry run or a key with no namespace (a failed fetch)."""
    if r.dry_run or r.target is None:
        return ()
    before = r.previous or Status(r.key.app, r.key.env)
    return tuple(
        Notification(
            notice=notice,
            key=_key(r, notice, before),
            app=r.key.app,
            env=r.key.env,
            namespace=r.namespace,
            revision=r.revision,
            outcome=str(r.outcome or ""),
            message=" ".join(says(r).split()),
            at=r.finished_at,
        )
        for notice, when, says in TABLE
        if when(r, before)
    )


def _key(r: ReconcileResult, notice: Notice, before: Status) -> str:
    parts = (r.key.app, r.key.env, notice.value, r.revision, r.digest, repr(before.updated_at))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
